"""Model registry: one small function per named variant, returning its ModelConfig.

Variant functions only set sizes (timm's habit); ``build_model`` / ``create_model`` build the
right family. Imports go one way: the families (fusion/, backbones/) build on models.base and
models.zorro, and this module builds on the families.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from typing import Any

from avfusion.backbones import ZorroHiP, ZorroSwin
from avfusion.errors import ConfigError
from avfusion.fusion import MaskedFusion, StreamFusion
from avfusion.models.base import AVModel
from avfusion.models.config import ModelConfig

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
        from avfusion.zoo import is_pretrained_name  # zoo/ builds on models/: reached only here

        if is_pretrained_name(name) or name.startswith("hf-hub:"):
            raise ConfigError(f"{name!r} is a pretrained model, not an architecture: load it with "
                              f"create_model({name!r}, pretrained=True), or start training from it with "
                              f"init_from={name} (--init-from)")
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        raise ConfigError(f"unknown model {name!r}; e.g. {close or list_models()[:8]} (`avfusion models` lists all)")
    cfg = _REGISTRY[name]()
    cfg.name = name
    return cfg.replace(**overrides) if overrides else cfg


def build_model(cfg: ModelConfig) -> AVModel:
    """Build the model a config describes (random initialisation)."""
    return FAMILY_CLASSES[cfg.family](cfg)


def create_model(name: str, *, pretrained: bool = False, pretrained_backbone: str | os.PathLike | None = None,
                 pretrained_backbone_inflate: str = "central", **overrides: Any) -> AVModel:
    """``create_model('mbt_base', num_classes=309, fusion_layer=10)``.

    ``create_model('mbtb32_as-500k_rgb-spec', pretrained=True)``: an official MBT release by name
    (``avfusion.list_pretrained()``), downloaded, converted and cached once (avfusion.models.zoo);
    ``create_model('hf-hub:ORG/NAME')``: an avfusion model directory on the Hugging Face Hub. Both
    come in eval mode; ``overrides`` must then keep parameter shapes (``model.reset_classifier(n)``
    gives a new head). A release name without ``pretrained=True`` builds its architecture with
    random weights.

    ``pretrained_backbone``: an ImageNet ViT checkpoint (timm / Hugging Face ``.safetensors`` or
    ``.pth``, original ViT or big_vision ``.npz``) to initialise the transformer from, as MBT and
    Zorro do; ``pretrained_backbone_inflate`` ('central' or 'average') sets how the 2D patch
    kernel becomes the video tubelet. ``avfusion.convert.vit.init_from_vit`` has every option;
    docs/convert.md explains them.
    """
    # zoo/ converts and loads with models/ and convert/, so models/ reaches it only when asked to
    import avfusion.zoo as zoo

    if pretrained or name.startswith(zoo.HF_HUB_PREFIX):
        if name in _REGISTRY:
            raise ConfigError(f"no pretrained weights for architecture {name!r}: `avfusion models --pretrained` "
                              "lists the releases (or pass pretrained_backbone=PATH for ImageNet ViT weights)")
        if pretrained_backbone is not None:
            raise ConfigError("pretrained=True and pretrained_backbone cannot be combined")
        return zoo.load_pretrained_model(name, **overrides)
    if zoo.is_pretrained_name(name):
        cfg = zoo.get_pretrained_cfg(name).model_config()
        model = build_model(cfg.replace(**overrides) if overrides else cfg)
    else:
        model = build_model(get_model_config(name, **overrides))
    if pretrained_backbone is not None:
        # convert/ builds on models/ (scenic_mbt needs build_model), so models/ reaches the ViT
        # converter only when asked to, not at import time.
        from avfusion.convert.vit import init_from_vit

        init_from_vit(model, pretrained_backbone, inflate=pretrained_backbone_inflate)
    return model
