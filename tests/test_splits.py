"""Spatial train / val / test splits: blocks, stratification, the buffer, determinism, and
the ``split`` field of every sample of a real shard."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import shapely
import yaml

from geoweave.builders.plan import plan_tiles
from geoweave.builders.plan_check import compare_content, content_fingerprint
from geoweave.builders.prepare import prepare
from geoweave.builders.recipe import Recipe, SplitsConfig
from geoweave.builders.recipe_files import load_recipe
from geoweave.builders.shard import run_shard
from geoweave.builders.splits import assign_splits
from geoweave.builders.worker_state import open_imagery
from geoweave.errors import FatalError
from geoweave.manifests.manifest_builder import write_manifest
from geoweave.tile import Tile
from tests.conftest import SF_BAY

CRS = "EPSG:32610"
REAL = ("train", "val", "test")


def _grid(source: str, gsd: float, extent_m: float, size: int = 32) -> list[Tile]:
    """Tiles of ``size`` px at ``gsd`` over [0, extent_m] squared, with the plan's keys."""
    n = int(extent_m // (gsd * size))
    return [
        Tile(f"{source}_{gsd:g}m_{col}_{row}", source, CRS, gsd, size, col, row)
        for col in range(n)
        for row in range(n)
    ]


def _tiles() -> list[Tile]:
    """Two sources at 30 m and 60 m (960 m and 1920 m tiles): ``a`` over 23 km squared
    (16 blocks of 6 km), ``b`` over its south-west 11.5 km (4 blocks)."""
    return [
        *_grid("a", 30, 23040),
        *_grid("a", 60, 23040),
        *_grid("b", 30, 11520),
        *_grid("b", 60, 11520),
    ]


def _block(t: Tile, block_m: float) -> tuple[int, int]:
    minx, miny, maxx, maxy = t.bounds
    return math.floor((minx + maxx) / 2 / block_m), math.floor((miny + maxy) / 2 / block_m)


CONFIG = SplitsConfig(enabled=True, block_m=6000, buffer_m=500)


@pytest.mark.parametrize("seed", range(5))
def test_no_block_is_in_two_splits(seed: int) -> None:
    tiles = _tiles()
    splits = assign_splits(tiles, CONFIG, seed)
    seen: dict[tuple[int, int], set[str]] = defaultdict(set)
    for t, s in zip(tiles, splits, strict=True):
        assert s in (*REAL, "buffer")
        if s != "buffer":
            seen[_block(t, CONFIG.block_m)].add(s)
    assert all(len(v) == 1 for v in seen.values())
    assert len(seen) == 16


@pytest.mark.parametrize(("block_m", "buffer_m"), [(8000, None), (6000, 0.0), (6000, 700.0)])
def test_tiles_of_different_splits_are_farther_apart_than_the_buffer(
    block_m: float, buffer_m: float | None
) -> None:
    tiles = _tiles()
    config = CONFIG.model_copy(update={"block_m": block_m, "buffer_m": buffer_m})
    splits = assign_splits(tiles, config, seed=1)
    limit = 1920.0 if buffer_m is None else buffer_m  # default: the largest tile, 32 px x 60 m
    pairs = list(zip(tiles, splits, strict=True))
    boxes = {s: [shapely.box(*t.bounds) for t, x in pairs if x == s] for s in REAL}
    assert all(boxes.values())
    for a, b in combinations(REAL, 2):
        gap = shapely.distance(
            shapely.GeometryCollection(boxes[a]), shapely.GeometryCollection(boxes[b])
        )
        assert gap > limit, (a, b, gap)
    if buffer_m == 0.0:  # touching tiles of two splits: one of them is in the buffer
        assert "buffer" in splits


@pytest.mark.parametrize("seed", range(10))
def test_every_split_holds_every_source_and_gsd(seed: int) -> None:
    tiles = _tiles()
    splits = assign_splits(tiles, CONFIG, seed)
    held = {(t.source, t.gsd_m, s) for t, s in zip(tiles, splits, strict=True)}
    for stratum in {(t.source, t.gsd_m) for t in tiles}:
        for s in REAL:
            assert (*stratum, s) in held


def test_a_split_the_buffer_empties_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """Blocks of 6 km against a buffer of 1.92 km: with seed 1 the val blocks lie beside test
    blocks, and the buffer takes all their tiles."""
    config = CONFIG.model_copy(update={"buffer_m": None})
    with caplog.at_level(logging.WARNING, logger="geoweave"):
        splits = assign_splits(_tiles(), config, seed=1)
    assert "val" not in splits
    assert "the buffer (1920 m) took every tile of val" in caplog.text


def test_the_same_seed_gives_the_same_splits_and_another_seed_others() -> None:
    tiles = _tiles()
    first = assign_splits(tiles, CONFIG, 7)
    assert assign_splits(list(reversed(tiles)), CONFIG, 7) == list(reversed(first))
    assert assign_splits(tiles, CONFIG, 7) == first
    assert assign_splits(tiles, CONFIG, 8) != first


def test_the_fractions_hold_by_block_count() -> None:
    """400 blocks of 3 x 3 tiles; with no buffer a block's centre tile touches no other
    block, so it keeps its block's split."""
    tiles = _grid("a", 10, 60 * 160, size=16)  # 60 x 60 tiles of 160 m
    config = SplitsConfig(enabled=True, block_m=480, buffer_m=0, fractions={"train": 0.7,
                          "val": 0.2, "test": 0.1})  # fmt: skip
    splits = assign_splits(tiles, config, seed=3)
    counts: dict[str, int] = defaultdict(int)
    for t, s in zip(tiles, splits, strict=True):
        if t.col % 3 == 1 and t.row % 3 == 1:
            counts[str(s)] += 1
    assert counts == {"train": 280, "val": 80, "test": 40}


def test_a_stratum_with_too_few_blocks_is_named(caplog: pytest.LogCaptureFixture) -> None:
    tiles = [*_tiles(), *_grid("c", 30, 3000)]  # one block
    with caplog.at_level(logging.WARNING, logger="geoweave"):
        splits = assign_splits(tiles, CONFIG, seed=0)
    assert "imagery c at 30 m spans 1 block(s) of 6000 m" in caplog.text
    assert {s for t, s in zip(tiles, splits, strict=True) if t.source == "c"} <= {
        "train",
        "buffer",
    }  # a one-block stratum goes to train


def test_plan_rejected_tiles_get_no_split() -> None:
    tiles = _tiles()
    tiles[0] = replace(tiles[0], plan_reject="no_imagery_coverage")
    assert assign_splits(tiles, CONFIG, 0)[0] is None


@pytest.mark.parametrize(
    ("splits", "needle"),
    [
        ({"fractions": {"train": 0.8, "dev": 0.2}}, "splits.fractions: Value error, unknown split"),
        ({"fractions": {"train": 0.8, "test": 0.1}}, "splits.fractions: Value error, the fr"),
        ({"fractions": {"train": 1.1, "test": -0.1}}, "splits.fractions: Value error, every"),
        ({"block_m": 0}, "splits.block_m: Input should be greater than 0"),
        ({"buffer_m": -1}, "splits.buffer_m: Input should be greater than or equal to 0"),
        ({"enable": True}, "splits.enable: unknown field"),
    ],
)
def test_bad_split_settings_are_named(tmp_path: Path, splits: dict, needle: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump({"name": "t", "imagery": [{"name": "i", "path": "i.tif"}], "splits": splits})
    )
    with pytest.raises(FatalError) as e:
        load_recipe(path)
    assert needle in str(e.value)


def _recipe(out: Path, **extra: object) -> Recipe:
    """A small SF Bay build (from tests/test_faithfulness.py) at 30 m and 60 m."""
    return Recipe.model_validate(
        {
            "name": "splits",
            "area": {"bbox": (-122.3143, 37.8040, -122.2908, 37.8176)},
            "imagery": [
                {"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif")}
                | {"scale": "none"}
            ],
            "tiles": {"size_px": 16, "gsd_m": [30, 60]},
            "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
            "output": {"dir": str(out), "samples_per_shard": 1000},
            **extra,
        }
    )


