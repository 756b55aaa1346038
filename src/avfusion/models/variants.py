"""Named variants. Each function sets sizes only; see docs/models.md for where each comes from."""

from __future__ import annotations

import copy

from avfusion.core.config import ModelConfig, PreprocessConfig
from avfusion.models.registry import register_model

# ViT-B/16 widths (MBT and Zorro-ViT both start from an ImageNet ViT-B).
_VIT_B = dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072)
# MBT's AudioSet inputs: 32 frames of 224x224 in 2x16x16 tubelets (16 x 14 x 14 = 3136 tokens),
# 800 x 128 log-mel in 16x16 patches (50 x 8 = 400 tokens), 527 classes.
_MBT_INPUTS = dict(num_frames=32, image_size=(224, 224), tubelet=(2, 16, 16),
                   spec_size=(800, 128), spec_patch=(16, 16), num_classes=527)
# Tiny models for tests and the demo: 4 layers of width 64; 8 frames of 32x32 in 2x8x8 tubelets
# (4 x 4 x 4 = 64 tokens; frames resized to a 36-pixel short side before cropping), 96 x 32
# log-mel (0.97 s, 32 mel bins) in 8x8 patches (12 x 4 = 48 tokens), 10 classes.
_TINY = dict(embed_dim=64, depth=4, num_heads=4, mlp_dim=128, num_frames=8, image_size=(32, 32),
             tubelet=(2, 8, 8), spec_size=(96, 32), spec_patch=(8, 8), num_classes=10,
             preprocess=PreprocessConfig(num_mel_bins=32, short_side=36))


def _mbt(size: dict, **kw) -> ModelConfig:
    return ModelConfig(family="streams", **copy.deepcopy({**size, **kw}))  # no config shares a preprocess


def _zorro(size: dict, **kw) -> ModelConfig:
    return ModelConfig(family="masked", fusion_layer=0, **copy.deepcopy({**size, **kw}))


# --- MBT: per-modality weights, bottleneck fusion from layer 8 (the paper's AudioSet model) ---
@register_model
def mbt_base() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, fusion="bottleneck", fusion_layer=8, num_bottlenecks=4)


@register_model
def mbt_tiny() -> ModelConfig:
    return _mbt(_TINY, fusion="bottleneck", fusion_layer=2, num_bottlenecks=4)


# Late fusion: the streams never meet before the shared head (Lf = L).
@register_model
def mbt_base_late() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, fusion="bottleneck", fusion_layer=12)


@register_model
def mbt_tiny_late() -> ModelConfig:
    return _mbt(_TINY, fusion="bottleneck", fusion_layer=4)


# Mid fusion by per-modality cross-attention over [other ; own] tokens (scenic "vanilla").
@register_model
def mbt_base_xattn() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, fusion="xattn", fusion_layer=8)


@register_model
def mbt_tiny_xattn() -> ModelConfig:
    return _mbt(_TINY, fusion="xattn", fusion_layer=2)


# Early fusion: one shared stack, all tokens attend to all from layer 0.
@register_model
def mbt_base_early() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, fusion="concat", share_weights=True, fusion_layer=0)


@register_model
def mbt_tiny_early() -> ModelConfig:
    return _mbt(_TINY, fusion="concat", share_weights=True, fusion_layer=0)


# Mid fusion with shared weights: unimodal layers, then concatenated tokens (scenic share_encoder).
@register_model
def mbt_base_shared() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, fusion="concat", share_weights=True, fusion_layer=8)


@register_model
def mbt_tiny_shared() -> ModelConfig:
    return _mbt(_TINY, fusion="concat", share_weights=True, fusion_layer=2)


# Unimodal baselines: one ViT stream (MBT's "Spec-only" / "RGB-only" models).
@register_model
def mbt_base_audio() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, modalities=("audio",), fusion_layer=12)


@register_model
def mbt_tiny_audio() -> ModelConfig:
    return _mbt(_TINY, modalities=("audio",), fusion_layer=4)


@register_model
def mbt_base_video() -> ModelConfig:
    return _mbt({**_VIT_B, **_MBT_INPUTS}, modalities=("video",), fusion_layer=12)


@register_model
def mbt_tiny_video() -> ModelConfig:
    return _mbt(_TINY, modalities=("video",), fusion_layer=4)


# --- Zorro-ViT: one ViT-B/16 stack with Zorro's masks, 8 fusion tokens, four-output readout ---
# Inputs match mbt_base so the schemes are compared at equal token counts (docs/models.md).
@register_model
def zorro_vit_base() -> ModelConfig:
    return _zorro({**_VIT_B, **_MBT_INPUTS}, fusion="zorro", num_fusion_tokens=8)


@register_model
def zorro_vit_tiny() -> ModelConfig:
    return _zorro(_TINY, fusion="zorro", num_fusion_tokens=4)


# Zorro ablations (same stack and readout, other routing rules).
@register_model
def zorro_vit_base_independent() -> ModelConfig:
    # No fusion tokens, no cross-modal attention; the global readout query is the only meeting point.
    return _zorro({**_VIT_B, **_MBT_INPUTS}, fusion="unimodal", num_fusion_tokens=0, eval_output="global")


@register_model
def zorro_vit_tiny_independent() -> ModelConfig:
    return _zorro(_TINY, fusion="unimodal", num_fusion_tokens=0, eval_output="global")


@register_model
def zorro_vit_base_input_fusion() -> ModelConfig:
    return _zorro({**_VIT_B, **_MBT_INPUTS}, fusion="all", num_fusion_tokens=8)


@register_model
def zorro_vit_tiny_input_fusion() -> ModelConfig:
    return _zorro(_TINY, fusion="all", num_fusion_tokens=4)


@register_model
def zorro_vit_base_bottleneck_mask() -> ModelConfig:
    return _zorro({**_VIT_B, **_MBT_INPUTS}, fusion="bottleneck_mask", num_fusion_tokens=8)


@register_model
def zorro_vit_tiny_bottleneck_mask() -> ModelConfig:
    return _zorro(_TINY, fusion="bottleneck_mask", num_fusion_tokens=4)
