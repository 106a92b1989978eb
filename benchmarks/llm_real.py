"""LLM captions/s against a real ``transformers serve`` (SmolLM2-135M, CPU), in one run:

1. strictly sequential requests (a bare ``urllib`` client, one at a time);
2. a bare concurrent client (a thread pool of ``urllib`` posts, ``CONCURRENCY`` in flight);
3. geoweave's ``llm_v1`` captioner (``concurrency: CONCURRENCY``, an empty response cache);
4. the same captioner rerun on its full cache (target: zero requests);
5. the in-process ``transformers`` backend on the same requests (batched, no server).

All five send the same requests (the ``caption_short_v1`` prompt over distinct tile
descriptions, greedy, ``MAX_TOKENS``). Target: geoweave >= 0.8x the bare concurrent client.

Usage: ``.venv/bin/python benchmarks/llm_real.py [N]`` (about 3 minutes on 2 cores)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from geoweave.captioning.backends import LLMOptions
from geoweave.captioning.describe import describe
from geoweave.captioning.llm import LLMCaptioner
from geoweave.protocols import TileDescription
from geoweave.record import LabelElement

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the test server (tests/llm_server.py)
from tests import llm_server

CONCURRENCY = 8
MAX_TOKENS = 48


def tiles(n: int) -> list[TileDescription]:
    """Distinct descriptions (a differently named park on each tile): no request repeats."""
    out = []
    for i in range(n):
        park = LabelElement(id=f"w{i}", source="osm", tags={"leisure": "park", "name": f"Park {i}"},
                            geom_type="Polygon", coverage_px=20.0 + 7 * i,
                            coverage_frac=(20.0 + 7 * i) / 4096, area_m2=100.0 * (20 + 7 * i),
                            length_m=0.0, position="centre", clipped=False)  # fmt: skip
        out.append(TileDescription(f"k{i}", 10.0, 64, (park,), {"built-up": 0.6, "tree": 0.4}))
    return out


def payloads(captioner: LLMCaptioner, batch: list[TileDescription]) -> list[dict[str, Any]]:
    prompt = captioner.prompts["short"]
    base = {"model": captioner.model, **captioner.params}
    return [{**base, "messages": prompt.messages(description=describe(t).to_json())} for t in batch]


def post(url: str, payload: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url + "/chat/completions", json.dumps(payload).encode(),
        {"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=600) as reply:
        return int(json.loads(reply.read())["usage"]["completion_tokens"])


def timed(f: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        srv = llm_server.start(Path(tmp) / "serve.log")
        try:
            rows = run(srv, n, Path(tmp))
        finally:
            llm_server.stop_server(srv.proc)
        rows.append(in_process(n, Path(tmp) / "local-cache"))
    bare = rows[1][1]
    print(f"{n} captions, {MAX_TOKENS} tokens max, greedy; SmolLM2-135M on CPU")
    print("| client | seconds | captions/s | vs bare concurrent | target |")
    print("|---|---|---|---|---|")
    for name, rate, seconds, note in rows:
        print(f"| {name} | {seconds:.1f} | {rate:.2f} | {rate / bare:.2f}x | {note} |")


def run(srv: llm_server.Server, n: int, tmp: Path) -> list[tuple[str, float, float, str]]:
    opts = LLMOptions(model=srv.model, base_url=srv.base_url, tasks=["short"], temperature=0,
                      max_tokens=MAX_TOKENS, concurrency=CONCURRENCY, cache_dir=tmp / "cache")  # fmt: skip
    captioner = LLMCaptioner(opts)
    batch = tiles(n)
    sent = payloads(captioner, batch)
    post(srv.base_url, sent[0])  # warm the server up
    s_seq, _ = timed(lambda: [post(srv.base_url, p) for p in sent])
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        s_bare, _ = timed(lambda: list(pool.map(lambda p: post(srv.base_url, p), sent)))
    before = srv.completions()
    s_geo, out = timed(lambda: captioner.caption(batch))
    assert all(isinstance(o, list) for o in out) and srv.completions() - before == n
    again = srv.completions()
    s_cached, _ = timed(lambda: LLMCaptioner(opts).caption(batch))
    requests = srv.completions() - again
    geo = n / s_geo
    ok = "PASS" if geo >= 0.8 * n / s_bare else "FAIL"
    return [
        ("sequential, bare", n / s_seq, s_seq, ""),
        (f"concurrent {CONCURRENCY}, bare", n / s_bare, s_bare, ""),
        (f"geoweave llm_v1, concurrency {CONCURRENCY}", geo, s_geo, f">= 0.8x {ok}"),
        (f"geoweave rerun, full cache ({requests} requests)", n / s_cached, s_cached,
         "0 requests " + ("PASS" if requests == 0 else "FAIL")),
    ]  # fmt: skip


def in_process(n: int, cache: Path) -> tuple[str, float, float, str]:
    opts = LLMOptions(backend="transformers", model_path=llm_server.MODEL_DIR, tasks=["short"],
                      temperature=0, max_tokens=MAX_TOKENS, concurrency=16, batch_size=16,
                      cache_dir=cache)  # fmt: skip
    captioner = LLMCaptioner(opts)
    captioner.caption(tiles(1))  # loads the model: not part of the rate
    seconds, _ = timed(lambda: captioner.caption(tiles(n + 1)[1:]))
    return ("in-process transformers, batch 16", n / seconds, seconds, "")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
