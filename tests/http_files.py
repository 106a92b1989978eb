"""A stand-in for remote object storage: a folder served over HTTP on 127.0.0.1 with byte-range
requests (what GDAL's /vsicurl/ reads COG windows with), counting what it served; ``fail``
makes the next requests answer HTTP 503, ``fail_paths`` those paths always."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
from functools import partial
from pathlib import Path
from typing import Self

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: Files

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the reader had enough
            self._get()

    def _get(self) -> None:
        self.server.requests += 1
        if self.server.fail or self.path in self.server.fail_paths:
            self.server.fail = max(0, self.server.fail - 1)
            self.send_error(503, "stand-in fault")
            return
        path = Path(self.translate_path(self.path))
        m = RANGE.fullmatch(self.headers.get("Range", ""))
        if not path.is_file() or m is None:
            super().do_GET()
            return
        size = path.stat().st_size
        start, end = int(m.group(1)), int(m.group(2) or size - 1)
        end = min(end, size - 1)
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.server.bytes += len(body)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer(http.server.ThreadingHTTPServer):
    """A stand-in server on 127.0.0.1 at a free port, served from a daemon thread."""

    daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Self:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


class Files(LoopbackServer):
    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(folder)))
        self.requests = self.bytes = self.fail = 0
        self.fail_paths: set[str] = set()  # these paths always answer 503
