"""avfusion: audio-visual transformers (MBT attention bottlenecks, Zorro masked fusion)."""

from avfusion.models import (
    AVModel,
    ModelConfig,
    ModelOutput,
    build_model,
    get_model_config,
    list_models,
)
from avfusion.models.pretrained import load_pretrained, save_pretrained
from avfusion.zoo import create_model, list_pretrained, resolve_model  # create_model: architectures and releases


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avfusion")
    except PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


__version__ = _version()

__all__ = ["AVModel", "ModelConfig", "ModelOutput", "build_model", "create_model", "get_model_config",
           "list_models", "list_pretrained", "load_pretrained", "resolve_model", "save_pretrained", "__version__"]
