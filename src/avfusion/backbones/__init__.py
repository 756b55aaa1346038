"""Zorro's routing on hierarchical backbones: Zorro-Swin and Zorro-HiP (docs/zorro_swin_hip.md).

Zorro-ViT lives in fusion/masked.py (family ``masked``); these are families ``swin`` and ``hip``.
"""

from avfusion.backbones.hip import ZorroHiP
from avfusion.backbones.swin import ZorroSwin

__all__ = ["ZorroHiP", "ZorroSwin"]
