"""Patch embeddings: tubelets for video, patches for the spectrogram."""

from __future__ import annotations

import torch
from torch import nn


def _check_divisible(name: str, size: tuple[int, ...], patch: tuple[int, ...]) -> None:
    if any(s % p for s, p in zip(size, patch, strict=True)):
        raise ValueError(f"{name} size {size} is not divisible by patch size {patch}")


class TubeletEmbed(nn.Module):
    """Video (B, C, T, H, W) -> tokens (B, N, D), N = T/t * H/h * W/w, ordered t, then h, then w.

    A Conv3d with stride = kernel (ViViT's tubelet embedding, scenic's '3d_conv').
    """

    def __init__(self, dim: int, num_frames: int, image_size: tuple[int, int],
                 tubelet: tuple[int, int, int], in_chans: int = 3):
        super().__init__()
        size = (num_frames, *image_size)
        _check_divisible("video", size, tubelet)
        self.grid = tuple(s // p for s, p in zip(size, tubelet))  # (T', H', W')
        self.num_patches = self.grid[0] * self.grid[1] * self.grid[2]
        self.in_size = (in_chans, *size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=tubelet, stride=tubelet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.in_size:
            raise ValueError(f"video must be (B, {', '.join(map(str, self.in_size))}), got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, T', H', W') -> (B, N, D)


class SpectrogramEmbed(nn.Module):
    """Log-mel (B, T_a, F) -> tokens (B, N, D), N = T_a/pt * F/pf, ordered time-major then mel.

    One input channel: the official MBT tiles the spectrogram to 3 channels, which equals a
    1-channel conv with the channel-summed kernel (the converter folds it).
    """

    def __init__(self, dim: int, spec_size: tuple[int, int], patch: tuple[int, int]):
        super().__init__()
        _check_divisible("spectrogram", spec_size, patch)
        self.grid = tuple(s // p for s, p in zip(spec_size, patch))  # (T', F')
        self.num_patches = self.grid[0] * self.grid[1]
        self.in_size = tuple(spec_size)
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.in_size:
            raise ValueError(f"audio must be (B, {', '.join(map(str, self.in_size))}) log-mel, got {tuple(x.shape)}")
        return self.proj(x.unsqueeze(1)).flatten(2).transpose(1, 2)  # (B, D, T', F') -> (B, N, D)
