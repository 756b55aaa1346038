"""The one-command demo: AV-digits, a small embedded audio-visual data set (:mod:`.avdigits`)."""

from avfusion.demo.avdigits import generate

__all__ = ["generate"]
