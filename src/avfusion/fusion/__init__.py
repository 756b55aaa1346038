"""The fusion family: two encoders, each a configuration space of DESIGN.md section 3's schemes.

- :class:`StreamFusion` (family ``streams``): per-modality (or shared) stacks meeting through
  bottlenecks, cross-attention or concatenation: MBT, late, early and mid fusion.
- :class:`MaskedFusion` (family ``masked``): one shared stack with routing masks: Zorro and its
  ablations (independent streams, input-level fusion, bottleneck masking).
"""

from avfusion.fusion.masked import MaskedFusion
from avfusion.fusion.streams import StreamFusion

__all__ = ["MaskedFusion", "StreamFusion"]
