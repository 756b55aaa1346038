"""Which backend computes a float32 CPU linear product, measured on the running host and remembered.

``avfusion.layers.Linear`` has more than one way to compute each of its three products
(forward ``x W^T + b``, input gradient ``dy W``, weight gradient ``dy^T x``): torch's own
(``aten``: the BLAS PyTorch was built with, MKL in the official wheels) and oneDNN's. Which is
faster depends on the CPU (oneDNN is ahead on an AVX512 EPYC, MKL on an AVX2-only one), the
shape and the thread count, so the choice is measured, not written down:

- A *product key* names what is chosen for: direction, tokens M (in buckets of a quarter
  octave, so 785 and 789 tokens share a choice), K, N, bias (forward only), float32 and
  ``torch.get_num_threads()``.
- At the first product of a key, :meth:`Tuner.decide` runs it on every backend with the real
  operands: one warm-up call each (oneDNN builds its primitive then), then rounds taking turns
  (the order reversed every other round) until at least :data:`MIN_ROUNDS` rounds and either
  :data:`BUDGET_S` seconds or :data:`MAX_ROUNDS` rounds have passed; the fastest call of each
  backend counts. The clock is CPU time, not wall time: the calling thread's with one thread,
  the process's (all its threads) with more. On a busy host other processes take the CPU away
  from a trial for whole time slices; with two threads under a load of 15 a 5 ms product read
  70-120 ms of wall time, but a steady 8-11 ms of CPU time per thread, each backend's rank kept
  (what CPU time cannot see is a backend leaving a thread asleep; both keep every thread busy at
  the sizes where the choice matters). A backend other than ``aten`` must win by :data:`MARGIN`
  and by the fixed cost of the path that carries it (passed in). The caller gets the chosen
  backend's own result, so the first call equals every later one.
- The choice is written at once to ``$AVFUSION_HOME/gemm/<host key>.json`` (default
  ``~/.cache/avfusion``), the host key being the CPU model, a digest of its flags and the torch
  version: later processes on the same host read it and measure nothing. Writing takes a lock
  file and re-reads the cache first; a key that another process (a DDP rank, a test worker)
  decided meanwhile is adopted, so every process of a host makes the same choice, and a choice
  never changes within a process. A corrupt or unreadable cache is ignored (measured again and
  rewritten); one that cannot be written leaves the choices in memory, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from avfusion.utils.cpu import cpu_info
from avfusion.utils.files import atomic_json

BACKENDS: tuple[str, ...] = ("aten", "onednn")
DIRECTIONS: tuple[str, ...] = ("fwd", "dgrad", "wgrad")
MIN_ROUNDS = 3
MAX_ROUNDS = 25
BUDGET_S = 0.005  # after MIN_ROUNDS, more rounds only while the trial has taken less than this
MARGIN = 0.03  # a backend other than aten must be this much faster (ties stay on nn.Linear's)
FORMAT = 1


def cache_dir() -> Path:
    """The user's avfusion cache: ``$AVFUSION_HOME``, else ``$XDG_CACHE_HOME/avfusion``, else
    ``~/.cache/avfusion``."""
    home = os.environ.get("AVFUSION_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "avfusion"


def host_info() -> dict[str, str]:
    """What the choices depend on besides the shape: the CPU model, its flags, torch's version."""
    model, flags = cpu_info()
    text = " ".join(sorted(flags)) or platform.machine()
    return {"cpu": model, "flags_sha1": hashlib.sha1(text.encode()).hexdigest()[:10], "torch": torch.__version__}


def host_key(info: dict[str, str] | None = None) -> str:
    info = info or host_info()
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{info['cpu']}-{info['flags_sha1']}-torch-{info['torch']}").strip("-")
    return slug[:160]


def m_bucket(m: int) -> int:
    """Tokens M rounded up to a quarter octave (..., 724, 861, 1024, ...): one choice per bucket."""
    return m if m <= 4 else round(2 ** (math.ceil(4 * math.log2(m) - 1e-9) / 4))


def product_key(direction: str, m: int, k: int, n: int, bias: bool = False, threads: int | None = None) -> str:
    threads = torch.get_num_threads() if threads is None else threads
    b = "+b" if bias and direction == "fwd" else ""
    return f"{direction}{b} m{m_bucket(m)} k{k} n{n} f32 t{threads}"


