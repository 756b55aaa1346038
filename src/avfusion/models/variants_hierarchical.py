"""Zorro-Swin and Zorro-HiP variants (docs/zorro_swin_hip.md). Each function sets sizes only.

Base models take zorro_vit_base's inputs (32 frames of 224 x 224, 800 x 128 log-mel, 527
classes) and have about ViT-B's parameter count; tiny models take the tiny inputs of
variants.py (8 frames of 32 x 32, 96 x 32 log-mel, 10 classes).
"""

from __future__ import annotations

from avfusion.core.config import ModelConfig
from avfusion.models.registry import register_model
from avfusion.models.variants import _MBT_INPUTS, _TINY

_TINY_INPUTS = {k: _TINY[k] for k in ("num_frames", "image_size", "spec_size", "num_classes", "preprocess")}

# Swin-B widths (128 -> 1024 over four stages, head width 32, MLP ratio 4; 88M parameters) with
# Video Swin's 2x4x4 tubelets and 8x7x7 windows: video grids 16x56x56 -> 16x7x7. The spectrogram
# in 4x4 patches is a 200x32 grid -> 25x4; 5x8 windows (40 tokens, near Swin's 49) divide it at
# every stage.
_SWIN_B = dict(embed_dim=128, num_heads=4, mlp_dim=512, depths=(2, 2, 18, 2), tubelet=(2, 4, 4),
               spec_patch=(4, 4), window_size=(8, 7, 7), spec_window=(5, 8))
# Tiny: two stages, widths 32 -> 64; grids video 4x8x8 -> 4x4x4, spectrogram 24x8 -> 12x4.
_SWIN_T = dict(embed_dim=32, num_heads=2, mlp_dim=128, depths=(2, 2), tubelet=(2, 4, 4),
               spec_patch=(4, 4), window_size=(2, 4, 4), spec_window=(4, 4))

# HiP on ViT-B's patch tokens (2x16x16 tubelets, 16x16 spectrogram patches: 3136 + 400 tokens):
# three stages of 256 -> 128 -> 64 latents per modality at widths 256 -> 512 -> 768, with 2 + 4 + 8
# blocks (head width 64, MLP ratio 4; ~86M parameters, about ViT-B's).
_HIP_B = dict(embed_dim=256, num_heads=4, mlp_dim=1024, depths=(2, 4, 8), stage_dims=(256, 512, 768),
              num_latents=(256, 128, 64), tubelet=(2, 16, 16), spec_patch=(16, 16))
# Tiny: on the tiny ViT's patch tokens (64 video + 48 audio), 16 -> 8 latents per modality.
_HIP_T = dict(embed_dim=32, num_heads=2, mlp_dim=128, depths=(2, 2), stage_dims=(32, 64), num_latents=(16, 8),
              tubelet=(2, 8, 8), spec_patch=(8, 8))


def _swin(size: dict, inputs: dict, **kw) -> ModelConfig:
    return ModelConfig(family="swin", fusion="zorro", fusion_layer=0, **{**inputs, **size, **kw})


def _hip(size: dict, inputs: dict, **kw) -> ModelConfig:
    return ModelConfig(family="hip", fusion="zorro", fusion_layer=0, **{**inputs, **size, **kw})


@register_model
def zorro_swin_base() -> ModelConfig:
    return _swin(_SWIN_B, _MBT_INPUTS, num_fusion_tokens=8)


@register_model
def zorro_swin_tiny() -> ModelConfig:
    return _swin(_SWIN_T, _TINY_INPUTS, num_fusion_tokens=4)


@register_model
def zorro_hip_base() -> ModelConfig:
    return _hip(_HIP_B, _MBT_INPUTS, num_fusion_tokens=8)


@register_model
def zorro_hip_tiny() -> ModelConfig:
    return _hip(_HIP_T, _TINY_INPUTS, num_fusion_tokens=4)
