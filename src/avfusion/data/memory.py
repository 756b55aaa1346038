"""Decoded clips held in memory: for small data sets read many times (the demo, probes).

``materialize`` runs an evaluation-mode dataset (files or shards) once, one view per clip, and
keeps the normalised tensors; :class:`MemoryClips` serves them as samples with cheap tensor
augmentation (random crop, SpecAugment) for training, or a centre crop for evaluation. A clip
without an audio (video) stream keeps ``has_audio`` (``has_video``) False and a zero slot that
the flag marks absent, exactly as ``collate`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from avfusion.data.audio import spec_augment
from avfusion.data.datasets import collate


@dataclass
class Materialized:
    video: torch.Tensor | None  # (N, 3, T, H, W) float16, normalised
    audio: torch.Tensor | None  # (N, T_a, F) float32, normalised log-mel
    has_video: torch.Tensor  # (N,) bool
    has_audio: torch.Tensor  # (N,) bool
    labels: torch.Tensor  # (N,) int or (N, C) multi-hot
    ids: list[str]


def materialize(dataset: Dataset, batch_size: int = 32, num_workers: int = 0) -> Materialized:
    """Decode every sample of an evaluation-mode dataset once and keep its first view."""
    vs, as_, hv, ha, ys, ids = [], [], [], [], [], []
    for b in DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers):
        hv.append(b["has_video"])
        ha.append(b["has_audio"])
        vs.append(b["video"][:, 0].half() if "video" in b else None)  # (n, 3, T, H, W): view 0
        as_.append(b["audio"][:, 0] if "audio" in b else None)
        ys.append(b["label"])
        ids += b["id"]

    def cat(parts: list) -> torch.Tensor | None:
        """Batches without a modality had no slot for it: give them the zero slot collate gives."""
        if all(p is None for p in parts):
            return None
        ref = next(p for p in parts if p is not None)
        return torch.cat([p if p is not None else torch.zeros(len(h), *ref.shape[1:], dtype=ref.dtype)
                          for p, h in zip(parts, hv)])

    return Materialized(cat(vs), cat(as_), torch.cat(hv), torch.cat(ha), torch.cat(ys), ids)


class MemoryClips(Dataset):
    """Samples from a :class:`Materialized` set.

    train: a random ``crop`` of the stored frames and SpecAugment masks (drawn from the global
    RNG, which the training loop seeds per sample); eval: the centre crop, as one view
    (``video`` (1, 3, T, h, w), ``audio`` (1, T_a, F)) for the evaluation protocol.
    """

    def __init__(self, data: Materialized, crop: tuple[int, int], train: bool, freq_mask: int = 0,
                 time_mask: int = 0, num_masks: int = 1):
        self.d, self.crop, self.train = data, tuple(crop), train
        self.freq_mask, self.time_mask, self.num_masks = freq_mask, time_mask, num_masks

    def __len__(self) -> int:
        return len(self.d.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        d = self.d
        out: dict[str, Any] = {"id": d.ids[i], "label": d.labels[i], "has_video": bool(d.has_video[i]),
                               "has_audio": bool(d.has_audio[i])}
        if d.video is not None and out["has_video"]:
            v = d.video[i]  # (3, T, H, W)
            H, W = v.shape[-2:]
            h, w = self.crop
            if self.train:
                top, left = (int(torch.randint(0, n - c + 1, ())) for n, c in ((H, h), (W, w)))
            else:
                top, left = (H - h) // 2, (W - w) // 2
            v = v[..., top:top + h, left:left + w].float()
            out["video"] = v if self.train else v[None]
        if d.audio is not None and out["has_audio"]:
            a = d.audio[i]
            if self.train and (self.freq_mask or self.time_mask):
                a = spec_augment(a[None], self.freq_mask, self.time_mask, self.num_masks, self.num_masks, 0.0)[0]
            out["audio"] = a if self.train else a[None]
        return out
