"""The LLM response cache: durable, shared by processes writing at once, damage-tolerant."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from geoweave.captioning.cache import Request, ResponseCache

MSGS = [{"role": "system", "content": "only listed"}, {"role": "user", "content": '{"a": 1}'}]


def _req(**change: object) -> Request:
    base: dict[str, object] = {"model": "m", "prompt": "caption_short_v1",
                               "params": {"temperature": 0.2, "max_tokens": 60}, "messages": MSGS}  # fmt: skip
    base.update(change)
    return Request.of(**base)  # type: ignore[arg-type]


def test_a_response_is_found_only_for_the_very_same_request(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    assert cache.get(_req()) is None
    cache.put(_req(), "A road.", {"completion_tokens": 3})
    assert cache.get(_req()) == "A road."
    assert _req(params={"max_tokens": 60, "temperature": 0.2}).key == _req().key  # order-free
    for other in (_req(model="m2"), _req(prompt="caption_short_v2"),
                  _req(params={"temperature": 0.3, "max_tokens": 60}),
                  _req(messages=[*MSGS[:1], {"role": "user", "content": '{"a": 2}'}])):  # fmt: skip
        assert cache.get(other) is None
    assert (cache.hits, cache.misses) == (1, 5)
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.put(_req(), "A road.")
    cache.path(_req()).write_text('{"response": "trunc')
    assert cache.get(_req()) is None and cache.damaged == 1
    cache.put(_req(), "A road.")
    assert cache.get(_req()) == "A road."


def _writer(root: str, n: int, tag: str) -> None:
    cache = ResponseCache(Path(root))
    for i in range(n):
        cache.put(_req(messages=[{"role": "user", "content": str(i)}]), f"answer {i} from {tag}")


def test_processes_writing_the_same_keys_at_once_leave_whole_entries(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 60, t)) for t in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(tmp_path)
    for i in range(60):
        text = cache.get(_req(messages=[{"role": "user", "content": str(i)}]))
        assert text is not None and text.startswith(f"answer {i} from ")
    assert cache.damaged == 0 and not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_sigkill_while_writing_loses_no_stored_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_writer, args=(str(tmp_path), 100_000, "k"))
    proc.start()
    deadline = time.time() + 60
    while len(list(tmp_path.rglob("*.json"))) < 50 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    cache = ResponseCache(tmp_path)
    stored = [p for p in tmp_path.rglob("*.json") if ".tmp-" not in p.name]
    assert len(stored) >= 50
    found = [
        cache.get(_req(messages=[{"role": "user", "content": str(i)}])) for i in range(len(stored))
    ]
    assert cache.damaged == 0 and all(t == f"answer {i} from k" for i, t in enumerate(found[:40]))
