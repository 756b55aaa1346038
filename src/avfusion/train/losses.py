"""Classification losses per output and their aggregation.

- multilabel (AudioSet): sigmoid binary cross-entropy;
- single (VGGSound, Kinetics-Sounds): softmax cross-entropy;
- multihead (EPIC-KITCHENS verb + noun): softmax cross-entropy per named class split, averaged
  over the splits (scenic's MBTMultiHeadClassificationModel).

Targets are either hard (multilabel: multi-hot float (B, C); single: int (B,); multihead: int
(B, n_heads) in split order) or soft (float (B, C_total) after mixup; for multihead the
concatenated per-split distributions).

Label smoothing follows scenic: ``target * (1 - eps) + eps / C`` for every task (for multilabel
this is applied to each binary target with C = number of classes).

Aggregation over outputs: MBT averages its per-modality losses; Zorro sums its four outputs'
losses. ``aggregation='auto'`` picks that by model family; weights scale individual outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def to_soft_targets(target: torch.Tensor, task: str, num_classes: int,
                    class_splits: Mapping[str, int] | None = None) -> torch.Tensor:
    """Hard targets -> float (B, C_total) distributions / multi-hot (soft targets pass through)."""
    if target.is_floating_point():
        if target.ndim != 2 or target.shape[1] != num_classes:
            raise ValueError(f"soft targets must be (B, {num_classes}), got {tuple(target.shape)}")
        return target
    if task == "single":
        return F.one_hot(target.long(), num_classes).float()
    if task == "multihead":
        if class_splits is None:
            raise ValueError("multihead targets need class_splits")
        if target.ndim != 2 or target.shape[1] != len(class_splits):
            raise ValueError(f"multihead targets must be (B, {len(class_splits)}) ints, got {tuple(target.shape)}")
        parts = [F.one_hot(target[:, i].long(), n).float() for i, n in enumerate(class_splits.values())]
        return torch.cat(parts, dim=1)
    raise ValueError(f"multilabel targets must be float multi-hot (B, {num_classes})")


def classification_loss(logits: torch.Tensor, target: torch.Tensor, task: str, label_smoothing: float = 0.0,
                        class_splits: Mapping[str, int] | None = None) -> torch.Tensor:
    """Mean loss over the batch for one output's logits (B, C)."""
    logits = logits.float()
    C = logits.shape[1]
    soft = to_soft_targets(target, task, C, class_splits)
    if task == "multilabel":
        if label_smoothing:
            soft = soft * (1 - label_smoothing) + label_smoothing / C
        return F.binary_cross_entropy_with_logits(logits, soft, reduction="none").sum(1).mean()
    splits = list(class_splits.values()) if task == "multihead" else [C]
    losses = []
    for lg, tg in zip(logits.split(splits, dim=1), soft.split(splits, dim=1)):
        if label_smoothing:
            tg = tg * (1 - label_smoothing) + label_smoothing / lg.shape[1]
        losses.append(-(tg * lg.log_softmax(dim=1)).sum(1).mean())
    return torch.stack(losses).mean()


def aggregation_for(family: str, aggregation: str) -> str:
    """'auto' -> the paper's rule: MBT-style models average heads, Zorro-style models sum outputs."""
    if aggregation != "auto":
        return aggregation
    return "mean" if family == "streams" else "sum"


def combine(losses: Mapping[str, torch.Tensor], how: str, weights: Mapping[str, float] | None = None) -> torch.Tensor:
    weights = weights or {}
    terms = [loss * weights.get(name, 1.0) for name, loss in losses.items()]
    total = torch.stack(terms).sum()
    return total / len(terms) if how == "mean" else total
