"""The training task: model (+ contrastive projectors) + loss -> dict of tensors.

Batches are dicts (DESIGN.md section 4, avfusion.data.datasets.collate): ``video`` (B, 3, T, H,
W), ``audio`` (B, T_a, F), ``label``, and per-sample presence flags ``has_audio`` /
``has_video`` (B,) bool. A batch whose samples do not all have the same modalities is split by
presence and each group runs through the model with only its real inputs (the missing-modality
path), so a missing stream is never stood in for by the zeros in its slot. Group losses are
weighted by group size.
"""

from __future__ import annotations

import torch
from torch import nn

from avfusion.data.datasets import split_by_presence
from avfusion.heads.projector import ContrastiveHead
from avfusion.core.base import ModelOutput
from avfusion.core.config import MODALITIES
from avfusion.train.losses import aggregation_for, classification_loss, combine


def stack_heads(target: torch.Tensor | dict | None, splits: dict[str, int] | None) -> torch.Tensor | None:
    """Multi-head labels {head: (B,)} -> (B, n_heads) in the model's class-split order."""
    if not isinstance(target, dict):
        return target
    if splits is None:
        raise ValueError("multi-head labels need a model with class_splits")
    missing = [h for h in splits if h not in target]
    if missing:
        raise ValueError(f"labels lack head(s) {missing}; the model's heads are {list(splits)}")
    return torch.stack([target[h] for h in splits], dim=1)


class Task(nn.Module):
    """Wraps the model (and projectors) so one module returns the loss dict (DDP-friendly).

    mode "supervised": classification loss per output, combined by the family's rule.
    mode "contrastive": Zorro's InfoNCE between projected outputs (labels unused).
    """

    def __init__(self, model: nn.Module, mode: str, task: str, label_smoothing: float = 0.0,
                 aggregation: str = "auto", weights: dict[str, float] | None = None,
                 contrastive: ContrastiveHead | None = None):
        super().__init__()
        if mode not in ("supervised", "contrastive"):
            raise ValueError(f"mode must be supervised or contrastive, got {mode!r}")
        if mode == "contrastive" and contrastive is None:
            raise ValueError("contrastive mode needs a ContrastiveHead")
        self.model, self.mode, self.task = model, mode, task
        self.label_smoothing = label_smoothing
        self.aggregation = aggregation_for(model.cfg.family, aggregation)
        self.weights = weights or {}
        self.contrastive = contrastive

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        B = next(len(batch[m]) for m in MODALITIES if batch.get(m) is not None)
        for idx, sub in split_by_presence(batch):
            out: ModelOutput = self.model({m: sub[m] for m in MODALITIES if m in sub})
            terms = self._terms(out, stack_heads(sub.get("label"), self.model.cfg.class_splits))
            for name, value in terms.items():
                parts[name] = parts.get(name, 0.0) + value * (len(idx) / B)
        how = "mean" if self.mode == "contrastive" else self.aggregation
        total = combine(parts, how, self.weights)
        return {"loss": total, **{f"loss_{k}": v.detach() for k, v in parts.items()}}

    def _terms(self, out: ModelOutput, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if self.mode == "contrastive":
            return self.contrastive(out.features)
        if target is None:
            raise ValueError("supervised training needs 'label' in the batch")
        splits = self.model.cfg.class_splits
        return {name: classification_loss(logits, target, self.task, self.label_smoothing, splits)
                for name, logits in out.outputs.items()}
