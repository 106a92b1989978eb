"""Faults: one bad tile is rejected with its error and its shard completes; a lost worker is
retried per shard, then recorded as failed; a deterministic shard fault is not retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest
import shapely
import yaml

from tests.conftest import REPO, run_cli
from tests.data.labels_fixture import write_cover
from tests.data.raster_fixture import ORIGIN, write_cog_with_bad_block, write_rgb

pytestmark = pytest.mark.integration
PLUGIN = REPO / "tests" / "data" / "plugins" / "faulty.py"
RELAXED = {"min_labels_v1": {"min_labels": 0}, "nodata_v1": {"max_fraction": 1.0}}


def _recipe(tmp_path: Path, imagery: dict[str, Any], **extra: Any) -> Path:
    cover = write_cover(tmp_path / "cover.geojson", 10240)  # every tile gets a caption
    recipe = {
        "labels": {"vector": [{"path": str(cover)}]},
        "name": "dmg",
        "imagery": [imagery],
        "tiles": {"size_px": 64, "gsd_m": [10], "grid_crs": "EPSG:32610"},
        "filters": RELAXED,
        "output": {"samples_per_shard": 16},
        "execution": {"num_cpus": 2, "retries": 1},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_damaged_block_rejects_only_the_tiles_over_it(tmp_path: Path) -> None:
    image = write_cog_with_bad_block(tmp_path / "damaged_cog.tif")
    recipe = _recipe(tmp_path, {"name": "img", "path": str(image), "scale": "none"})
    out = tmp_path / "out"
    res = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]  # the build completes

    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    assert con.execute("SELECT DISTINCT status FROM shards").fetchall() == [("complete",)]
    rows = con.execute(
        "SELECT transform, status, reject_reason, rejected_by, error, shard FROM samples "
        "WHERE reject_reason IS DISTINCT FROM 'no_imagery_coverage'"
    ).fetchall()
    con.close()
    # Block (1, 1) of 256 px at 10 m, with the 2-pixel read margin of a window.
    x0, y1 = ORIGIN[0] + 2560, ORIGIN[1] - 2560
    block = shapely.box(x0 - 20, y1 - 2560 - 20, x0 + 2560 + 20, y1 + 20)
    errors, over_block_shards = 0, set()
    for transform, status, reason, by, error, shard in rows:
        minx, maxy = transform[2], transform[5]
        tile = shapely.box(minx, maxy - 640, minx + 640, maxy)
        if reason == "error":
            errors += 1
            over_block_shards.add(shard)
            assert by == "read" and "RasterioIOError" in error, error
            assert tile.intersects(block)
        elif not tile.intersects(block):
            assert status == "kept", (reason, error)
    assert errors >= 1
    kept_beside = [r for r in rows if r[5] in over_block_shards and r[1] == "kept"]
    assert kept_beside  # the shards over the block kept their other tiles


def _count(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("early_start", [False, True], ids=["ray_only", "early_worker"])
def test_lost_worker_is_retried_then_recorded_failed_and_rerun(
    tmp_path: Path, early_start: bool
) -> None:
    """Ray runs a shard 1 + ``retries`` times; the early worker (which runs the first shards
    while Ray starts) dies on it too and gives it back to Ray: one attempt more."""
    image = write_rgb(tmp_path / "scene.tif", size=256)
    attempts = tmp_path / "attempts.txt"
    imagery = {"name": "img", "type": "crashing_geotiff_test", "path": str(image)}
    # Shard 0: the first one handed out, so the early worker (forked before Ray starts) is
    # sure to take it.
    imagery |= {"scale": "none", "attempts_file": str(attempts), "shard": 0}
    execution = {"num_cpus": 2, "retries": 1, "early_start": early_start}
    recipe = _recipe(tmp_path, imagery, plugins=[str(PLUGIN)], execution=execution)
    per_run = 2 + early_start
    out = tmp_path / "out"
    res = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert res.returncode == 1, res.stderr[-2000:]  # some shards failed: rerun to retry them
    assert "failed" in res.stderr
    assert _count(attempts) == per_run  # the first attempt and one retry (execution.retries: 1)

    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    shards = dict(con.execute("SELECT shard, status FROM shards").fetchall())
    assert shards[0] == "failed" and all(s == "complete" for k, s in shards.items() if k != 0)
    error = con.execute("SELECT error FROM shards WHERE shard = 0").fetchone()[0]
    assert error and error.isprintable() and 'File "' not in error  # plain text, no frames
    failed = con.execute(
        "SELECT count(*) FROM samples WHERE status = 'failed' AND reject_reason = 'shard_failed'"
    ).fetchone()[0]
    assert failed == con.execute("SELECT tiles FROM shards WHERE shard = 0").fetchone()[0]
    # a failed tile keeps its ground: its cell is its key without the source (``img_``)
    cells = con.execute("SELECT key, cell FROM samples WHERE status = 'failed'").fetchall()
    assert len(cells) == failed and all(c == k.removeprefix("img_") for k, c in cells)
    planned = con.execute("SELECT count(*), count(DISTINCT key) FROM samples").fetchone()
    assert planned[0] == planned[1]  # every tile once: kept, rejected or failed
    con.close()

    again = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert again.returncode == 1 and "1 run now" in again.stdout  # only the failed shard
    assert _count(attempts) == 2 * per_run
    assert not list(out.glob("*.tmp-*"))


def test_lost_worker_in_a_batch_fails_only_its_shard(tmp_path: Path) -> None:
    """Four shards per Ray task: the task dies on its second shard. Ray retries the task from
    that shard (the first stays complete, not rerun); out of retries, only that shard is
    recorded failed and the batch's later shards run in other tasks."""
    image = write_rgb(tmp_path / "scene.tif", size=256)
    attempts, runs = tmp_path / "attempts.txt", tmp_path / "runs.txt"
    imagery = {"name": "img", "type": "crashing_geotiff_test", "path": str(image)}
    imagery |= {"scale": "none", "attempts_file": str(attempts), "shard": 1}
    imagery |= {"runs_file": str(runs)}
    execution = {"num_cpus": 1, "retries": 1, "early_start": False, "shards_per_task": 4}
    recipe = _recipe(
        tmp_path,
        imagery,
        plugins=[str(PLUGIN)],
        execution=execution,
        output={"samples_per_shard": 4},
    )
    out = tmp_path / "out"
    res = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert res.returncode == 1, res.stderr[-2000:]
    assert _count(attempts) == 2  # shard 1: the first attempt and one retry
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    shards = dict(con.execute("SELECT shard, status FROM shards").fetchall())
    con.close()
    assert len(shards) >= 4 and shards[1] == "failed"
    assert all(status == "complete" for k, status in shards.items() if k != 1)
    ran = [int(x) for x in runs.read_text().split()]
    assert sorted(ran) == sorted([*shards, 1])  # every shard read once, shard 1 twice
    assert not list(out.glob("*.tmp-*"))


def test_deterministic_shard_fault_is_not_retried(tmp_path: Path) -> None:
    image = write_rgb(tmp_path / "scene.tif", size=128)
    attempts = tmp_path / "attempts.txt"
    recipe = _recipe(
        tmp_path,
        {"name": "img", "path": str(image), "scale": "none"},
        plugins=[str(PLUGIN)],
        filters={**RELAXED, "broken_setup_test": {"attempts_file": str(attempts)}},
        output={"samples_per_shard": 1000},
    )
    out = tmp_path / "out"
    res = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert res.returncode == 1 and "cannot be set up" in res.stderr, res.stderr[-2000:]
    assert _count(attempts) == 1  # no retry: the same input fails the same way
