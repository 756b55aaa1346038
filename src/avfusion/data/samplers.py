"""Balanced sampling for AudioSet-like multi-label sets, distributed-aware.

Per-label weight 1 / (count + 0.01) (rare labels drawn as often as frequent ones, as in the
PANNs / AST balanced-sampling recipe); a sample's weight is the sum over its labels. Every rank
draws the same global sequence (seeded by seed + epoch) and keeps its stride of it, so ranks see
disjoint positions of one shared draw.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from avfusion.data.manifest import LabelMap, Row


def label_weights(label_matrix: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """(N, C) multi-hot -> (N,) sample weights: sum of 1 / (count_c + eps) over its labels."""
    counts = label_matrix.sum(0)  # (C,)
    per_label = 1.0 / (counts + eps)
    return (label_matrix * per_label[None, :]).sum(1)


def rows_label_matrix(rows: Sequence[Row], labels: LabelMap) -> torch.Tensor:
    """(N, C) multi-hot of the rows' labels (unknown labels raise)."""
    m = torch.zeros(len(rows), labels.num_classes)
    for i, r in enumerate(rows):
        for lab in r.labels:
            m[i, labels.lookup(lab).index] = 1.0
    return m


class DistributedWeightedSampler(Sampler[int]):
    """Weighted sampling with replacement, split across ranks.

    ``num_samples`` per epoch in total (default: dataset size), rounded up to a multiple of the
    world size; rank r yields positions r, r + world, ... of the shared draw."""

    def __init__(self, weights: torch.Tensor, num_samples: int | None = None, rank: int | None = None,
                 world_size: int | None = None, seed: int = 0) -> None:
        if (weights < 0).any() or not weights.sum() > 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        if rank is None or world_size is None:
            dist = torch.distributed
            init = dist.is_available() and dist.is_initialized()
            rank = rank if rank is not None else (dist.get_rank() if init else 0)
            world_size = world_size if world_size is not None else (dist.get_world_size() if init else 1)
        self.weights = weights.double()
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        total = num_samples if num_samples is not None else len(weights)
        self.total = -(-total // world_size) * world_size
        self.num_samples = self.total // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.total, replacement=True, generator=g)
        return iter(idx[self.rank :: self.world_size].tolist())


def balanced_sampler(rows: Sequence[Row], labels: LabelMap, **kw: object) -> DistributedWeightedSampler:
    """The AudioSet balanced sampler for a manifest."""
    return DistributedWeightedSampler(label_weights(rows_label_matrix(rows, labels)), **kw)  # type: ignore[arg-type]
