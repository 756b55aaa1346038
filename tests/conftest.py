"""Shared test fixtures.

tests/ is on sys.path (``pythonpath = ["tests"]`` in pyproject.toml), so test-side helpers are
imported as ``from helpers.media import make_media``; see tests/helpers/__init__.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from avfusion.layers.gemm_tune import TUNER

# The generated media corpus (fixtures corpus, small_cfg, bigbuckbunny) for tests/data and tests/cli.
pytest_plugins = ["helpers.media_corpus"]


@pytest.fixture(scope="session", autouse=True)
def _avfusion_home(tmp_path_factory: pytest.TempPathFactory):
    """The linear-product choices that tests measure (avfusion.layers.gemm_tune) go to a folder of
    this session, never into the user's ~/.cache; subprocesses inherit it through the environment."""
    home = tmp_path_factory.mktemp("avfusion_home")
    previous = os.environ.get("AVFUSION_HOME")
    os.environ["AVFUSION_HOME"] = str(home)
    TUNER.reset()
    yield home
    if previous is None:
        os.environ.pop("AVFUSION_HOME", None)
    else:
        os.environ["AVFUSION_HOME"] = previous
    TUNER.reset()


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Replace every parameter with random values, so no zero-initialised head or token hides a bug."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture
def randomize():
    return randomize_
