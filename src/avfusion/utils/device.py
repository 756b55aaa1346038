"""Which device a command runs on: one rule for train, eval, predict, embed and bench.

A device is named ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``auto`` (every command's default)
is this process's CUDA device when CUDA is available, else the CPU. Under torchrun, "this
process's CUDA device" is ``cuda:LOCAL_RANK``, so ``auto`` and ``cuda`` put each rank on its own
GPU; ``cuda:N`` is taken as written. Anything else, or CUDA (or GPU N) on a machine without it,
is a one-line ConfigError.
"""

from __future__ import annotations

import re

import torch

from avfusion.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_name(spec: object) -> bool:
    """Whether ``spec`` is spelled like a device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); says
    nothing about this machine (a config written for a GPU host still validates on a laptop)."""
    return isinstance(spec, str) and _NAME.fullmatch(spec) is not None


def resolve_device(spec: str, local_rank: int | None = None, key: str = "device") -> torch.device:
    """The device ``spec`` names on this machine, for the process of ``local_rank`` (None: not
    under torchrun, i.e. 0); see the module docstring. ``key`` names the setting in an error
    (``run.device``)."""
    if not is_device_name(spec):
        raise ConfigError(f"{key} must be {DEVICE_CHOICES}, got {spec!r}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{key} {spec!r}: this machine has no CUDA device (use cpu or auto)")
    explicit = ":" in spec
    index = int(spec.partition(":")[2]) if explicit else (local_rank or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"{key} {spec!r}: this machine has {count} CUDA device(s), so no cuda:{index}"
                          + ("" if explicit else f" for local rank {index}"))
    return torch.device("cuda", index)


__all__ = ["DEVICE_CHOICES", "is_device_name", "resolve_device"]