def test_a_changed_split_setting_refuses_a_resume(tmp_path: Path) -> None:
    off, on = _recipe(tmp_path), _recipe(tmp_path, splits={"enabled": True})
    other = _recipe(tmp_path, splits={"enabled": True, "block_m": 2000})
    assert "splits" not in content_fingerprint(off)  # a folder built before splits resumes
    compare_content(tmp_path, content_fingerprint(on), content_fingerprint(on))
    for before, now in ((off, on), (on, off), (on, other)):
        with pytest.raises(FatalError, match="differs in splits"):
            compare_content(tmp_path, content_fingerprint(before), content_fingerprint(now))


def test_splits_are_off_by_default() -> None:
    recipe = _recipe(Path("unused"))
    plan = plan_tiles(recipe, [open_imagery(c) for c in recipe.imagery])
    assert {t.split for t in plan.load_tiles()} == {None}


def test_every_sample_of_a_shard_carries_its_planned_split(tmp_path: Path) -> None:
    splits = {"enabled": True, "block_m": 1000, "buffer_m": 0}
    recipe = _recipe(tmp_path, splits=splits).check_components()
    ctx, plan, _ = prepare(recipe, tmp_path)
    assert plan.num_shards == 1
    planned = {t.key: t.split for t in plan.load_tiles()}
    assert set(planned.values()) == {"train", "val", "test", "buffer"}
    run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(tmp_path / "splits-000000.samples.parquet").to_pylist()
    assert {r["key"]: r["split"] for r in rows} == planned
    con = duckdb.connect(str(write_manifest(tmp_path, "splits")), read_only=True)
    in_manifest = dict(con.sql("SELECT key, split FROM samples").fetchall())
    assert in_manifest == planned
