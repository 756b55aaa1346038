"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, stop cleanly.

The first SIGINT or SIGTERM only records a request; the loop sees it at the end of the current
optimizer step (under DDP all ranks agree on it through one all-reduce), saves a checkpoint and
raises :class:`TrainingInterrupted`. A second signal interrupts at once (KeyboardInterrupt): the
checkpoint protocol makes even that safe. DataLoader workers ignore both signals
(:func:`worker_ignore_signals`): a terminal sends Ctrl-C to the whole process group, and a worker
that died of it would turn a clean stop into a "worker exited unexpectedly" error.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint; ``exit_status`` is 128 + signal."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint saved"
        super().__init__(f"interrupted at step {step}; {where}; run the same command to resume")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return str(self.args[0])


class StopRequest:
    """While active (``with``), the first SIGINT / SIGTERM sets :attr:`signum` instead of raising.

    Only the main thread can install handlers; elsewhere (or with ``enabled=False``) this is inert.
    A signal the caller ignores (``nohup``, a background job's SIGINT) stays ignored."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.signum = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # asked twice: stop now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum


def worker_ignore_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the main process alone handles SIGINT / SIGTERM."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _kill_workers_left() -> None:
    """At exit, multiprocessing terminates (SIGTERM) and then joins its daemonic children, which
    DataLoader workers are. Workers normally stop when their loader is dropped, but after an error
    the loader can outlive the program (its traceback holds it); a worker that ignores SIGTERM
    would then never be joined, and the program would never exit. Kill those instead (after
    taking down torch's SIGCHLD handler, which would report each as a crash)."""
    left = [p for p in multiprocessing.active_children() if p.daemon]
    if left and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for p in left:
        p.kill()


_exit_hook = False


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Block SIGINT / SIGTERM in this thread while DataLoader workers are forked: a child inherits
    the mask, so none can die of a signal before :func:`worker_ignore_signals` runs in it. A signal
    that arrives meanwhile is delivered when the block ends."""
    global _exit_hook
    if not _exit_hook:  # registered after multiprocessing's own exit hook, so it runs before it
        atexit.register(_kill_workers_left)
        _exit_hook = True
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
