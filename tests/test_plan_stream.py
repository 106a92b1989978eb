"""The streamed plan: strips of cells written in row groups of whole shards, flat memory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from geoweave.builders import plan_file
from geoweave.builders.plan import STRIP_ROWS, plan_tiles
from geoweave.builders.plan_file import plan_digest
from geoweave.builders.recipe import Recipe, SplitsConfig
from geoweave.sources.grid import cells_over, grid_crs_for, tile_key
from geoweave.sources.imagery import GeoTiffSource
from tests.conftest import SF_BAY

SF_LANDSAT = SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif"


def _recipe(per_shard: int = 7, gsd: float = 30.0, size: int = 8) -> Recipe:
    return Recipe.model_validate({
        "name": "s",
        "imagery": [{"name": "l7", "path": str(SF_LANDSAT), "scale": "none"}],
        "tiles": {"size_px": size, "gsd_m": [gsd]},
        "output": {"samples_per_shard": per_shard},
    })  # fmt: skip


def test_streamed_plan_keeps_the_strip_order_and_whole_shards_per_row_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(plan_file, "GROUP_TARGET", 50)  # row groups of 49 tiles = 7 shards
    recipe = _recipe()
    src = GeoTiffSource("l7", SF_LANDSAT, [1, 2, 3], "none")
    plan = plan_tiles(recipe, [src])
    tiles = plan.load_tiles()
    # the order of one global sort of every cell: strips north to south, then column, then row
    crs = grid_crs_for(src.footprint(), "utm")
    cells = cells_over(src.footprint(), crs, 240.0)
    cells.sort(key=lambda c: (-(c[1] // STRIP_ROWS), c[0], -c[1]))
    assert [t.key for t in tiles] == [tile_key("l7", 30, crs, c, r) for c, r in cells]
    assert plan.num_tiles == len(tiles) > 1000
    assert [t.shard for t in tiles] == [i // 7 for i in range(len(tiles))]
    f = pq.ParquetFile(plan.path)
    assert f.num_row_groups == -(-len(tiles) // 49)
    for g in range(f.num_row_groups - 1):  # every group but the last holds 7 whole shards
        shards = f.read_row_group(g, columns=["shard"]).column("shard").to_pylist()
        assert shards == sorted(shards) and len(shards) == 49 and len(set(shards)) == 7
    for s in (0, 6, 7, 8, plan.num_shards - 1):
        assert plan.shard_tiles(s) == tiles[s * 7 : (s + 1) * 7]
    assert plan.counts == {("l7", 30.0, "planned"): len(tiles)}


def test_splits_of_a_plan_scanned_by_row_group_equal_the_buffer_over_every_tile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plan's splits are made in three scans of its row groups (``splits_scan``), and the
    buffer runs over only the tiles near another split's block. The result equals the buffer
    run over every tile at once (``splits._buffer`` over all footprints, from each block's
    split), over 49-tile row groups, and the one-batch ``assign_splits``."""
    import numpy as np
    import shapely

    from geoweave.builders import splits as sp
    from geoweave.builders import splits_scan

    monkeypatch.setattr(plan_file, "GROUP_TARGET", 50)
    config = SplitsConfig(enabled=True, block_m=2000, buffer_m=300)
    recipe = _recipe().model_copy(update={"splits": config})
    plan = plan_tiles(recipe, [GeoTiffSource("l7", SF_LANDSAT, [1, 2, 3], "none")])
    assert pq.ParquetFile(plan.path).num_row_groups > 20
    got = pq.read_table(plan.path, columns=["split"]).column("split").to_pylist()
    tiles = plan.load_tiles()
    assert got == sp.assign_splits(tiles, config, recipe.seed)
    table = pq.read_table(plan.path)
    found = splits_scan.census(lambda: iter([table]), 2000)
    block_split = sp._deal(found, list(sp.PRIORITY), config, recipe.seed)
    codes = block_split[found.index(splits_scan.Footprints.of(table, 2000).keys)]
    boxes = shapely.box(*np.array([t.bounds for t in tiles]).T)
    every = sp._buffer(boxes, codes, 3, 300)
    assert got == [sp.PRIORITY[c] if c >= 0 else "buffer" for c in every.tolist()]
    assert {"train", "val", "test"} <= set(got) and got.count("buffer") > 50
    assert plan.digest == plan_digest(plan.path)  # the rewrite kept the digest


def test_a_replan_has_the_same_digest_and_an_undigested_plan_is_compared_by_tiles(
    tmp_path: Path,
) -> None:
    src = GeoTiffSource("l7", SF_LANDSAT, [1, 2, 3], "none")
    a, b = plan_tiles(_recipe(), [src]), plan_tiles(_recipe(), [src])
    assert a.digest == b.digest and len(a.digest) == 64
    assert plan_digest(a.path) == a.digest
    assert a.same_as(b.path)
    other = plan_tiles(_recipe(per_shard=8), [src])
    assert other.digest != a.digest and not a.same_as(other.path)
    # a plan file written before plans carried a digest
    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(a.path), old)
    assert plan_digest(old) is None
    assert a.same_as(old) and not other.same_as(old)


def test_the_temporary_plan_file_goes_with_its_plan() -> None:
    src = GeoTiffSource("l7", SF_LANDSAT, [1, 2, 3], "none")
    plan = plan_tiles(_recipe(), [src])
    folder = plan.path.parent
    assert folder.is_dir() and folder.name.startswith("geoweave-plan-")
    del plan
    import gc

    gc.collect()
    assert not folder.exists()


MEASURE = (
    "import resource, sys\n"
    "from geoweave.builders.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def _plan_rss(tmp_path: Path, gsd: float) -> tuple[int, int]:
    """``build-dataset plan`` in a fresh interpreter: (tiles printed, its peak RSS in kB)."""
    recipe = tmp_path / f"r{gsd}.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(per_shard=1000, gsd=gsd).model_dump(mode="json")))
    res = subprocess.run(
        [sys.executable, "-c", MEASURE, "plan", str(recipe)],
        capture_output=True, text=True, timeout=300, check=False,
        env={"GEOWEAVE_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    tiles = int(re.search(r"^(\d+) tiles in \d+ shards of 1000$", res.stdout, re.M)[1])  # type: ignore[index]
    return tiles, int(re.search(r"maxrss_kb (\d+)", res.stdout)[1])  # type: ignore[index]


def test_a_plan_of_two_million_tiles_runs_in_the_memory_of_one_of_200k(tmp_path: Path) -> None:
    small, small_kb = _plan_rss(tmp_path, 4.8)
    large, large_kb = _plan_rss(tmp_path, 1.5)
    assert 150_000 < small < 300_000 and large > 9 * small  # about 2.2M tiles
    # as a list of Tile objects the large plan alone would take about 1 GB more
    assert large_kb - small_kb < 80_000, (small_kb, large_kb)
    assert not list((tmp_path / "cache" / "plans").iterdir())  # the temporary plans are gone
