"""Wall-clock timing with warm-up, device synchronisation and robust statistics.

Timings on a shared machine are noisy: report the median of several repeats (and the spread),
never one run, and record the load average (:func:`load_average`) next to the numbers.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from avfusion.errors import ConfigError


@dataclass
class Timing:
    """Seconds per call over ``repeats`` timed calls (after ``warmup`` untimed ones)."""

    times: list[float]
    warmup: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def iqr(self) -> float:
        """Interquartile range (0 for fewer than 4 repeats)."""
        if len(self.times) < 4:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return q[2] - q[0]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median": self.median, "mean": self.mean, "min": self.min, "iqr": self.iqr}


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued GPU work (a no-op on CPU), so wall-clock time measures the work."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5,
            device: torch.device | str | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed, synchronising the device."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        synchronize(device)
        times.append(clock() - t0)
    return Timing(times, warmup)


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (``uptime``), or None where the OS has none."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except (AttributeError, OSError):
        return None
