"""Shared fixtures for the conversion tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# Official scenic MBT outputs on random weights (tests/fixtures/scenic_mbt/README.md says how they were made).
SCENIC_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scenic_mbt"


@pytest.fixture(scope="session")
def scenic_fixture() -> Path:
    """The official MBT fixture directory (bottleneck_lf1), shipped with the tests."""
    d = SCENIC_FIXTURES / "bottleneck_lf1"
    assert (d / "checkpoint.msgpack").is_file() and (d / "io.npz").is_file(), f"fixture missing: {d}"
    return d
