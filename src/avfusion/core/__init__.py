"""The model contract every part shares: configs (architecture + preprocessing), the model base
classes and their output type.

``ModelConfig`` / ``PreprocessConfig`` (config), ``AVModel`` / ``ModelOutput`` / ``Tokens`` (base)
and ``ZorroModel`` (the masked-fusion base) sit below the families (fusion/, backbones/), the
data pipeline (which reads a model's preprocessing) and the registry (models/), so each of those
can build on them without an import cycle (docs/DESIGN.md, "Layers").
"""

from avfusion.core.base import AVModel, ModelOutput, Tokens
from avfusion.core.config import MODALITIES, ModelConfig, PreprocessConfig
from avfusion.core.zorro import ZorroModel

__all__ = ["AVModel", "MODALITIES", "ModelConfig", "ModelOutput", "PreprocessConfig", "Tokens", "ZorroModel"]
