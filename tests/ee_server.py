"""A stand-in Earth Engine API on 127.0.0.1 for the real ``earthengine-api`` client: the
discovery document, the algorithm list, an OAuth token endpoint (a service account key's
``token_uri`` points here), ``value:compute`` and ``image:computePixels`` (real pixels of the
Helsinki Sentinel-2 sample, ``tests/ee_eval.py``, as NPY or GeoTIFF), with faults on demand.

Faults of ``computePixels``: ``faults`` (a list, one taken per request: ``"429"``, ``"503"``,
``"stall"``) and ``fault_at`` (tile origin ``(translateX, translateY)`` -> fault, on every
request for that tile). A 429 carries ``Retry-After: retry_after``; a stall sleeps
``stall_s`` before answering (longer than the client's deadline). Every answer waits
``delay_s`` first; ``max_in_flight`` is the most requests served at once.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from tests.ee_eval import Catalogue, EvalError, Evaluator, Grid, Img
from tests.http_files import LoopbackServer

DATA = Path(__file__).parent / "data"
TOKEN = "stand-in-access-token"
PROJECT = "geoweave-stand-in"
FORMATS = {"NPY", "GEO_TIFF"}


def discovery(url: str) -> bytes:
    """The ``v1`` discovery document: the methods the client uses, at this server's URL."""
    doc = json.loads((DATA / "ee_discovery.json").read_text())
    doc.update(rootUrl=f"{url}/", baseUrl=f"{url}/")
    return json.dumps(doc).encode()


def _error(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


SENT = object()  # what _evaluate returns once it has answered with an error


class _Handler(http.server.BaseHTTPRequestHandler):
    server: EarthEngineStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json", **head: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in head.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, body: Any, **head: str) -> None:
        self._send(code, json.dumps(body).encode(), **head)

    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            path = self.path.split("?")[0]
            self.server.paths[path] += 1
            if path == "/$discovery/rest":
                self._send(200, discovery(self.server.url))
            elif not self._authorised():
                return
            elif path == f"/v1/projects/{PROJECT}/algorithms":
                self._send(200, (DATA / "ee_algorithms.json").read_bytes())
            else:
                self._json(403, _error(403, "Caller does not have required permission to use "
                                       "project", "PERMISSION_DENIED"))  # fmt: skip

    def do_POST(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            path = self.path.split("?")[0]
            self.server.paths[path] += 1
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if path == "/token":
                self._token()
            elif not self._authorised():
                return
            elif path == f"/v1/projects/{PROJECT}/value:compute":
                self._value(json.loads(body))
            elif path == f"/v1/projects/{PROJECT}/image:computePixels":
                self._pixels(json.loads(body))
            else:
                self._json(403, _error(403, f"{path}: not a project of this server",
                                       "PERMISSION_DENIED"))  # fmt: skip

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self._json(401, _error(401, "Request had invalid authentication credentials.",
                               "UNAUTHENTICATED"))  # fmt: skip
        return False

    def _token(self) -> None:
        """The JWT-bearer grant of a service account key: a token, unless told to refuse."""
        if self.server.refuse_tokens:
            self._json(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            )
        else:
            self._json(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"})

    def _evaluate(
        self, expression: Any, grid: Grid | None, finish: Callable[[Any], Any] = lambda r: r
    ) -> Any:
        """``finish`` of the expression's value (an ``Img`` on ``grid``), or ``SENT`` once an
        error is answered: 400 for what Earth Engine refuses, 500 for a gap in the stand-in
        (said, so the connection is not just dropped)."""
        try:
            return finish(Evaluator(self.server.catalogue, expression, grid).run())
        except EvalError as e:
            self._json(400, _error(400, str(e), "INVALID_ARGUMENT"))
        except Exception as e:
            self._json(500, _error(500, f"stand-in: {type(e).__name__}: {e}", "INTERNAL"))
        return SENT

    def _value(self, body: dict[str, Any]) -> None:
        self.server.value_requests.append(body["expression"])
        result = self._evaluate(body["expression"], None)
        if result is not SENT:
            self._json(200, {"result": result})

    def _pixels(self, body: dict[str, Any]) -> None:
        srv = self.server
        t = body["grid"]["affineTransform"]
        where = (t["translateX"], t["translateY"])
        with srv.lock:
            srv.pixel_requests.append(where)
            fault = srv.fault_at.get(where) or (srv.faults.pop(0) if srv.faults else None)
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            self._answer_pixels(body, fault)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _answer_pixels(self, body: dict[str, Any], fault: str | None) -> None:
        srv = self.server
        time.sleep(srv.delay_s)
        if fault == "stall":
            time.sleep(srv.stall_s)
        elif fault == "429":
            self._json(429, _error(429, "Too many concurrent aggregations.", "RESOURCE_EXHAUSTED"),
                       Retry_After=f"{srv.retry_after:g}")  # fmt: skip
            return
        elif fault:
            self._json(int(fault), _error(int(fault), "stand-in fault", "UNAVAILABLE"))
            return
        if body.get("fileFormat") not in FORMATS:
            self._json(400, _error(400, f"fileFormat {body.get('fileFormat')}", "INVALID_ARGUMENT"))
            return
        srv.expressions.append(body["expression"])
        grid = Grid.of(body["grid"])
        got = self._evaluate(body["expression"], grid, lambda img: (img, img.on_grid()[0]))
        if got is SENT:
            return
        img, data = got
        data = np.broadcast_to(data, (len(img.names), grid.height, grid.width))
        self._send(200, encode(img, data, grid, body["fileFormat"]), "application/octet-stream")


def encode(img: Img, data: np.ndarray, grid: Grid, file_format: str) -> bytes:
    """Pixels as Earth Engine returns them: NPY of a structured array (a field per band) or a
    GeoTIFF on the grid."""
    dtype = np.dtype(img.dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        data = np.clip(np.round(data), info.min, info.max)
    data = data.astype(dtype)
    buf = io.BytesIO()
    if file_format == "NPY":
        out = np.empty((grid.height, grid.width), dtype=[(n, dtype) for n in img.names])
        for i, n in enumerate(img.names):
            out[n] = data[i]
        np.save(buf, out)
        return buf.getvalue()
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height,
               "count": data.shape[0], "dtype": dtype.name, "crs": grid.crs,
               "transform": grid.transform}  # fmt: skip
    with rasterio.MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(data)
        return bytes(mem.read())


class EarthEngineStandIn(LoopbackServer):
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.catalogue = Catalogue()
        self.lock = threading.Lock()
        self.paths: Counter[str] = Counter()
        self.value_requests: list[Any] = []
        self.pixel_requests: list[tuple[float, float]] = []
        self.expressions: list[Any] = []
        self.connections: set[Any] = set()
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.faults: list[str] = []
        self.fault_at: dict[tuple[float, float], str] = {}
        self.stall_s, self.retry_after, self.delay_s, self.refuse_tokens = 3.0, 0.05, 0.0, False
        deadline = time.monotonic() + 10  # a stalled answer of the last test may still sleep
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.max_in_flight = 0
        self.pixel_requests.clear()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop listening and drop the open (keep-alive) connections: the next request is
        refused."""
        self.shutdown()
        self.server_close()
        with self.lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def service_account(self, path: Path) -> Path:
        """A service account key whose token endpoint is this server (a fresh RSA key)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
        path.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "private_key_id": "stand-in",
            "private_key": pem, "client_email": f"builder@{PROJECT}.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": f"{self.url}/token",
        }))  # fmt: skip
        return path
