"""Registry and named variants, model directories, FLOPs; the model contract re-exported from core/.

Import order (each line only needs the ones above it): core/ (config, base classes) <- fusion/,
backbones/ (the families) <- convert/ <- registry (build_model, create_model) <- variants (the
registered names) <- pretrained (model directories).
"""

from avfusion.core import AVModel, ModelConfig, ModelOutput, PreprocessConfig, Tokens, ZorroModel
from avfusion.models.registry import build_model, create_model, get_model_config, list_models, register_model

from avfusion.models import variants as _variants  # noqa: F401  (registers the named models)
from avfusion.models import variants_hierarchical as _variants_hierarchical  # noqa: F401  (Zorro-Swin, -HiP)

__all__ = ["AVModel", "ModelOutput", "Tokens", "ZorroModel", "ModelConfig", "PreprocessConfig", "build_model",
           "create_model", "get_model_config", "list_models", "register_model"]
