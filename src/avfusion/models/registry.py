"""Model registry: one small function per named variant, returning its ModelConfig.

Variant functions only set sizes (timm's habit); ``build_model`` / ``create_model`` build the
right family. Imports go one way: the families (fusion/, backbones/) and the converters (convert/)
build on core/, and this module builds on them.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from typing import Any

from avfusion.backbones import ZorroHiP, ZorroSwin
from avfusion.convert.vit import init_from_vit
from avfusion.errors import ConfigError
from avfusion.fusion import MaskedFusion, StreamFusion
from avfusion.core import AVModel, ModelConfig

# The class that builds each family (ModelConfig.family).
FAMILY_CLASSES: dict[str, type[AVModel]] = {
    "streams": StreamFusion, "masked": MaskedFusion, "swin": ZorroSwin, "hip": ZorroHiP,
}

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style filter like ``'*_tiny'``."""
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The named variant's config with ``overrides`` (any ModelConfig field) applied."""
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        raise ConfigError(f"unknown model {name!r}; e.g. {close or list_models()[:8]} (`avfusion models` lists all, "
                          "`avfusion models --pretrained` the released weights)")
    cfg = _REGISTRY[name]()
    cfg.name = name
    return cfg.replace(**overrides) if overrides else cfg


def build_model(cfg: ModelConfig) -> AVModel:
    """Build the model a config describes (random initialisation)."""
    return FAMILY_CLASSES[cfg.family](cfg)


def create_model(name: str, *, pretrained_backbone: str | os.PathLike | None = None,
                 pretrained_backbone_inflate: str = "central", **overrides: Any) -> AVModel:
    """``create_model('mbt_base', num_classes=309, fusion_layer=10)``.

    A registered architecture with random weights. ``avfusion.create_model`` (avfusion.zoo) takes
    released weights by name as well (``pretrained=True``, ``hf-hub:ORG/NAME``) and calls this
    for architectures.

    ``pretrained_backbone``: an ImageNet ViT checkpoint (timm / Hugging Face ``.safetensors`` or
    ``.pth``, original ViT or big_vision ``.npz``) to initialise the transformer from, as MBT and
    Zorro do; ``pretrained_backbone_inflate`` ('central' or 'average') sets how the 2D patch
    kernel becomes the video tubelet. ``avfusion.convert.vit.init_from_vit`` has every option;
    docs/convert.md explains them.
    """
    model = build_model(get_model_config(name, **overrides))
    if pretrained_backbone is not None:
        init_from_vit(model, pretrained_backbone, inflate=pretrained_backbone_inflate)
    return model
