"""Shared fixtures for the conversion tests."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
# In CI the repository's parent directory holds `shared/` (DESIGN.md: ../shared/fixtures/...).
SCENIC_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "scenic_mbt"


@pytest.fixture(scope="session")
def scenic_fixture() -> Path:
    """The official MBT fixture directory (bottleneck_lf1); skipped only if truly absent."""
    d = SCENIC_FIXTURES / "bottleneck_lf1"
    if not (d / "checkpoint.msgpack").is_file() or not (d / "io.npz").is_file():
        pytest.skip(f"official scenic MBT fixture not found at {d} (expected ../shared/fixtures relative to the repo)")
    return d
