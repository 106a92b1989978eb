"""One shard in-process (no Ray): West Oakland OSM XML (.osm.bz2) over the SF Bay Landsat."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from geoweave.builders.prepare import prepare
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import run_shard
from geoweave.builders.writers import is_complete
from geoweave.record import OSM_LICENSE
from tests.conftest import SF_BAY


def test_shard_carries_osm_provenance(tmp_path: Path) -> None:
    recipe = Recipe.model_validate(
        {
            "name": "wo",
            "area": {"bbox": (-122.3143, 37.8040, -122.2908, 37.8176)},
            "imagery": [
                {"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif")}
                | {"scale": "none", "license": "USGS public domain"}
            ],
            "tiles": {"size_px": 16, "gsd_m": [30]},
            "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
            "output": {"samples_per_shard": 1000},
        }
    )
    ctx, plan, inputs = prepare(recipe, tmp_path)
    assert plan.num_shards == 1 and ctx.osm_snapshot == "2016-07-12T16:09:43Z"
    assert str(SF_BAY / "West-Oakland.osm.bz2") in inputs
    stats = run_shard(ctx, 0, plan.shard_tiles(0))
    assert is_complete(tmp_path, "wo", 0) and stats.tiles == len(plan.load_tiles())
    rows = pq.read_table(tmp_path / "wo-000000.samples.parquet").to_pylist()
    with_osm = [r for r in rows if r["osm_ids"]]
    assert with_osm and stats.kept >= 1
    for r in rows:
        assert r["osm_snapshot"] == ("2016-07-12T16:09:43Z" if r["osm_ids"] else None)
    for r in with_osm:
        assert r["license"] == f"USGS public domain; {OSM_LICENSE}"
        assert {e["id"][0] for e in r["osm"]} <= {"w", "r", "n"}


def test_upsampled_tiles_are_flagged_and_captions_state_the_native_resolution(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    recipe = Recipe.model_validate(
        {
            "name": "up",
            "area": {"bbox": (-122.3143, 37.8040, -122.2908, 37.8176)},
            "imagery": [
                {"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif")}
                | {"scale": "none"}
            ],
            "tiles": {"size_px": 32, "gsd_m": [10, 30]},
            "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
            "filters": {"min_labels_v1": {"min_labels": 1}},
            "output": {"samples_per_shard": 1000},
        }
    )
    with caplog.at_level(logging.WARNING, logger="geoweave"):
        ctx, plan, _ = prepare(recipe, tmp_path)
    assert "tiles at 10 m are upsampled 2.4x" in caplog.text
    assert "tiles at 30 m" not in caplog.text
    run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(tmp_path / "up-000000.samples.parquet").to_pylist()
    by_gsd = {g: [r for r in rows if r["gsd_m"] == g] for g in (10.0, 30.0)}
    assert all(r["upsampled"] and abs(r["native_gsd_m"] - 23.74) < 0.01 for r in by_gsd[10.0])
    assert not any(r["upsampled"] for r in by_gsd[30.0])
    texts = [c["text"] for r in by_gsd[10.0] for c in r["captions"]]
    assert texts and not any("10 m" in t for t in texts)
    assert any("23.7 m" in t for t in texts)
    assert any("30 m" in c["text"] for r in by_gsd[30.0] for c in r["captions"])


def test_a_worker_freezes_its_long_lived_objects_once(tmp_path: Path) -> None:
    """``settle_process`` (run by Ray tasks and the early worker after a shard) moves what the
    process holds out of the cyclic collector's sight, once per process: in a fresh
    interpreter, so the test process itself is not frozen."""
    import subprocess
    import sys

    code = (
        "import gc; from geoweave.builders.worker_state import settle_process\n"
        "before = gc.get_freeze_count(); settle_process(); once = gc.get_freeze_count()\n"
        "[object() for _ in range(10)]; x = [[] for _ in range(1000)]; settle_process()\n"
        "print(before, once > 1000, gc.get_freeze_count() == once)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "True", "True"]


_SHARD_LIKE = (
    "import os, resource, sys, numpy as np\n"
    "from geoweave.builders.worker_state import keep_freed_memory\n"
    "if sys.argv[1] == 'keep': keep_freed_memory()\n"
    "def shard():  # 200 arrays of 256 KB, touched, all freed at the end: a shard's pattern\n"
    "    arrays = [np.ones(256 << 10, np.uint8) for _ in range(200)]\n"
    "    del arrays\n"
    "shard()\n"
    "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "shard()\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
)


def test_a_worker_keeps_the_memory_a_shard_frees_for_the_next_one() -> None:
    """``keep_freed_memory`` (each worker, before its first shard): a second shard's arrays
    reuse the pages the first one freed instead of faulting fresh ones in (glibc on Linux).
    Counted by minor page faults, in fresh interpreters: 50 MB is 12,800 pages of 4 KB."""
    import subprocess
    import sys

    def faults(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}
        done = subprocess.run(
            [sys.executable, "-c", _SHARD_LIKE, mode],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return int(done.stdout)

    assert faults("default") > 6000  # glibc handed the freed heap top back to the kernel
    assert faults("keep") < 1000


def test_a_join_error_rejects_only_its_own_tile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard joins its tiles in one batch; when that fails, each tile is joined alone, so
    the one tile whose join raises is rejected (``error``, by ``join``) and the rest are kept."""
    from geoweave.builders.join import ShardLabels

    recipe = Recipe.model_validate(
        {
            "name": "wo",
            "area": {"bbox": (-122.3143, 37.8040, -122.2908, 37.8176)},
            "imagery": [{"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif")}],
            "tiles": {"size_px": 16, "gsd_m": [30]},
            "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
        }
    )
    ctx, plan, _ = prepare(recipe, tmp_path)
    tiles = plan.shard_tiles(0)
    bad = tiles[len(tiles) // 2].key
    batch_join = ShardLabels.for_tiles

    def failing(self: ShardLabels, batch: list, *args: object) -> list:
        if any(t.key == bad for t in batch):
            raise ValueError("GEOS exception: TopologyException")
        return batch_join(self, batch, *args)

    monkeypatch.setattr(ShardLabels, "for_tiles", failing)
    stats = run_shard(ctx, 0, tiles)
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "wo-000000.samples.parquet").to_pylist()}
    assert (rows[bad]["reject_reason"], rows[bad]["rejected_by"]) == ("error", "join")
    assert "TopologyException" in rows[bad]["error"]
    assert stats.errors == 1
    monkeypatch.undo()  # the same shard without the fault: every other tile is as it was
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    run_shard(prepare(recipe, clean_dir)[0], 0, tiles)
    clean = pq.read_table(clean_dir / "wo-000000.samples.parquet").to_pylist()
    for r in clean:
        if r["key"] != bad:
            got = rows[r["key"]]
            assert (got["status"], got["osm_ids"]) == (r["status"], r["osm_ids"])
    assert any(r["osm_ids"] for r in clean if r["key"] != bad)
