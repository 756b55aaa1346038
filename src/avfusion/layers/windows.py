"""Window geometry of Swin-style attention on token grids of any rank (video (T', H', W'),
spectrogram (T', F')): window clamping, partition and its inverse, window ids for (shifted)
windows, and the grids of a hierarchy of stages with 2 x 2 patch merging.

Pure functions of sizes and tensors: the Zorro-Swin backbone uses them, and ModelConfig uses
:func:`stage_grids` to refuse a configuration whose grids cannot be windowed or merged before
anything is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import torch

Grid = tuple[int, ...]
K = TypeVar("K")


def clamp_window(grid: Grid, window: Grid, shifted: bool) -> tuple[Grid, Grid]:
    """Per axis, as Video Swin: a window no larger than the grid, and no shift where it covers it."""
    win = tuple(min(w, g) for w, g in zip(window, grid, strict=True))
    shift = tuple(w // 2 if shifted and g > w else 0 for w, g in zip(window, grid, strict=True))
    return win, shift


def stage_grids(grids: Mapping[K, Grid], windows: Mapping[K, Grid], num_stages: int) -> list[dict[K, Grid]]:
    """Each group's token grid at every stage: stage s > 0 merges 2 x 2 on the last two axes.

    Raises ValueError naming the group, stage, grid and window when a merged axis is odd or a
    grid is not divisible by its (clamped) window.
    """
    out: list[dict[K, Grid]] = []
    current = {k: tuple(g) for k, g in grids.items()}
    for s in range(num_stages):
        if s > 0:
            for k, g in current.items():
                if g[-1] % 2 or g[-2] % 2:
                    raise ValueError(f"{_label(k)} grid {g} before stage {s} has an odd merged axis; "
                                     "patch merging needs even sizes")
            current = {k: (*g[:-2], g[-2] // 2, g[-1] // 2) for k, g in current.items()}
        for k, g in current.items():
            win, _ = clamp_window(g, windows[k], False)
            if any(a % w for a, w in zip(g, win)):
                raise ValueError(f"{_label(k)} grid {g} at stage {s} is not divisible by its window {win}")
        out.append(current)
    return out


def _label(key: object) -> str:
    return getattr(key, "name", str(key)).lower()


def window_partition(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """(B, *grid, C) -> (B * nW, n, C): non-overlapping windows, n = prod(window)."""
    B, *grid, C = x.shape
    d = len(grid)
    split = [s for g, w in zip(grid, window) for s in (g // w, w)]
    x = x.reshape(B, *split, C)  # (B, g0/w0, w0, g1/w1, w1, ..., C)
    x = x.permute(0, *range(1, 2 * d, 2), *range(2, 2 * d + 1, 2), 2 * d + 1)
    return x.reshape(-1, math.prod(window), C)


def window_reverse(x: torch.Tensor, grid: Grid, window: Grid) -> torch.Tensor:
    """(B * nW, n, C) -> (B, *grid, C), the inverse of :func:`window_partition`."""
    d, C = len(grid), x.shape[-1]
    counts = [g // w for g, w in zip(grid, window)]
    x = x.reshape(-1, *counts, *window, C)  # (B, g0/w0, ..., w0, ..., C)
    x = x.permute(0, *(i for a in range(1, d + 1) for i in (a, a + d)), 2 * d + 1)
    return x.reshape(-1, *grid, C)


def window_ids(grid: Grid, window: Grid, shift: Sequence[int], device: torch.device | str | None) -> torch.Tensor:
    """(N,) id per token (flat grid order): two tokens share a window iff their ids are equal.

    A Swin shift by ``s`` moves the window boundaries to s, s + w, s + 2w, ...; the cyclic roll
    plus region mask of the fast path computes exactly this partition, so the same ids give the
    region masks of the fast path and the dense mask of the reference path.
    """
    ids = torch.zeros((), dtype=torch.long, device=device)
    for axis, (g, w, s) in enumerate(zip(grid, window, shift)):
        p = torch.arange(g, device=device)
        a = torch.div(p - s, w, rounding_mode="floor") + 1  # (g,) in [0, g / w]
        ids = ids.unsqueeze(-1) * (g // w + 1) + a.view(*([1] * axis), g)
    return ids.reshape(-1)
