"""Learned position embeddings and their resampling to another token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed(
    posemb: torch.Tensor,
    old_grid: tuple[int, ...],
    new_grid: tuple[int, ...],
    num_prefix_tokens: int = 0,
    mode: str | None = None,
) -> torch.Tensor:
    """Resample (1, P + prod(old_grid), D) to (1, P + prod(new_grid), D).

    The P prefix tokens (CLS) are kept as they are; the grid part is interpolated with
    ``mode`` (default: 'bilinear' for 2D grids, 'trilinear' for 3D), ``align_corners=False``
    as in timm and big_vision.
    """
    if len(old_grid) != len(new_grid):
        raise ValueError(f"grids must have the same rank: {old_grid} vs {new_grid}")
    n_old = 1
    for g in old_grid:
        n_old *= g
    if posemb.shape[1] != num_prefix_tokens + n_old:
        raise ValueError(
            f"position embedding has {posemb.shape[1]} tokens, expected {num_prefix_tokens} + {n_old} for grid {old_grid}"
        )
    if tuple(old_grid) == tuple(new_grid):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    D = posemb.shape[-1]
    mode = mode or {1: "linear", 2: "bilinear", 3: "trilinear"}[len(old_grid)]
    grid = grid.reshape(1, *old_grid, D).movedim(-1, 1).float()  # (1, D, *old_grid)
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=False)
    grid = grid.movedim(1, -1).reshape(1, -1, D).to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1)
