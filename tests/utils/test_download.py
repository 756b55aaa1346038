"""avfusion.utils.download against a local server (127.0.0.1): resume, servers that ignore Range,
a part that is already whole, refusals, file:// mirrors."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from avfusion.utils.download import DownloadError, FileRecord, IntegrityError, check_file, download
from helpers.http_server import serve_files

DATA = os.urandom(3 * (1 << 20) + 12345)  # more than one chunk
RECORD = FileRecord(len(DATA), hashlib.sha256(DATA).hexdigest())


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_download_then_resume_after_a_cut(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with serve_files() as srv:
        srv.files["/f.bin"] = DATA
        srv.truncate_at = 1_000_000
        with pytest.raises(DownloadError, match="stopped at 1,000,000 of"):
            download(srv.url("/f.bin"), dest, progress=False)
        assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == 1_000_000
        srv.truncate_at = None
        assert download(srv.url("/f.bin"), dest, progress=False) == RECORD
        assert srv.requests[-1] == ("/f.bin", "bytes=1000000-")
    assert dest.read_bytes() == DATA and not (tmp_path / "f.bin.part").exists()
    check_file(dest, RECORD)


def test_a_server_that_ignores_range_restarts_cleanly(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with serve_files() as srv:
        srv.files["/f.bin"] = DATA
        srv.truncate_at = 100_000
        with pytest.raises(DownloadError):
            download(srv.url("/f.bin"), dest, progress=False)
        srv.truncate_at, srv.ignore_range = None, True
        assert download(srv.url("/f.bin"), dest, progress=False) == RECORD  # 200: written from byte 0
    assert dest.read_bytes() == DATA


def test_a_whole_part_is_finished_without_fetching_it_again(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with serve_files() as srv:
        srv.files["/f.bin"] = DATA
        srv.truncate_at = len(DATA)  # all bytes arrive ... but say the process died before the rename
        download(srv.url("/f.bin"), dest, progress=False)
        os.replace(dest, tmp_path / "f.bin.part")
        (tmp_path / "f.bin.part.json").write_text('{"url": "%s"}' % srv.url("/f.bin"))
        assert download(srv.url("/f.bin"), dest, progress=False) == RECORD  # 416 -> the part is the file
        assert srv.requests[-1][1] == f"bytes={len(DATA)}-"


def test_a_wrong_file_is_refused_and_its_part_removed(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with serve_files() as srv:
        srv.files["/f.bin"] = DATA[:-1] + b"x"
        with pytest.raises(IntegrityError, match="sha256 .* instead of"):
            download(srv.url("/f.bin"), dest, expected=RECORD, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == []


def test_http_errors_and_unreachable_hosts_are_one_line(tmp_path: Path) -> None:
    with serve_files() as srv:
        with pytest.raises(DownloadError, match=r"cannot download http://127\.0\.0\.1:\d+/nope: HTTP 404"):
            download(srv.url("/nope"), tmp_path / "x", progress=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=f"cannot download http://127.0.0.1:{port}/x"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", progress=False)


def test_a_file_url_mirror(tmp_path: Path) -> None:
    src = tmp_path / "mirror" / "f.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    assert download(src.as_uri(), tmp_path / "f.bin", expected=RECORD, progress=False) == RECORD


def test_check_file_names_truncated_and_changed_files(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(DATA[:-1])
    with pytest.raises(IntegrityError, match=f"{p} has .* bytes but .* recorded for it \\(truncated or changed\\)"):
        check_file(p, RECORD)
    p.write_bytes(DATA[:-1] + b"\0" if DATA[-1] else DATA[:-1] + b"\1")
    with pytest.raises(IntegrityError, match=f"{p} has sha256 .*changed"):
        check_file(p, RECORD)
