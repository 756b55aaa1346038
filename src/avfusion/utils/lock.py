"""The lock of a folder a run writes (train's ``--out``, prepare's ``--out``, a corpus run's
``OUT.parts``): one file name, one message, one behaviour for every command.

``FOLDER/.lock`` is held with ``fcntl.flock`` for as long as a run uses the folder; it holds the
holder's pid, host, start time and command line, so that a second run is refused in one line
naming it (a RunError). The kernel releases the lock when the process dies, however it dies
(SIGKILL included), so a stale lock file never blocks anyone. Forked children (DataLoader
workers, prepare's processes) close their copy of the descriptor at once, so the lock lives
exactly as long as the process that took it: a child that outlives its parent's release does not
keep the folder locked. Nested acquisitions by one thread (run_training, then fit) share one
lock; another thread of the same process is refused. On NFS, ``flock`` is emulated with
byte-range locks (Linux >= 2.6.12) and works across hosts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from avfusion.errors import RunError
from avfusion.utils.distributed import DistInfo, max_over_ranks

LOCK_NAME = ".lock"

# realpath of a locked folder -> (descriptor, nesting depth, thread that holds it).
_held: dict[str, tuple[int, int, int]] = {}
_guard = threading.Lock()


def _forget_locks_in_child() -> None:
    """After fork: drop the child's copies of the lock descriptors (closing a copy does not
    release the parent's lock; only the parent's own close or death does)."""
    global _guard
    _guard = threading.Lock()  # another thread may have held it at the fork
    for fd, _, _ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


class FolderLock:
    """A held ``FOLDER/.lock``; ``close()`` (or leaving its ``with``) releases it, once."""

    def __init__(self, key: str) -> None:
        self._key: str | None = key

    def close(self) -> None:
        if self._key is not None:
            _release(self._key)
            self._key = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold_folder(folder: str | os.PathLike, label: str | None = None) -> FolderLock:
    """Lock ``folder`` (created if needed) for this process, or raise a RunError naming the holder;
    ``label`` is how the message names what is in use (default: the folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    _acquire(folder, key, label or str(folder))
    return FolderLock(key)


@contextlib.contextmanager
def lock_run_folder(out: str | os.PathLike, info: DistInfo = DistInfo()) -> Iterator[None]:
    """Hold ``OUT/.lock`` (rank 0 only) for the duration, every rank learning whether rank 0 got
    it; creates ``OUT`` first, so an unusable folder fails here, early."""
    out = Path(out)
    error: RunError | None = None
    lock: FolderLock | None = None
    if info.is_main:
        try:
            lock = hold_folder(out)
        except RunError as e:
            error = e
    # Every rank learns whether rank 0 got the lock, so none works alone.
    failed = max_over_ranks([float(error is not None)], info, _collective_device(info))[0]
    if error is not None:
        raise error
    if failed:
        raise RunError(f"{out} is in use by another run (rank 0 could not lock it)")
    try:
        yield
    finally:
        if lock is not None:
            lock.close()


def _collective_device(info: DistInfo):  # type: ignore[no-untyped-def]
    import torch
    import torch.distributed as dist

    if info.enabled and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


def _acquire(folder: Path, key: str, label: str) -> None:
    me = threading.get_ident()
    with _guard:
        if key in _held:
            fd, depth, owner = _held[key]
            if owner != me:
                raise RunError(f"{label} is in use by another run in this process")
            _held[key] = (fd, depth + 1, owner)
            return
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _describe_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunError(f"{label} is in use by another run ({holder}); wait for it to end or use "
                               "another --out") from None
            raise
        try:
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        _held[key] = (fd, 1, me)


def _release(key: str) -> None:
    with _guard:
        if key not in _held:  # a forked child: its copy was closed at the fork, the lock is the parent's
            return
        fd, depth, owner = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1, owner)
            return
        del _held[key]
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # still locked here: nobody reads a half-cleared file
    os.close(fd)  # releases the lock


def _describe_holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {h['pid']} on {h['host']}, started {h['started']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is starting up"


__all__ = ["LOCK_NAME", "FolderLock", "hold_folder", "lock_run_folder"]
