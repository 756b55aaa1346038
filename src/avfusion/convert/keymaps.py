"""Flax / ViT parameter layouts -> avfusion's (timm-style) layout, as plain tensor functions.

Layout rules (flax vs torch):
- Dense kernel (in, out) -> Linear weight (out, in).
- Attention ``query|key|value/kernel`` (d, h, k) -> one fused qkv weight (3d, d) in q, k, v order;
  ``bias`` (h, k) -> (3d,); ``out/kernel`` (h, k, d) -> proj weight (d, h*k). Flattening (h, k) as
  h * k + k matches avfusion's ``reshape(B, L, 3, h, hd)`` head split.
- LayerNorm ``scale`` / ``bias`` -> ``weight`` / ``bias``.
- Conv kernels (T, H, W, Cin, Cout) / (H, W, Cin, Cout) -> (Cout, Cin, T, H, W) / (Cout, Cin, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from avfusion.errors import ConfigError, InputError


class ParamReader:
    """Read named arrays from a flat ``'a/b/c' -> array`` mapping and remember which were used,
    so that a conversion can prove it consumed every parameter (nothing silently dropped)."""

    def __init__(self, flat: Mapping[str, np.ndarray], source: str):
        self.flat = dict(flat)
        self.source = source
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.flat

    def get(self, key: str, ndim: int | None = None) -> np.ndarray:
        if key not in self.flat:
            raise InputError(f"{self.source}: parameter {key!r} is missing")
        a = np.asarray(self.flat[key])
        if ndim is not None and a.ndim != ndim:
            raise InputError(f"{self.source}: parameter {key!r} has shape {a.shape}, expected {ndim} dims")
        self.used.add(key)
        return a

    def unused(self) -> list[str]:
        return sorted(set(self.flat) - self.used)


def t(a: np.ndarray) -> torch.Tensor:
    """numpy -> float32 torch tensor (a copy: the source buffer may be read-only)."""
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


def dense(kernel: np.ndarray) -> torch.Tensor:
    """Flax Dense kernel (in, out) -> torch Linear weight (out, in)."""
    return t(kernel.T)


def conv3d(kernel: np.ndarray) -> torch.Tensor:
    """Flax (T, H, W, Cin, Cout) -> torch Conv3d (Cout, Cin, T, H, W)."""
    return t(np.transpose(kernel, (4, 3, 0, 1, 2)))


def conv2d(kernel: np.ndarray) -> torch.Tensor:
    """Flax (H, W, Cin, Cout) -> torch Conv2d (Cout, Cin, H, W)."""
    return t(np.transpose(kernel, (3, 2, 0, 1)))


@dataclass(frozen=True)
class FlaxBlockNames:
    """Submodule names of one pre-LN encoder block in a flax checkpoint."""

    ln1: str = "LayerNorm_0"
    attn: str = "MultiHeadDotProductAttention_0"
    ln2: str = "LayerNorm_1"
    mlp: str = "MlpBlock_0"


SCENIC_BLOCK = FlaxBlockNames()  # scenic / big_vision
ORIGINAL_VIT_BLOCK = FlaxBlockNames("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")


def flax_block(r: ParamReader, prefix: str, names: FlaxBlockNames = SCENIC_BLOCK) -> dict[str, torch.Tensor]:
    """One flax encoder block under ``prefix`` (e.g. 'Transformer/encoderblock_0') -> avfusion
    Block state dict (keys relative to the block: 'norm1.weight', 'attn.qkv.weight', ...)."""
    p = f"{prefix}/"
    a = f"{p}{names.attn}/"
    q, k, v = (r.get(f"{a}{n}/kernel", ndim=3) for n in ("query", "key", "value"))  # each (d, h, hd)
    d = q.shape[0]
    qkv_w = np.concatenate([x.reshape(d, -1) for x in (q, k, v)], axis=1)  # (d, 3d): [q | k | v]
    qkv_b = np.concatenate([r.get(f"{a}{n}/bias", ndim=2).reshape(-1) for n in ("query", "key", "value")])
    out_k = r.get(f"{a}out/kernel", ndim=3)  # (h, hd, d)
    return {
        "norm1.weight": t(r.get(f"{p}{names.ln1}/scale")),
        "norm1.bias": t(r.get(f"{p}{names.ln1}/bias")),
        "attn.qkv.weight": dense(qkv_w),  # (3d, d)
        "attn.qkv.bias": t(qkv_b),
        "attn.proj.weight": dense(out_k.reshape(-1, out_k.shape[-1])),  # (d, h*hd)
        "attn.proj.bias": t(r.get(f"{a}out/bias")),
        "norm2.weight": t(r.get(f"{p}{names.ln2}/scale")),
        "norm2.bias": t(r.get(f"{p}{names.ln2}/bias")),
        "mlp.fc1.weight": dense(r.get(f"{p}{names.mlp}/Dense_0/kernel", ndim=2)),
        "mlp.fc1.bias": t(r.get(f"{p}{names.mlp}/Dense_0/bias")),
        "mlp.fc2.weight": dense(r.get(f"{p}{names.mlp}/Dense_1/kernel", ndim=2)),
        "mlp.fc2.bias": t(r.get(f"{p}{names.mlp}/Dense_1/bias")),
    }


def fold_rgb_to_one_channel(weight: torch.Tensor) -> torch.Tensor:
    """(Cout, 3, ...) -> (Cout, 1, ...) by summing input channels.

    A 1-channel input tiled to 3 channels (scenic's spectrogram) through the 3-channel kernel is
    exactly the 1-channel input through the channel-summed kernel.
    """
    return weight.sum(dim=1, keepdim=True)


def inflate_2d_to_3d(weight: torch.Tensor, frames: int, mode: str = "central") -> torch.Tensor:
    """(Cout, Cin, H, W) image kernel -> (Cout, Cin, frames, H, W) tubelet kernel.

    ``central`` (scenic's central_frame_initializer): the 2D kernel at frame ``frames // 2``,
    zeros elsewhere, so a static clip embeds like its central frame does in the image model.
    ``average`` (average_frame_initializer): the kernel divided by ``frames`` on every frame, so a
    static clip embeds exactly like one image.
    """
    if mode == "central":
        out = weight.new_zeros(*weight.shape[:2], frames, *weight.shape[2:])
        out[:, :, frames // 2] = weight
        return out
    if mode == "average":
        return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    raise ConfigError(f"tubelet inflation mode must be 'central' or 'average', got {mode!r}")
