"""What this CPU and this torch build can do: the CPU's model and flags, and the oneDNN kernels
avfusion calls. One place for the checks that the linear products (layers/), their per-host
choices (layers/gemm_tune.py) and the inference precisions (infer/fast.py) depend on."""

from __future__ import annotations

import contextlib
import functools
import platform

import torch


@functools.cache  # read once: every layer may ask
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo (x86 "flags", Arm "Features");
    the platform's words and no flags elsewhere."""
    model, flags = "", ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Processor") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value
                if model and flags:
                    break
    return model or platform.processor() or platform.machine(), frozenset(flags.split())


def simd_flags() -> list[str]:
    """The vector-instruction flags of this CPU (avx*, amx*, fma, f16c), sorted: what a benchmark
    records beside its numbers to name the CPU kind."""
    return sorted(f for f in cpu_info()[1] if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))


def onednn_linear() -> bool:
    """torch has oneDNN's float / bfloat16 linear kernel (torch.ops.mkldnn._linear_pointwise)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_int8() -> bool:
    """torch has oneDNN's int8 linear kernel (torch.ops.onednn.qlinear_pointwise)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
