"""A real LLM server killed mid-shard (its own module: a ``transformers serve`` with
continuous batching holds many GB, so no other server runs beside these)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoweave.builders.prepare import prepare
from geoweave.builders.shard import run_shard
from tests import llm_server
from tests.conftest import shard_rows
from tests.test_llm import _recipe

pytestmark = pytest.mark.integration


def test_server_killed_mid_shard_then_rerun_repeats_no_answered_request(tmp_path: Path) -> None:
    """Its own server, killed once a few responses are stored: the shard fails with a clear
    error; against a new server (another port: the endpoint is not part of a request) the
    rerun sends only what had not been answered."""
    import threading
    import time

    from geoweave.errors import ShardError

    cache = tmp_path / "cache"
    first = llm_server.start(tmp_path / "first.log")
    recipe = _recipe(tmp_path / "out", first, cache)
    ctx, plan, _ = prepare(recipe, recipe.output.dir)
    recipe.output.dir.mkdir()

    def kill_after_some() -> None:
        deadline = time.time() + 120
        while len(list(cache.rglob("*.json"))) < 3 and time.time() < deadline:
            time.sleep(0.05)
        llm_server.stop_server(first.proc)

    killer = threading.Thread(target=kill_after_some)
    killer.start()
    try:
        with pytest.raises(ShardError, match="the LLM endpoint is unavailable"):
            run_shard(ctx, 0, plan.shard_tiles(0))
    finally:
        killer.join()
        llm_server.stop_server(first.proc)
    answered = len(list(cache.rglob("*.json")))
    assert answered >= 3

    second = llm_server.start(tmp_path / "second.log")
    try:
        rows = shard_rows(_recipe(tmp_path / "out", second, cache))
        stored = len(list(cache.rglob("*.json")))
        assert second.completions() == 1 + (stored - answered)  # preflight + the rest
    finally:
        llm_server.stop_server(second.proc)
    assert [r for r in rows if r["status"] == "kept"]
