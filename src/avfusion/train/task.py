"""The training task: model (+ contrastive projectors) + loss -> dict of tensors.

Batches are dicts (DESIGN.md section 4): ``video`` (B, 3, T, H, W), ``audio`` (B, T_a, F),
``label``, and optional per-sample presence flags ``has_audio`` / ``has_video`` (B,) bool. A
batch whose samples do not all have the same modalities is split into groups by presence and
each group runs through the model with only its real inputs (the missing-modality path), so a
missing stream is never stood in for by zeros. Group losses are weighted by group size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avfusion.heads.projector import ContrastiveHead
from avfusion.models.base import ModelOutput
from avfusion.models.config import MODALITIES
from avfusion.train.losses import aggregation_for, classification_loss, combine


@dataclass
class Group:
    index: torch.Tensor  # (n,) rows of the batch
    inputs: dict[str, torch.Tensor]


def presence_groups(batch: dict) -> list[Group]:
    """Split a batch into groups of rows with the same modalities present."""
    given = [m for m in MODALITIES if batch.get(m) is not None]
    if not given:
        raise ValueError("batch holds neither audio nor video")
    B = batch[given[0]].shape[0]
    device = batch[given[0]].device
    flags = []
    for m in MODALITIES:
        f = batch.get(f"has_{m}")
        if m not in given:
            f = torch.zeros(B, dtype=torch.bool, device=device)
        elif f is None:
            f = torch.ones(B, dtype=torch.bool, device=device)
        flags.append(torch.as_tensor(f, dtype=torch.bool, device=device))
    pattern = torch.stack(flags, dim=1)  # (B, 2)
    if pattern.all(dim=1).all() or (pattern == pattern[0]).all():
        present = [m for m, on in zip(MODALITIES, pattern[0].tolist()) if on]
        if not present:
            raise ValueError("no sample in the batch has any modality present")
        return [Group(torch.arange(B, device=device), {m: batch[m] for m in present})]
    groups = []
    for p in torch.unique(pattern, dim=0):
        if not p.any():
            raise ValueError("a sample in the batch has neither audio nor video present")
        idx = (pattern == p).all(dim=1).nonzero().flatten()
        groups.append(Group(idx, {m: batch[m][idx] for m, on in zip(MODALITIES, p.tolist()) if on}))
    return groups


def select_rows(target: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if target is None else target[idx]


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
        groups = presence_groups(batch)
        B = sum(len(g.index) for g in groups)
        parts: dict[str, torch.Tensor] = {}
        for g in groups:
            out: ModelOutput = self.model(g.inputs)
            terms = self._terms(out, select_rows(batch.get("label"), g.index))
            for name, value in terms.items():
                parts[name] = parts.get(name, 0.0) + value * (len(g.index) / B)
        how = "mean" if self.mode == "contrastive" else self.aggregation
        total = combine({k: v for k, v in parts.items()}, how, self.weights)
        return {"loss": total, **{f"loss_{k}": v.detach() for k, v in parts.items()}}

    def _terms(self, out: ModelOutput, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        if self.mode == "contrastive":
            return self.contrastive(out.features)
        if target is None:
            raise ValueError("supervised training needs 'label' in the batch")
        splits = self.model.cfg.class_splits
        return {name: classification_loss(logits, target, self.task, self.label_smoothing, splits)
                for name, logits in out.outputs.items()}
