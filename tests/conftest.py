"""Shared test fixtures.

tests/ is on sys.path (``pythonpath = ["tests"]`` in pyproject.toml), so test-side helpers are
imported as ``from helpers.media import make_media``; see tests/helpers/__init__.py.
"""

from __future__ import annotations

import pytest
import torch

# The generated media corpus (fixtures corpus, small_cfg, bigbuckbunny) for tests/data and tests/cli.
pytest_plugins = ["helpers.media_corpus"]


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
