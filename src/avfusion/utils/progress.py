"""Progress of long work on stderr, one rule for every command (train, prepare, validate,
predict / embed corpora, timelines).

- stderr is a terminal: a live tqdm bar (redrawn at most 10 times a second);
- stderr is not a terminal (a CI log, a batch job's file): a plain line at most every
  :data:`LOG_EVERY` seconds, ``train: 120/1000 step (12%), 3.1 step/s, loss=0.6931``, and a
  last one when the work ends if any was written; work shorter than that writes nothing;
- ``enabled=False`` (``--no-progress``, ``run.progress=false``, ranks other than 0): nothing.

``progress_bar`` always returns an object with ``update``, ``set_postfix`` and ``close`` (a
context manager too), so callers need no ``if bar is not None``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

LOG_EVERY = 30.0  # seconds between lines when stderr is not a terminal


class Progress:
    """No output (``enabled=False``); the base of the two that write."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Bar(Progress):
    """A live tqdm bar on a terminal."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                         mininterval=0.1)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self._bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        self._bar.close()


class _Lines(Progress):
    """A line every LOG_EVERY seconds, for logs (no carriage returns, no redraws)."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int) -> None:
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.start = self.last = time.monotonic()
        self.postfix = ""
        self.written = False
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= LOG_EVERY:
            self._write(now)

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed and self.written:
            self._write(time.monotonic())
        self.closed = True

    def _write(self, now: float) -> None:
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        if self.total:
            count += f" ({100 * self.n // self.total}%)"
        rate = (self.n - self.initial) / max(now - self.start, 1e-9)
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {count}, {rate:.3g} {self.unit}/s{tail}", file=sys.stderr, flush=True)
        self.last, self.written = now, True


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0) -> Progress:
    """Progress of ``total`` units (None: unknown) by the rule in the module docstring."""
    if not enabled:
        return Progress()
    kind = _Bar if getattr(sys.stderr, "isatty", lambda: False)() else _Lines
    return kind(total, desc, unit, initial)


def progress_iter(items: Iterable[T], total: int | None, desc: str, unit: str = "it",
                  enabled: bool = True) -> Iterator[T]:
    """``items``, counted on a :func:`progress_bar` as they are consumed."""
    with progress_bar(total, desc, unit, enabled) as bar:
        for item in items:
            yield item
            bar.update()


__all__ = ["LOG_EVERY", "Progress", "progress_bar", "progress_iter"]