def clock() -> Callable[[], float]:
    """The trial's clock: CPU time, which other processes cannot inflate (module docstring)."""
    return time.thread_time if torch.get_num_threads() == 1 else time.process_time


def trial(runs: dict[str, Callable[[], torch.Tensor]]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Time each backend's call (see the module docstring): ({backend: fastest seconds}, {backend: its last result})."""
    now = clock()
    names = list(runs)
    outs = {b: runs[b]() for b in names}  # warm-up
    best = dict.fromkeys(names, math.inf)
    start = time.perf_counter()
    rounds = 0
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and time.perf_counter() - start < BUDGET_S):
        for b in (names if rounds % 2 == 0 else names[::-1]):
            t = now()
            outs[b] = runs[b]()
            best[b] = min(best[b], now() - t)
        rounds += 1
    return best, outs


def pick(times: dict[str, float], fixed_cost_s: float = 0.0) -> str:
    """aten unless another backend is faster by MARGIN and by ``fixed_cost_s``."""
    base = times["aten"]
    other = min((b for b in times if b != "aten"), key=times.__getitem__, default=None)
    if other is not None and times[other] < base * (1 - MARGIN) - fixed_cost_s:
        return other
    return "aten"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` + '.lock' between processes (flock; none where there is no fcntl)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps the file whole
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """The valid entries of a cache file: {key: {"backend": ..., ...}}; {} when missing or corrupt."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, dict):
        return {}
    return {k: v for k, v in choices.items()
            if isinstance(k, str) and isinstance(v, dict) and v.get("backend") in BACKENDS}


class Tuner:
    """The choices of one process: in memory, read from and written to the host's cache file."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every choice and the cache location (tests; a changed ``AVFUSION_HOME``)."""
        with self._lock:
            self.choices: dict[str, str] = {}
            self.measured: list[str] = []  # keys this process timed itself
            self._path: Path | None = None
            self._info: dict[str, str] | None = None
            self._loaded = False
            self._warned = False

    @property
    def path(self) -> Path:
        if self._path is None:
            self._info = host_info()
            self._path = cache_dir() / "gemm" / f"{host_key(self._info)}.json"
        return self._path

    def _merge_file(self) -> None:
        for key, entry in read_cache(self.path).items():
            self.choices.setdefault(key, entry["backend"])  # a choice made in this process stays
        self._loaded = True

    def known(self, key: str) -> str | None:
        """The backend chosen for ``key``, if any (reads the cache file at the first call)."""
        choice = self.choices.get(key)
        if choice is None and not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._merge_file()
                choice = self.choices.get(key)
        return choice

    def decide(self, key: str, runs: dict[str, Callable[[], torch.Tensor]],
               fixed_cost_s: Callable[[], float] = lambda: 0.0) -> torch.Tensor:
        """The product for ``key`` on its chosen backend, choosing by a trial when none is known."""
        with self._lock:
            choice = self.choices.get(key)
            if choice is None:
                self._merge_file()  # another process may have decided it since
                choice = self.choices.get(key)
            if choice is not None:
                return runs[choice]()
            times, outs = trial(runs)
            choice = self._persist(key, pick(times, fixed_cost_s()), times)
            self.choices[key] = choice
            self.measured.append(key)
            return outs[choice]

    def _persist(self, key: str, choice: str, times: dict[str, float]) -> str:
        """Write ``key``'s choice to the cache, or adopt the one another process wrote first."""
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path):
                entries = read_cache(path)
                if key in entries:
                    return entries[key]["backend"]
                entries[key] = {"backend": choice, "us": {b: round(t * 1e6, 1) for b, t in times.items()},
                                "measured": time.strftime("%Y-%m-%d")}
                atomic_json(path, {"format": FORMAT, "host": self._info, "choices": dict(sorted(entries.items()))})
        except OSError as e:
            if not self._warned:
                self._warned = True
                warnings.warn(f"avfusion: cannot write the linear-product choices to {path} ({e}); they are kept "
                              f"for this process only (set AVFUSION_HOME to a writable folder)", stacklevel=3)
        return choice


TUNER = Tuner()

__all__ = ["BACKENDS", "DIRECTIONS", "TUNER", "Tuner", "cache_dir", "clock", "host_info", "host_key", "m_bucket", "pick",
           "product_key", "read_cache", "trial"]
