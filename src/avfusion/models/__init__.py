"""Registry, configs and the shared model surface.

Import order (each line only needs the ones above it): config, base, zorro (base classes) <-
fusion/, backbones/ (the families) <- registry (build_model, create_model) <- variants (the
registered names).
"""

from avfusion.models.base import AVModel, ModelOutput, Tokens
from avfusion.models.config import ModelConfig, PreprocessConfig
from avfusion.models.registry import build_model, create_model, get_model_config, list_models, register_model
from avfusion.models.zorro import ZorroModel

from avfusion.models import variants as _variants  # noqa: F401  (registers the named models)
from avfusion.models import variants_hierarchical as _variants_hierarchical  # noqa: F401  (Zorro-Swin, -HiP)

__all__ = ["AVModel", "ModelOutput", "Tokens", "ZorroModel", "ModelConfig", "PreprocessConfig", "build_model",
           "create_model", "get_model_config", "list_models", "register_model"]
