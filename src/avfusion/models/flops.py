"""Parameter and FLOP counts of one forward pass.

Convention (ViViT / MBT): one multiply-add = one FLOP, i.e. XLA's cost analysis divided by 2.
We count the matmuls and convolutions (torch's FlopCounterMode, which counts 2 per multiply-add,
halved), on a model built on the meta device so no memory or compute is spent. XLA also counts
elementwise work (softmax, LayerNorm, GELU, residual adds); leaving it out puts our numbers
about 1% under the official ones (benchmarks/README.md has the comparison).

The count follows the model's ``attn_impl``: with ``'auto'`` masked blocks are skipped and not
counted, with ``'dense'`` every query-key pair is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from avfusion.core.config import ModelConfig
from avfusion.models.registry import build_model, get_model_config


@dataclass
class FlopReport:
    name: str
    params: int
    gflops: float  # multiply-adds, 1e9
    inputs: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.name, "params": self.params, "gflops": round(self.gflops, 3),
                "inputs": self.inputs}


def count_flops(cfg: ModelConfig | str, modalities: tuple[str, ...] = ("audio", "video"),
                **overrides: Any) -> FlopReport:
    """Count parameters and GFLOPs (multiply-adds) of one forward pass at batch size 1."""
    if isinstance(cfg, str):
        cfg = get_model_config(cfg, **overrides)
    elif overrides:
        cfg = cfg.replace(**overrides)
    with torch.device("meta"):
        model = build_model(cfg).eval()
        inputs = {k: v for k, v in model.example_inputs(1, device="meta").items() if k in modalities}
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    total = counter.get_total_flops() / 2 / 1e9
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    return FlopReport(cfg.name, params, total, shapes)
