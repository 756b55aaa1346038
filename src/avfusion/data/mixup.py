"""Mixup for audio-visual batches: one lambda per batch shared by both modalities, labels mixed.

Each sample is mixed with a permutation partner. A modality is mixed only where both samples of
the pair really have it; otherwise the slot keeps its own tensor (zeros stay zeros and the
presence flags are unchanged), so no content is invented. Labels always mix with lambda.
"""

from __future__ import annotations

from typing import Any

import torch


def mixup(batch: dict[str, Any], alpha: float = 0.5, num_classes: int | None = None,
          generator: torch.Generator | None = None) -> dict[str, Any]:
    """Return a mixed copy of ``batch`` (``mixup_lambda`` and ``mixup_perm`` added).

    Labels: multi-hot (B, C) floats are mixed directly; int labels need ``num_classes`` and
    become mixed one-hot (B, C); multi-head dict labels are not supported (raise)."""
    if alpha <= 0:
        return batch
    lam = sample_beta(alpha, generator)
    B = len(batch["id"])
    perm = torch.randperm(B, generator=generator)
    out = dict(batch)
    for mod in ("video", "audio"):
        if mod not in batch:
            continue
        x = batch[mod]
        has = batch.get(f"has_{mod}", torch.ones(B, dtype=torch.bool)).to(x.device)
        both = (has & has[perm]).view(B, *([1] * (x.dim() - 1)))
        mixed = lam * x + (1 - lam) * x[perm]
        out[mod] = torch.where(both, mixed, x)  # (B, ...): mixed only where both are real
    y = batch["label"]
    if isinstance(y, dict):
        raise ValueError("mixup of multi-head (dict) labels is not supported")
    if y.dtype in (torch.int64, torch.int32):
        if num_classes is None:
            raise ValueError("mixup of int labels needs num_classes")
        y = torch.nn.functional.one_hot(y, num_classes).float()
    out["label"] = lam * y + (1 - lam) * y[perm]
    out["mixup_lambda"] = lam
    out["mixup_perm"] = perm
    return out


def sample_beta(alpha: float, generator: torch.Generator | None = None) -> float:
    """Beta(alpha, alpha) drawn with ``generator`` (torch.distributions takes none): Johnk's
    method (exact for any alpha; fast for the usual alpha <= 1)."""
    while True:
        u, v = torch.rand(2, generator=generator).tolist()
        x, y = u ** (1 / alpha), v ** (1 / alpha)
        if 0 < x + y <= 1:
            return x / (x + y)
