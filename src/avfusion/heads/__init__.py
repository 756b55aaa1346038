"""Output heads: Zorro's masked readout (classifiers are plain Linear layers in each family)."""

from avfusion.heads.readout import OUTPUTS, Readout, readout_outputs

__all__ = ["OUTPUTS", "Readout", "readout_outputs"]
