"""The early worker: shards run in a forked process while local Ray starts, each shard handed
out exactly once, and a shard it could not finish goes back to the queue."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from geoweave.builders.early import EarlyWorker, ShardQueue
from geoweave.builders.prepare import prepare
from geoweave.builders.recipe_files import load_recipe
from geoweave.builders.shard import run_shard
from geoweave.builders.writers import is_complete
from tests.conftest import run_cli
from tests.data.labels_fixture import write_cover
from tests.data.raster_fixture import write_rgb


def _recipe(tmp_path: Path, **execution: object) -> Path:
    recipe = {
        "name": "early",
        "imagery": [{"name": "img", "path": str(write_rgb(tmp_path / "s.tif", size=256))}],
        "labels": {"vector": [{"path": str(write_cover(tmp_path / "c.geojson", 2560))}]},
        "tiles": {"size_px": 16, "gsd_m": [10], "grid_crs": "EPSG:32610"},
        "filters": {"nodata_v1": {"max_fraction": 1.0}},
        "output": {"samples_per_shard": 4},
        "execution": {"num_cpus": 1, **execution},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_queue_hands_out_each_shard_once_and_takes_back_first() -> None:
    q = ShardQueue([3, 4, 5])
    assert [q.take(), q.take()] == [3, 4]
    q.give_back(3)
    assert [q.take(), q.take(), q.take()] == [3, 5, None]


@pytest.mark.parametrize("processes", [1, 2])
def test_early_worker_and_driver_share_the_shards_without_overlap(
    tmp_path: Path, processes: int
) -> None:
    """One early process per CPU (two here) and the driver take shards from one queue: every
    shard runs exactly once."""
    out = tmp_path / "out"
    ctx, plan, _ = prepare(load_recipe(_recipe(tmp_path)), out)
    out.mkdir()
    shards = ShardQueue(list(range(plan.num_shards)))
    worker = EarlyWorker(ctx, plan, shards, processes=processes)
    time.sleep(1.0)  # long enough for a few shards of four 16 px tiles
    early, failed = worker.stop()
    assert early and not failed
    rest = []
    while (s := shards.take()) is not None:
        rest.append(run_shard(ctx, s, plan.shard_tiles(s)).shard)
    done = [st.shard for st in early] + rest
    assert sorted(done) == list(range(plan.num_shards))  # every shard once
    assert all(st.worker and "-before-ray:" in st.worker for st in early)
    assert len({st.worker for st in early}) == processes  # each process ran shards
    assert all(is_complete(out, "early", s) for s in done)
    keys = [k for p in out.glob("*.samples.parquet") for k in pq.read_table(p)["key"].to_pylist()]
    assert len(keys) == len(set(keys)) == len(plan.load_tiles())


@pytest.mark.integration
@pytest.mark.parametrize("early_start", [True, False])
def test_build_with_and_without_the_early_worker(tmp_path: Path, early_start: bool) -> None:
    out = tmp_path / "out"
    res = run_cli("run", str(_recipe(tmp_path, early_start=early_start)), "-o", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    rows = con.execute("SELECT shard, worker FROM shards ORDER BY shard").fetchall()
    n = con.execute("SELECT count(*), count(DISTINCT key) FROM samples").fetchone()
    con.close()
    planned = pq.read_table(out / "plan.parquet").num_rows
    assert [s for s, _ in rows] == list(range(len(rows))) and n[0] == n[1] == planned
    early = [w for _, w in rows if "-before-ray:" in w]
    assert bool(early) == early_start


@pytest.mark.parametrize(
    ("cpus", "shards", "want"), [(1, 9, 1), (2, 9, 1), (4, 9, 3), (16, 9, 9), (8, 1, 1)]
)
def test_one_fewer_early_worker_than_cpus(cpus: int, shards: int, want: int) -> None:
    """Ray's own start keeps about one CPU busy, so the early workers take the others: at
    least one (a 1-CPU build's Ray starts beside it), never more than the shards."""
    from geoweave.builders.executor import early_processes

    assert early_processes(cpus, shards) == want


@pytest.mark.parametrize(
    ("cpus", "shards", "set_", "want"),
    [(1, 36, None, 8), (1, 3, None, 8), (2, 36, None, 1), (2, 144, None, 4), (4, 9000, None, 8)]
    + [(1, 36, 2, 2), (8, 36, 5, 5)],
)
def test_shards_per_task_give_several_cpus_16_tasks_each_and_one_cpu_8_shards(
    cpus: int, shards: int, set_: int | None, want: int
) -> None:
    """Several CPUs: at least 16 tasks each (balance at the end), 1 to 8 shards a task. One
    CPU needs no balance: 8 a task (each wait between tasks costs 6-17 ms). The recipe's
    ``execution.shards_per_task`` wins."""
    from geoweave.builders.executor import shards_per_task
    from geoweave.builders.recipe import ExecutionConfig

    assert shards_per_task(ExecutionConfig(shards_per_task=set_), shards, cpus) == want


@pytest.mark.parametrize(("env", "want"), [(None, 15), ("7", 7)])
def test_early_workers_run_at_the_priority_of_ray_workers(
    monkeypatch: pytest.MonkeyPatch, env: str | None, want: int
) -> None:
    """An early worker lowers its priority to Ray's worker niceness (``RAY_worker_niceness``,
    15 by default), so it cannot starve Ray's start; checked in a forked child."""
    import multiprocessing
    import os

    from geoweave.builders.early import _nice_as_ray_workers

    if env is None:
        monkeypatch.delenv("RAY_worker_niceness", raising=False)
    else:
        monkeypatch.setenv("RAY_worker_niceness", env)
    base = os.nice(0)
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()

    def child() -> None:
        _nice_as_ray_workers()
        result.put(os.nice(0))

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(10)
    assert result.get(timeout=5) == max(want, base)
    assert os.nice(0) == base  # the parent is untouched


WARM_SCRIPT = """
import json, sys
from geoweave.builders.recipe import Recipe
from geoweave.builders import worker_state as ws
recipe = Recipe.model_validate(json.loads(sys.argv[1]))
before = "pandas" in sys.modules
ws.warm_up(recipe, ())
print(json.dumps({"pandas_before": before, "pandas_after": "pandas" in sys.modules,
                  "imagery": ws._imagery.cache_info().currsize}))
"""


def test_the_warm_up_opens_what_a_first_shard_would_and_never_raises(tmp_path: Path) -> None:
    """The empty first Ray task runs ``warm_up``: the worker's sources are open and pyarrow has
    imported pandas (0.25 s) before its first shard; a missing input is left to the shard."""
    import json
    import subprocess
    import sys

    image = write_rgb(tmp_path / "scene.tif")
    recipe = {"name": "w", "imagery": [{"name": "img", "path": str(image), "scale": "none"}],
              "tiles": {"size_px": 32, "gsd_m": [10]}}  # fmt: skip

    def warm(r: dict) -> dict:
        res = subprocess.run([sys.executable, "-c", WARM_SCRIPT, json.dumps(r)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    assert warm(recipe) == {"pandas_before": False, "pandas_after": True, "imagery": 1}
    image.unlink()  # the shard will report it; the warm-up only skips what it cannot open
    assert warm(recipe)["imagery"] == 0
