"""A tiny separable audio-visual dataset for training tests (no files, no decoding)."""

from __future__ import annotations

import os
import time

import torch
from torch.utils.data import Dataset


class SyntheticAV(Dataset):
    """Class c shifts every video pixel and every log-mel value by (c - (C - 1) / 2), plus noise.

    The signal is in every token's content (not only in positions), so a tiny transformer trained
    from scratch separates the classes within a few dozen steps.

    Augmentation noise is drawn from the global RNG inside __getitem__, so the resume tests also
    cover per-sample RNG seeding. ``AVF_TEST_SLOW`` (seconds) slows each sample down.
    """

    def __init__(self, n: int = 48, num_classes: int = 4, frames: int = 8, size: int = 32,
                 spec: tuple[int, int] = (96, 32), seed: int = 0, task: str = "single"):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.n, self.C, self.frames, self.size, self.spec, self.task = n, num_classes, frames, size, spec, task

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        delay = float(os.environ.get("AVF_TEST_SLOW", "0"))
        if delay:
            time.sleep(delay)
        c = int(self.labels[i])
        shift = c - (self.C - 1) / 2
        video = torch.randn(3, self.frames, self.size, self.size) * 0.5 + shift
        audio = torch.randn(*self.spec) * 0.5 + shift
        label = torch.tensor(c) if self.task == "single" else torch.nn.functional.one_hot(torch.tensor(c), self.C).float()
        return {"video": video, "audio": audio, "label": label, "id": f"clip{i}"}


def collate(samples: list[dict]) -> dict:
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "audio": torch.stack([s["audio"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
        "id": [s["id"] for s in samples],
    }
