"""geoweave's own overhead on LLM captions: against a stand-in OpenAI-compatible server with a
fixed 200 ms latency per request and no concurrency limit, captions/s of the ``llm_v1``
captioner at concurrency 1, 8 and 32 against the ideal (concurrency / 0.2 s). Target: >= 0.8x
at every level (geoweave is never the bottleneck).

Usage: ``.venv/bin/python benchmarks/llm_overhead.py``
"""

from __future__ import annotations

import http.server
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from geoweave.captioning.backends import LLMOptions
from geoweave.captioning.llm import LLMCaptioner
from geoweave.protocols import TileDescription

LATENCY_S = 0.2
REPLY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A road."}}]})


class _Slow(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(LATENCY_S)
        body = REPLY.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def measure(concurrency: int, url: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as cache:
        opts = LLMOptions(model="m", base_url=url, tasks=["short"], concurrency=concurrency,
                          cache_dir=Path(cache))  # fmt: skip
        captioner = LLMCaptioner(opts)
        tiles = [TileDescription(f"k{i}", 10.0 + i, 32) for i in range(n)]  # distinct requests
        t = time.perf_counter()
        out = captioner.caption(tiles)
        seconds = time.perf_counter() - t
    assert all(isinstance(o, list) for o in out)
    return n / seconds


def _serve(port: Any) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    port.value = server.server_address[1]
    server.serve_forever()


def main() -> None:
    # The stand-in runs in its own process: in this one it would share the GIL with the client.
    ctx = multiprocessing.get_context("spawn")
    port = ctx.Value("i", 0)
    proc = ctx.Process(target=_serve, args=(port,), daemon=True)
    proc.start()
    while not port.value:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port.value}/v1"
    print("| concurrency | captions/s | ideal | ratio | target |")
    print("|---|---|---|---|---|")
    for c in (1, 8, 32):
        rate = measure(c, url, n=max(10, c * 8))
        ideal = c / LATENCY_S
        ok = "PASS" if rate / ideal >= 0.8 else "FAIL"
        print(f"| {c} | {rate:.1f} | {ideal:.0f} | {rate / ideal:.2f} | >= 0.8 {ok} |")
    proc.terminate()


if __name__ == "__main__":
    main()
