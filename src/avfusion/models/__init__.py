"""Registry, configs and the shared model surface."""

from avfusion.models import variants as _variants  # noqa: F401  (registers the named models)
from avfusion.models import variants_hierarchical as _variants_hierarchical  # noqa: F401  (Zorro-Swin, -HiP)
from avfusion.models.base import AVModel, ModelOutput
from avfusion.models.config import ModelConfig, PreprocessConfig
from avfusion.models.registry import build_model, create_model, get_model_config, list_models, register_model

__all__ = ["AVModel", "ModelOutput", "ModelConfig", "PreprocessConfig", "build_model", "create_model",
           "get_model_config", "list_models", "register_model"]
