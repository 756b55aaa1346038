"""avfusion: audio-visual transformers (MBT attention bottlenecks, Zorro masked fusion)."""

from avfusion.models import (
    AVModel,
    ModelConfig,
    ModelOutput,
    build_model,
    create_model,
    get_model_config,
    list_models,
)
from avfusion.models.pretrained import load_pretrained, save_pretrained
from avfusion.zoo import list_pretrained, resolve_model

__version__ = "0.1.0"

__all__ = ["AVModel", "ModelConfig", "ModelOutput", "build_model", "create_model", "get_model_config",
           "list_models", "list_pretrained", "load_pretrained", "resolve_model", "save_pretrained", "__version__"]
