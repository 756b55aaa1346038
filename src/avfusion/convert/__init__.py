"""Weight conversion into avfusion models: official scenic MBT checkpoints and ImageNet ViTs.

Plain functions over state dicts plus key maps (keymaps.py); every file is read without running
code from it (safe_load.py).
"""

from avfusion.convert.safe_load import UnsafeCheckpointError, load_flax_msgpack, load_state_dict
from avfusion.convert.scenic_mbt import convert_scenic_mbt, infer_layout, scenic_mbt_config

__all__ = ["UnsafeCheckpointError", "convert_scenic_mbt", "infer_layout", "load_flax_msgpack",
           "load_state_dict", "scenic_mbt_config"]
