"""Faults between geoweave and an LLM endpoint, against a stand-in HTTP server on 127.0.0.1
that the test scripts (429s, malformed replies, stalls) and a closed port. The real client
code (``captioning/openai_client.py``, ``llm.py``) talks to it over HTTP."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geoweave.captioning.backends import LLMOptions
from geoweave.captioning.llm import LLMCaptioner
from geoweave.errors import ShardError
from geoweave.protocols import TileDescription
from tests.conftest import free_port

GOOD = {"choices": [{"message": {"role": "assistant", "content": "A road."}}], "usage": {}}
QA = [
    {"question": "Is there a road?", "answer": "Yes."},
    {"question": "Any lake?", "answer": "No."},
]
QA_REPLY = {"choices": [{"message": {"role": "assistant",
                                     "content": "```json\n" + json.dumps(QA) + "\n```"}}]}  # fmt: skip


class StandIn(http.server.ThreadingHTTPServer):
    """Answers POSTs from a script: each item is 'ok', '429', '500', 'garbage' or 'stall';
    the last item repeats. Counts what it received."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script, self.received = script, 0
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            self.received += 1
            return self.script[min(self.received - 1, len(self.script) - 1)]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: StandIn

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        what = self.server.next()
        if what == "stall":
            time.sleep(3)
        code, body = {"ok": (200, json.dumps(GOOD)), "429": (429, "slow down"),
                      "500": (500, "oops"), "garbage": (200, "<html>not json"),
                      "stall": (200, json.dumps(GOOD)), "qa": (200, json.dumps(QA_REPLY))}[what]  # fmt: skip
        self.send_response(code)
        if code == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.fixture
def stand_in(request: pytest.FixtureRequest) -> Iterator[StandIn]:
    srv = StandIn(request.param)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()


def _captioner(url: str, tmp_path: Path, **opts: object) -> LLMCaptioner:
    options = LLMOptions(model="m", base_url=url, tasks=["short"], retries=2, timeout_s=1,
                         cache_dir=tmp_path / "cache", **opts)  # type: ignore[arg-type]  # fmt: skip
    c = LLMCaptioner(options)
    c.backend.endpoint = dataclasses.replace(c.backend.endpoint, backoff_s=0.01)  # type: ignore[attr-defined]
    return c


TILES = [TileDescription(f"k{i}", 10.0 * (i + 1), 32) for i in range(2)]  # unlike requests


