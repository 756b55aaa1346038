"""Peak memory of a piece of work.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before: the peak of tensors the work added (the caching allocator's reserve is not
  counted).
- CPU: the process's peak resident set size (RSS) during the work minus the RSS before it. On
  Linux the peak is reset first by writing ``5`` to ``/proc/self/clear_refs`` and read back as
  ``VmHWM`` from ``/proc/self/status``, so each measurement has its own peak. Elsewhere it falls
  back to ``resource.getrusage`` ``ru_maxrss`` (a process-lifetime peak: the delta is then only
  a lower bound, and 0 when an earlier step peaked higher); ``method`` says which was used.
  RSS counts everything the process touches (allocator caches included), so it is coarser than
  the CUDA number; tracemalloc is not used because it does not see torch's allocations.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


@dataclass
class PeakMemory:
    bytes: int
    method: str  # "cuda_max_memory_allocated" | "vmhwm" | "ru_maxrss" | "none"

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def measure_peak(fn: Callable[[], Any], device: torch.device | str = "cpu") -> PeakMemory:
    """Run ``fn`` once and return the peak memory it added on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return PeakMemory(torch.cuda.max_memory_allocated(device) - before, "cuda_max_memory_allocated")
    rss = _status_kib("VmRSS")
    if rss is not None and _reset_rss_peak():
        fn()
        peak = _status_kib("VmHWM")
        if peak is not None:
            return PeakMemory(max(peak - rss, 0) * 1024, "vmhwm")
    before = _ru_maxrss_bytes()
    fn()
    after = _ru_maxrss_bytes()
    if before is None or after is None:
        return PeakMemory(0, "none")
    return PeakMemory(max(after - before, 0), "ru_maxrss")
