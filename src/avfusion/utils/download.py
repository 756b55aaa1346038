"""Downloading one file over HTTP(S) (or file://), resumably and atomically.

``download(url, dest)`` streams into ``dest.part`` (a progress bar on stderr when it is a
terminal), hashing while it writes, and renames the part over ``dest`` only once it is complete
and its size (and sha256, when one is expected) is right. An interrupted or short transfer leaves
only ``dest.part``, which the next call resumes with an HTTP Range request (If-Range keeps a
server-side change from being spliced onto old bytes). Nothing here retries: a failure is one
exception naming the URL, and running again resumes.

Standard library only (``urllib.request``); one process at a time per ``dest`` (an advisory lock
beside it), so ranks of a torchrun job wait for each other instead of interleaving writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from avfusion.errors import InputError, UserError
from avfusion.utils.files import atomic_json, fsync_dir

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(UserError, ConnectionError):
    """The server could not be reached or refused the request; running again resumes."""


class IntegrityError(InputError):
    """A file whose size or sha256 is not the one expected (truncated, changed or a different file)."""


@dataclass(frozen=True)
class FileRecord:
    """What a file was when it came in: checked again on every later use."""

    size: int
    sha256: str


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_file(path: str | os.PathLike, expected: FileRecord, fix: str = "delete it to download it again") -> None:
    """Raise IntegrityError naming ``path`` (and saying ``fix``) unless its size and sha256 are
    ``expected``'s; the size first, so a truncated file is named without reading it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing; {fix}")
    size = p.stat().st_size
    if size != expected.size:
        raise IntegrityError(f"{p} has {size:,} bytes but {expected.size:,} were recorded for it (truncated or "
                             f"changed); {fix}")
    digest = sha256_file(p)
    if digest != expected.sha256:
        raise IntegrityError(f"{p} has sha256 {digest} but {expected.sha256} was recorded for it (changed); {fix}")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _progress(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only on a terminal, so logs and tests stay clean
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=None if enabled else True, leave=False)


def _validators(headers: Any) -> dict[str, str]:
    """ETag / Last-Modified of a response: what If-Range needs to resume the same file."""
    return {k: v for k, v in (("etag", headers.get("ETag")), ("last_modified", headers.get("Last-Modified"))) if v}


def _open(url: str, start: int, meta: dict[str, str], timeout: float) -> Any:
    headers = {"User-Agent": "avfusion", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if meta.get("etag") or meta.get("last_modified"):
            headers["If-Range"] = meta.get("etag") or meta["last_modified"]
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def download(url: str, dest: str | os.PathLike, *, expected: FileRecord | None = None, progress: bool = True,
             timeout: float = 60.0) -> FileRecord:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); returns the file's size and sha256.

    ``expected``: the size / sha256 the file must have (a pinned release); a mismatch removes the
    part (resuming a wrong file cannot fix it) and raises IntegrityError. Without it, the size the
    server announced is still checked."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part_meta = dest.with_name(dest.name + ".part.json")
    with file_lock(dest.with_name(dest.name + ".lock")):
        record = _fetch(url, part, part_meta, timeout, progress, dest.name)
        if expected is not None and record != expected:
            with contextlib.suppress(OSError):
                part.unlink()
                part_meta.unlink()
            what = (f"{record.size:,} bytes instead of {expected.size:,}" if record.size != expected.size
                    else f"sha256 {record.sha256} instead of {expected.sha256}")
            raise IntegrityError(f"downloaded {url} has {what}: not the expected file (the partial download "
                                 "was removed)")
        os.replace(part, dest)
        fsync_dir(dest.parent)
        with contextlib.suppress(OSError):
            part_meta.unlink()
        return record


def _fetch(url: str, part: Path, part_meta: Path, timeout: float, progress: bool, name: str) -> FileRecord:
    """Bring ``part`` to the whole file; returns its size and sha256."""
    meta: dict[str, str] = {}
    if part.is_file() and part_meta.is_file():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(part_meta.read_text())
    if meta.get("url") != url:  # a part from another URL (or without a record) is not resumed
        meta = {}
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    start = part.stat().st_size if part.is_file() else 0
    try:
        resp = _open(url, start, meta, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the range starts at or past the end: the part may be whole
            total = _total_from_416(e.headers)
            if total == start:
                return FileRecord(start, sha256_file(part))
            part.unlink()
            return _fetch(url, part, part_meta, timeout, progress, name)
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"cannot download {url}: {reason}" + (f" ({start:,} bytes kept in {part}; run again "
                                                                     "to resume)" if start else "")) from None
    with resp:
        status = getattr(resp, "status", None) or 200
        headers = resp.headers
        total: int | None
        if status == 206:
            m = _CONTENT_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
            if not m or int(m.group(1)) != start:
                raise DownloadError(f"cannot resume {url}: the server answered range {headers.get('Content-Range')!r} "
                                    f"to a request from byte {start}; delete {part} to start over")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:  # 200: the whole file (a server that ignores Range, a changed file under If-Range, file://)
            start = 0
            length = headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        meta = {"url": url, **_validators(headers)}
        if total is not None:
            meta["size"] = str(total)
        atomic_json(part_meta, meta)
        h = hashlib.sha256()
        if start:
            with open(part, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
        size = start
        with open(part, mode) as out, _progress(total, start, name, progress) as bar:
            size, dropped = _stream(resp, out, h, bar, size)
            out.flush()
            os.fsync(out.fileno())
    # A dropped connection is refused even when the server announced no length (chunked transfer).
    if dropped is not None or (total is not None and size != total):
        of = f" of {total:,}" if total is not None else ""
        why = f": {dropped}" if dropped else ""
        raise DownloadError(f"download of {url} stopped at {size:,}{of} bytes{why} ({part} kept; run again to "
                            "resume)")
    return FileRecord(size, h.hexdigest())


def _stream(resp: Any, out: IO[bytes], h: Any, bar: Any, size: int) -> tuple[int, str | None]:
    """Copy the body to ``out``; returns (bytes now in the part, why the connection dropped or None)."""
    while True:
        try:
            block = resp.read(CHUNK)
        except (http.client.IncompleteRead, OSError) as e:  # the connection dropped: keep what came
            partial = getattr(e, "partial", b"")
            if partial:
                out.write(partial)
                h.update(partial)
                size += len(partial)
            return size, type(e).__name__
        if not block:
            return size, None
        out.write(block)
        h.update(block)
        size += len(block)
        bar.update(len(block))


def _total_from_416(headers: Any) -> int | None:
    m = re.fullmatch(r"bytes \*/(\d+)", (headers.get("Content-Range") or "").strip()) if headers else None
    return int(m.group(1)) if m else None


__all__ = ["DownloadError", "FileRecord", "IntegrityError", "check_file", "download", "file_lock", "sha256_file"]
