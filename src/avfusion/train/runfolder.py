"""The run folder (``--out``): an exclusive lock, durable writes, and the metrics log on resume.

Lock. ``OUT/.lock`` is held with ``fcntl.flock`` for as long as a run uses the folder; it holds
the holder's pid, host and command line so that a second run is refused naming it. The kernel
releases the lock when the process dies, however it dies (SIGKILL included), so a stale lock
file never blocks anyone. Forked children (DataLoader workers) close their copy of the
descriptor at once, so the lock lives exactly as long as the process that took it. On NFS,
``flock`` is emulated with byte-range locks (Linux >= 2.6.12) and works across hosts.
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
from avfusion.utils.files import atomic_write

LOCK_NAME = ".lock"

# realpath of a locked folder -> (descriptor, nesting depth, thread that holds it). Nested
# acquisitions by the same thread (run_training, then fit) share one lock.
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


@contextlib.contextmanager
def lock_run_folder(out: str | os.PathLike, info: DistInfo = DistInfo()) -> Iterator[None]:
    """Hold ``OUT/.lock`` (rank 0 only) for the duration; refuse with a RunError naming the
    process that holds it. Creates ``OUT`` first, so an unusable folder fails here, early."""
    out = Path(out)
    error: RunError | None = None
    key = ""
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(out)
        try:
            _acquire(out, key)
        except RunError as e:
            error = e
    # Every rank learns whether rank 0 got the lock, so none trains alone.
    failed = max_over_ranks([float(error is not None)], info, _collective_device(info))[0]
    if error is not None:
        raise error
    if failed:
        raise RunError(f"{out} is in use by another run (rank 0 could not lock it)")
    try:
        yield
    finally:
        if info.is_main:
            _release(key)


def _collective_device(info: DistInfo):
    import torch
    import torch.distributed as dist

    if info.enabled and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


def _acquire(out: Path, key: str) -> None:
    me = threading.get_ident()
    with _guard:
        if key in _held:
            fd, depth, owner = _held[key]
            if owner != me:
                raise RunError(f"{out} is in use by another training run in this process")
            _held[key] = (fd, depth + 1, owner)
            return
        path = out / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _describe_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunError(f"{out} is in use by another run ({holder}); wait for it to end or use "
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


# --------------------------------------------------------------------------- durable writes

# --------------------------------------------------------------------------- metrics log

def trim_metrics(path: Path, last_step: int) -> None:
    """Keep one row per step <= ``last_step`` in a metrics.jsonl (the last one written for a step).

    A resumed run logs the steps after its checkpoint again; a kill can leave a torn last line.
    The file is rewritten atomically, and only when something changes."""
    if not path.is_file():
        return
    lines = path.read_bytes().splitlines(keepends=True)
    rows: dict[int, bytes] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, int) and step <= last_step:
            rows[step] = line if line.endswith(b"\n") else line + b"\n"
    keep = [rows[s] for s in sorted(rows)]
    if keep != lines:
        atomic_write(path, b"".join(keep))
