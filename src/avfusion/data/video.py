"""Video transforms on tensors (no torchvision): resize, crops, flip, colour jitter, normalisation.

Frames enter as uint8 (T, H, W, 3) (what the decoder gives) and leave as float (3, T, H, W)
normalised (the model contract). Every random transform takes an optional ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Named normalisation presets: per-channel (mean, std) on [0, 1] pixel values.
VIDEO_NORM_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "scenic": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1], as scenic / big_vision ViTs
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [0, 1]."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {tuple(frames.shape)}")
    return frames.permute(3, 0, 1, 2).float().div_(255.0)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of (C, T, H, W) to ``size`` = (h, w)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    c, t = x.shape[:2]
    y = x.permute(1, 0, 2, 3)  # (T, C, H, W)
    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.permute(1, 0, 2, 3).contiguous()


def resize_short_side(x: torch.Tensor, short_side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    s = short_side / min(h, w)
    return resize(x, (max(1, round(h * s)), max(1, round(w * s))))


def crop(x: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    return x[..., top : top + h, left : left + w]


def _fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upscale so both sides are >= size (odd or tiny frames)."""
    h, w = x.shape[-2:]
    if h >= size[0] and w >= size[1]:
        return x
    s = max(size[0] / h, size[1] / w)
    return resize(x, (max(size[0], math.ceil(h * s)), max(size[1], math.ceil(w * s))))


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = _fit(x, size)
    h, w = x.shape[-2:]
    return crop(x, (h - size[0]) // 2, (w - size[1]) // 2, *size)


def three_crop(x: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """Three crops along the long side (start, centre, end): the papers' 3-crop evaluation.

    Frames are expected short-side resized to the crop's short side first."""
    x = _fit(x, size)
    h, w = x.shape[-2:]
    if w >= h:  # landscape: left, centre, right
        top = (h - size[0]) // 2
        lefts = [0, (w - size[1]) // 2, w - size[1]]
        return [crop(x, top, left, *size) for left in lefts]
    left = (w - size[1]) // 2
    tops = [0, (h - size[0]) // 2, h - size[0]]
    return [crop(x, top, left, *size) for top in tops]


def random_resized_crop(
    x: torch.Tensor,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop covering ``scale`` of the area with aspect jitter, resized to ``size``.

    The same box for every frame of the clip (temporal consistency)."""
    h, w = x.shape[-2:]
    area = h * w
    for _ in range(10):
        a = area * float(torch.empty(1).uniform_(*scale, generator=generator))
        logr = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        r = math.exp(float(logr))
        cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return resize(crop(x, top, left, ch, cw), size)
    # Fallback: the largest centred crop with the target aspect.
    return resize(center_crop(x, (min(h, w * size[0] // size[1]), min(w, h * size[1] // size[0]))), size)


def random_crop(x: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    x = _fit(x, size)
    h, w = x.shape[-2:]
    top = int(torch.randint(0, h - size[0] + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size[1] + 1, (1,), generator=generator))
    return crop(x, top, left, *size)


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Brightness / contrast / saturation jitter on (3, T, H, W) in [0, 1], same for all frames."""

    def factor(s: float) -> float:
        return float(torch.empty(1).uniform_(max(0.0, 1 - s), 1 + s, generator=generator))

    if brightness:
        x = x * factor(brightness)
    gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]  # (1, T, H, W)
    if contrast:
        x = (x - gray.mean()) * factor(contrast) + gray.mean()
    if saturation:
        gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
        x = (x - gray) * factor(saturation) + gray
    return x.clamp(0.0, 1.0)


def normalize(x: torch.Tensor, preset: str = "scenic") -> torch.Tensor:
    """(3, ...) in [0, 1] -> normalised with the named preset."""
    if preset not in VIDEO_NORM_PRESETS:
        raise ValueError(f"unknown video_norm {preset!r}; presets: {sorted(VIDEO_NORM_PRESETS)}")
    mean, std = VIDEO_NORM_PRESETS[preset]
    shape = (3,) + (1,) * (x.dim() - 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s
