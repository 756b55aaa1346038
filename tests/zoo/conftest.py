"""Fixtures for the zoo tests: an isolated cache, a local server and a small release in scenic's layout.

Every test runs with AVFUSION_HOME in its own tmp folder, no mirror / offline setting inherited from
the environment, and HTTP(S) proxies bypassed for 127.0.0.1: nothing here contacts any other address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from avfusion.zoo import register_pretrained, unregister_pretrained
from helpers.http_server import FileServer, serve_files
from helpers.scenic_mbt_reference import random_mbt_params, to_flax_msgpack, train_state
from helpers.zoo_release import GEOMETRY, Release, tiny_cfg


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "avfusion_home"
    monkeypatch.setenv("AVFUSION_HOME", str(home))
    for var in ("AVFUSION_OFFLINE", "AVFUSION_ZOO_URL", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


@pytest.fixture(scope="session")
def checkpoint_bytes() -> bytes:
    params = random_mbt_params(np.random.default_rng(25), **GEOMETRY)
    return to_flax_msgpack(train_state(params))


@pytest.fixture
def server() -> Iterator[FileServer]:
    with serve_files() as srv:
        yield srv


@pytest.fixture
def release(server: FileServer, checkpoint_bytes: bytes) -> Iterator[Release]:
    """The small release registered in the zoo, served under /official/ (the entry's own base URL)."""
    cfg = register_pretrained(tiny_cfg(server.url("/official")), replace=True)
    rel = Release(cfg, checkpoint_bytes, server)
    server.files[rel.path] = checkpoint_bytes
    yield rel
    unregister_pretrained(cfg.name)
