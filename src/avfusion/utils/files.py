"""Durable file writes, one place for all of them: a reader or a crash sees a file's old content
or its new content, never a mix (a temporary file in the same folder, fsynced, renamed over the
target, the folder fsynced)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it (errors, a full disk included, are OSErrors)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """``with atomic_file(p) as tmp: writer(tmp)``: whatever the writer puts at ``tmp`` (a library
    that writes by path: safetensors, numpy, torch.export) replaces ``p`` only once complete and
    synced; on an error ``tmp`` is removed and ``p`` is untouched. ``suffix`` for writers that
    insist on an extension."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably (see the module docstring)."""
    with atomic_file(path) as tmp:
        write_synced(tmp, data)


def atomic_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    atomic_write(path, (json.dumps(obj, indent=indent) + "\n").encode())


__all__ = ["fsync_dir", "fsync_file", "write_synced", "atomic_file", "atomic_write", "atomic_json"]