@pytest.mark.parametrize("stand_in", [["429", "500", "ok"]], indirect=True)
def test_stand_in_429_and_5xx_are_retried_then_succeed(stand_in: StandIn, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    out = _captioner(url, tmp_path, concurrency=1).caption(TILES)
    assert [[c["text"] for c in caps] for caps in out] == [["A road."], ["A road."]]  # type: ignore[union-attr]
    assert stand_in.received == 4  # two faults, then one answer per tile


@pytest.mark.parametrize("stand_in", [["garbage"], ["stall"], ["500"]], indirect=True)
def test_stand_in_malformed_stalled_or_failing_replies_fail_each_tile(
    stand_in: StandIn, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    out = _captioner(url, tmp_path).caption(TILES)
    assert all(isinstance(o, Exception) and "caption request failed" in str(o) for o in out)
    assert stand_in.received == 3 * len(TILES)  # 1 + retries per request, then recorded
    assert not list((tmp_path / "cache").rglob("*.json"))  # nothing cached


def test_a_server_that_is_down_fails_the_shard_for_a_later_retry(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(ShardError, match="the LLM endpoint is unavailable"):
        _captioner(f"http://127.0.0.1:{port}/v1", tmp_path).caption(TILES)


def test_parse_pairs_takes_a_json_list_of_question_answer_objects() -> None:
    from geoweave.captioning.llm_qa import parse_pairs

    assert parse_pairs('Sure! [{"question": " Is  it?", "answer": "Yes"}] hope', 4) == [
        ("Is it?", "Yes")
    ]
    for bad in ("no list", "[]", '[{"question": "q"}]', '[{"question": "", "answer": "a"}]', "[1]"):
        with pytest.raises(ValueError):
            parse_pairs(bad, 4)


def _qa(url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from geoweave.captioning.llm_qa import LLMQAOptions, LLMQuestions

    q = LLMQuestions(LLMQAOptions(model="m", base_url=url, per_sample=2, retries=0, timeout_s=2,
                                  cache_dir=tmp_path / "cache"))  # fmt: skip
    return q


@pytest.mark.parametrize("stand_in", [["ok", "qa"]], indirect=True)  # prose, then JSON
def test_stand_in_invalid_qa_json_is_asked_again_with_another_seed(
    stand_in: StandIn, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    (pairs,) = _qa(url, tmp_path).questions(TILES[:1])
    assert [(p["question"], p["answer"]) for p in pairs] == [
        (x["question"], x["answer"]) for x in QA
    ]  # type: ignore[index]
    assert all(p["kind"] == "llm" and p["generator"] == "llm_qa_v1" and not p["verified"]
               and p["prompt_version"] == "qa_v1" for p in pairs)  # type: ignore[index]  # fmt: skip
    assert stand_in.received == 2


@pytest.mark.parametrize("stand_in", [["ok"]], indirect=True)
def test_stand_in_qa_never_valid_falls_back_to_template_qa_and_says_why(
    stand_in: StandIn, tmp_path: Path
) -> None:
    from geoweave.captioning.questions import TemplateQA, TemplateQAOptions

    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    (pairs,) = _qa(url, tmp_path).questions(TILES[:1])
    expected = TemplateQA(TemplateQAOptions(per_sample=2)).questions_one(TILES[0])
    assert [p["question"] for p in pairs] == [p["question"] for p in expected]  # type: ignore[index]
    assert all(p["note"].startswith("llm_qa_v1: no valid JSON after 3 attempts") for p in pairs)  # type: ignore[index]
    assert stand_in.received == 3


@pytest.mark.parametrize("stand_in", [["ok"]], indirect=True)
def test_stand_in_identical_requests_of_a_batch_are_sent_once(
    stand_in: StandIn, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    same = [TileDescription(f"k{i}", 10.0, 32) for i in range(6)]  # one description, six tiles
    out = _captioner(url, tmp_path, concurrency=6).caption(same)
    assert stand_in.received == 1 and len({o[0]["text"] for o in out}) == 1  # type: ignore[index]


FOREST = [TileDescription("f0", 10.0, 32, landcover={"forest": 0.7, "grassland": 0.3})]


def test_fallback_templates_when_the_server_is_down_gives_template_text_with_a_note(
    tmp_path: Path,
) -> None:
    """``fallback: templates``: the shard is not failed; each tile gets the template captions
    and template QA it would have had with ``template_v1``, each saying why."""
    from geoweave.captioning.llm_qa import LLMQAOptions, LLMQuestions
    from geoweave.captioning.questions import TemplateQA, TemplateQAOptions
    from geoweave.captioning.templates import TemplateCaptioner

    url = f"http://127.0.0.1:{free_port()}/v1"
    (caps,) = _captioner(url, tmp_path, fallback="templates").caption(FOREST)
    assert [c["text"] for c in caps] == [  # type: ignore[union-attr]
        c["text"] for c in TemplateCaptioner().caption_one(FOREST[0])
    ]
    for c in caps:  # type: ignore[union-attr]
        assert c["captioner"] == "template_v1"
        assert c["note"].startswith("llm_v1 failed (LLMError: the LLM endpoint is unavailable")
    q = LLMQuestions(LLMQAOptions(model="m", base_url=url, per_sample=2, retries=0,
                                  timeout_s=2, cache_dir=tmp_path / "c", fallback="templates"))  # fmt: skip
    (pairs,) = q.questions(FOREST)
    expected = TemplateQA(TemplateQAOptions(per_sample=2)).questions_one(FOREST[0])
    assert [p["question"] for p in pairs] == [p["question"] for p in expected]  # type: ignore[index]
    assert all(p["note"].startswith("llm_qa_v1 failed") for p in pairs)  # type: ignore[index]


@pytest.mark.parametrize("stand_in", [["500"]], indirect=True)
def test_fallback_templates_replaces_only_the_tiles_whose_requests_failed(
    stand_in: StandIn, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    (caps,) = _captioner(url, tmp_path, fallback="templates").caption(FOREST)
    assert caps and all(  # type: ignore[union-attr]
        c["captioner"] == "template_v1" and "HTTP 500" in c["note"]
        for c in caps  # type: ignore[union-attr]
    )
