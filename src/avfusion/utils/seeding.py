"""Seeds derived from integers, the same in every process and run (data order, augmentation)."""

from __future__ import annotations

import random

import numpy as np
import torch


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix-style), stable across processes and runs."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x ^= (int(p) + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return x & 0x7FFFFFFFFFFFFFFF


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's CPU global generators (a sample's augmentation draws,
    which run on the CPU). Not ``torch.manual_seed``: before CUDA is initialised it queues a
    CUDA seeding with a formatted stack trace on every call (~3 ms, and a queue that grows with
    every sample of a run)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
