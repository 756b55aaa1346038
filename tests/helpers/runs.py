"""A finished training run's weights, and the check that two runs ended with the same ones."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    """The weights a run folder ended with (OUT/model.safetensors)."""
    return load_file(str(out / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit for bit: the same tensor names and equal values (named on failure)."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
