"""Video transforms on tensors (no torchvision): resize, crops, flip, colour jitter, normalisation.

Frames enter as uint8 (T, H, W, 3) (what the decoder gives) and leave as float (3, T, H, W)
normalised (the model contract). Geometric transforms work on any (..., H, W) tensor: the
loaders apply them to uint8 frames viewed as (T, 3, H, W) channels-last (``frames_tchw``),
where torch's antialiased uint8 resize is ~5x faster than on float, and convert to float only
at the output size. Every random transform takes an optional ``torch.Generator``.
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


def frames_tchw(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (T, 3, H, W) view (channels-last memory, no copy)."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2)


def tchw_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> float (3, T, H, W) in [0, 1]."""
    return x.transpose(0, 1).float().div_(255.0).contiguous()


def tchw_to_normalized(x: torch.Tensor, preset: str = "scenic") -> torch.Tensor:
    """uint8 (T, 3, H, W) -> normalised float (3, T, H, W) in one conversion and two in-place ops
    (``normalize(tchw_to_float(x))`` without its temporaries)."""
    mean, std = _preset(preset)
    out = torch.empty((3, x.shape[0], *x.shape[2:]), dtype=torch.float32, device=x.device)
    out.copy_(x.transpose(0, 1))
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=x.device).view(3, 1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=x.device).view(3, 1, 1, 1)
    return out.mul_(scale).sub_(shift)


def _preset(preset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if preset not in VIDEO_NORM_PRESETS:
        raise ValueError(f"unknown video_norm {preset!r}; presets: {sorted(VIDEO_NORM_PRESETS)}")
    return VIDEO_NORM_PRESETS[preset]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased) of the last two dims to ``size`` = (h, w).

    uint8 (T, 3, H, W) uses torch's fast uint8 kernel; float tensors of any layout work."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.dtype == torch.uint8:
        if x.dim() != 4:
            raise ValueError("uint8 resize expects (T, 3, H, W)")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    lead = x.shape[:-2]
    y = x.reshape(1, -1, *x.shape[-2:])  # (1, prod(lead), H, W): every plane resized alike
    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.reshape(*lead, *size)


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
    top, left, ch, cw = random_resized_box(x.shape[-2], x.shape[-1], size, scale, ratio, generator)
    return resize(crop(x, top, left, ch, cw), size)


def random_resized_box(
    h: int, w: int, size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of an Inception-style random crop box."""
    area = h * w
    for _ in range(10):
        a = area * float(torch.empty(1).uniform_(*scale, generator=generator))
        logr = torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
        r = math.exp(float(logr))
        cw, ch = round(math.sqrt(a * r)), round(math.sqrt(a / r))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return top, left, ch, cw
    # Fallback: the largest centred box with the target aspect.
    ch, cw = min(h, w * size[0] // size[1]), min(w, h * size[1] // size[0])
    return (h - ch) // 2, (w - cw) // 2, ch, cw


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
    mean, std = _preset(preset)
    shape = (3,) + (1,) * (x.dim() - 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return (x - m) / s
