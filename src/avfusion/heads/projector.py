"""Contrastive projectors and the InfoNCE objective of Zorro's self-supervised training.

One projector per output type (audio, video, fusion: three projectors, as in the Zorro
paper); each maps a (B, D) readout feature to a unit-norm (B, P) embedding. InfoNCE between two
outputs treats the same clip as the positive and the rest of the (global) batch as negatives,
symmetrised over both directions; the temperature defaults to Zorro's 0.08.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from avfusion.errors import ConfigError, InputError
from avfusion.layers.linear import Linear


class Projector(nn.Module):
    """Linear (hidden=0) or MLP (Linear -> BN-free GELU -> Linear) projection, L2-normalised output."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 0):
        super().__init__()
        if hidden:
            self.net: nn.Module = nn.Sequential(Linear(dim, hidden), nn.GELU(), Linear(hidden, out_dim))
        else:
            self.net = Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)  # (B, P)


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' embeddings concatenated (gradients flow back to this rank's part)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between unit-norm embeddings a, b (B, P) of the same clips, in order."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    all_a, all_b = _gather_with_grad(a), _gather_with_grad(b)  # (B * world, P)
    labels = torch.arange(a.shape[0], device=a.device) + rank * a.shape[0]
    logits_ab = a @ all_b.t() / temperature  # (B, B * world)
    logits_ba = b @ all_a.t() / temperature
    return (F.cross_entropy(logits_ab.float(), labels) + F.cross_entropy(logits_ba.float(), labels)) / 2


class ContrastiveHead(nn.Module):
    """Projectors for the contrasted outputs and the mean InfoNCE over the configured pairs."""

    def __init__(self, dim: int, pairs: Sequence[Sequence[str]], out_dim: int = 512, hidden: int = 2048,
                 temperature: float = 0.08, outputs: Sequence[str] = ("audio", "video", "fusion")):
        super().__init__()
        self.pairs = [tuple(p) for p in pairs]
        for p in self.pairs:
            if len(p) != 2 or p[0] == p[1] or not set(p) <= set(outputs):
                raise ConfigError(f"contrastive pair {list(p)} must name two different outputs of {list(outputs)}")
        used = sorted({o for p in self.pairs for o in p})
        self.proj = nn.ModuleDict({o: Projector(dim, out_dim, hidden) for o in used})
        self.temperature = temperature

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """features: output -> (B, D) -> {"a-b": loss per pair}."""
        missing = [o for o in self.proj if o not in features]
        if missing:
            raise InputError(f"contrastive training needs outputs {missing}, which the model did not produce "
                             "(does every clip have both modalities?)")
        z = {o: self.proj[o](features[o]) for o in self.proj}
        return {f"{a}-{b}": info_nce(z[a], z[b], self.temperature) for a, b in self.pairs}
