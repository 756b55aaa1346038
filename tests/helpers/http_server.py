"""A local HTTP file server for the download and zoo tests: 127.0.0.1 only, port chosen by the OS.

It serves ``files`` (URL path -> bytes) with single open-ended Range requests (``bytes=N-``, what
``avfusion.utils.download`` sends), records every request, and can misbehave on purpose:
``truncate_at`` closes the connection after that many bytes of the file (an interrupted
transfer: the headers still announce the whole length), ``ignore_range`` answers 200 with the
whole file to a Range request.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, host: str, port: int) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.truncate_at: int | None = None
        self.ignore_range = False
        self.base = f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server.owner
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not srv.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        self.end_headers()
        body = data[start:]
        if srv.truncate_at is not None:
            body = body[:max(0, srv.truncate_at - start)]
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass


class _Server(ThreadingHTTPServer):
    owner: FileServer
    daemon_threads = True


@contextmanager
def serve_files() -> Iterator[FileServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    host, port = httpd.server_address[:2]
    httpd.owner = FileServer(str(host), int(port))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.owner
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
