"""The tile plan: which tiles exist and which shard each one goes to, fixed before work starts.

The plan is a pure function of the recipe and the imagery footprints, so a rerun computes the
same shards with the same tiles; that is what makes resume safe. It streams: cells are made a
strip at a time and appended to the plan file (``plan_file``), so a continent's plan is never
held in memory; splits are made in scans of its row groups (``splits_scan``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from shapely.geometry.base import BaseGeometry

from geoweave.builders.plan_file import (
    SCHEMA,
    Plan,
    PlanWriter,
    remove_with,
    temp_plan_path,
)
from geoweave.builders.recipe import Recipe
from geoweave.builders.splits import write_plan_splits
from geoweave.errors import FatalError
from geoweave.protocols import ImagerySource
from geoweave.record import is_upsampled
from geoweave.sources.area_file import read_area
from geoweave.sources.grid import (
    bbox_geometry,
    cells_by_strip,
    grid_crs_for,
    key_prefix,
    split_antimeridian,
)
from geoweave.tile import Tile

log = logging.getLogger("geoweave")

NO_COVERAGE = "no_imagery_coverage"
# Shards take tiles in strips this many rows tall, so a shard is a compact patch of ground
# and reads few label partitions.
STRIP_ROWS = 8
CLIPPED_WARNING = 0.5  # the plan warns when a source's stretch clips more of its pixels


def area_geometry(recipe: Recipe, sources: Sequence[ImagerySource]) -> BaseGeometry:
    """The area to tile, in lon/lat: the recipe's bbox or GeoJSON, else the imagery footprint."""
    if recipe.area.bbox is not None:
        return bbox_geometry(recipe.area.bbox)
    if recipe.area.geojson is not None:
        return split_antimeridian(read_area(recipe.area.geojson))
    return shapely.union_all([split_antimeridian(s.footprint()) for s in sources])


def _covered(area: BaseGeometry, src: ImagerySource) -> BaseGeometry:
    """The part of the area the source has imagery for: only its cells are planned (a
    continent-sized area over one city's imagery plans as fast as the city)."""
    covered = area.intersection(split_antimeridian(src.footprint()))
    if area.area > 0:
        outside = 1 - covered.area / area.area
        if outside > 0.01:
            log.info("imagery %s covers %.0f%% of the area; the rest is not planned", src.name,
                     100 * (1 - outside))  # fmt: skip
    return covered


def warn_clipping(src: ImagerySource) -> None:
    """Warn when the source's 8-bit stretch clips most of its pixels (``scale: none`` on a
    uint16 source, say): its tiles would be flat white or black. A source that can tell has a
    ``clipped_fraction()`` (the geotiff source: a bounded sample); others are not checked."""
    measure = getattr(src, "clipped_fraction", None)
    share = measure() if callable(measure) else None
    if share is not None and share > CLIPPED_WARNING:
        log.warning(
            "imagery %s: its 8-bit stretch (imagery[].scale) clips %.0f%% of the pixels to 0 "
            "or 255 (the band with most); its tiles will be saturated (saturation_v1 rejects "
            "them): give scale: auto or the source's value range as [min, max]",
            src.name, 100 * share,
        )  # fmt: skip


def plan_tiles(
    recipe: Recipe,
    sources: Sequence[ImagerySource],
    temp_dir: Path | None = None,
    metadata: dict[bytes, bytes] | None = None,
) -> Plan:
    """Every tile of every source and GSD over the area, assigned to shards, streamed a strip
    of cells at a time to a temporary plan file (in ``temp_dir``, else the system's; removed
    with the ``Plan`` unless the build moved it into its output folder)."""
    area = area_geometry(recipe, sources)
    path = temp_plan_path(temp_dir)
    writer = PlanWriter(path, recipe.output.samples_per_shard, metadata or {})
    try:
        crs = grid_crs_for(area, recipe.tiles.grid_crs)  # one grid for every source
        for src in sources:
            warn_clipping(src)
            covered = _covered(area, src)
            for gsd in recipe.tiles.gsd_m:
                _warn_upsampled(src, gsd)
                for strip in _strips(covered, crs, gsd * recipe.tiles.size_px):
                    writer.add(_plan_strip(src, strip, crs, gsd, recipe, writer.num_tiles))
        plan = writer.finish()
    except BaseException:
        writer.abort()
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    remove_with(plan, path.parent)
    if not plan.num_tiles:
        raise FatalError("the area holds no tiles: check area.bbox / area.geojson and the imagery")
    if recipe.splits.enabled:
        write_plan_splits(plan, recipe.splits, recipe.seed)
    return plan


def _strips(
    covered: BaseGeometry, crs: str, ground_m: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    if covered.is_empty:
        return iter(())
    return cells_by_strip(covered, crs, ground_m, STRIP_ROWS)


def _warn_upsampled(src: ImagerySource, gsd: float) -> None:
    if is_upsampled(gsd, src.res_m):
        log.warning(
            "imagery %s has a ground resolution of %.3g m: tiles at %g m are upsampled "
            "%.1fx (no new detail); samples record upsampled = true and captions state "
            "%.3g m",
            src.name, src.res_m, gsd, src.res_m / gsd, src.res_m,
        )  # fmt: skip


def _plan_strip(
    src: ImagerySource,
    cells: tuple[np.ndarray, np.ndarray],
    crs: str,
    gsd: float,
    recipe: Recipe,
    first: int,
) -> pa.Table:
    """One strip's tiles as plan rows, shards numbered on from ``first``, built by column."""
    cols, rows = cells
    size = recipe.tiles.size_px
    if getattr(src, "many_dates", False):
        cols, rows, items, days = _dated_items(src, cols, rows, crs, gsd, size)
    else:
        items, days = _items(src, cols, rows, crs, gsd, size), None  # without pixels
    n = len(cols)
    text = pc.binary_join_element_wise(
        pc.cast(pa.array(cols), pa.string()), pc.cast(pa.array(rows), pa.string()), "_"
    )
    if days is not None:  # one tile per acquisition day: the day ends the key
        day = pa.array(days, pa.string())
        text = pc.if_else(day.is_null(), text, pc.binary_join_element_wise(text, day, "_"))
    item_array = pa.array(items, pa.string())
    columns = {
        "key": pc.binary_join_element_wise(key_prefix(src.name, gsd, crs), text, ""),
        "source": pa.repeat(src.name, n),
        "crs": pa.repeat(crs, n),
        "gsd_m": pa.array(np.full(n, gsd, dtype=np.float64)),
        "size_px": pa.array(np.full(n, size, dtype=np.int64)),
        "col": pa.array(cols),
        "row": pa.array(rows),
        "shard": pa.array(
            (first + np.arange(n, dtype=np.int64)) // recipe.output.samples_per_shard
        ),
        "plan_reject": pc.if_else(item_array.is_null(), NO_COVERAGE, pa.nulls(n, pa.string())),
        "item": item_array,
        "split": pa.nulls(n, pa.string()),
    }
    return pa.table(columns, schema=SCHEMA)


def _dated_items(
    src: ImagerySource, cols: np.ndarray, rows: np.ndarray, crs: str, gsd: float, size: int
) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str | None]]:
    """A source with several dates per cell (``many_dates``, e.g. STAC ``choose: all_dates``):
    its ``plan_dates`` gives (item, day) pairs per cell; each becomes a tile, its key ending in
    the day. A cell with none stays one tile, without a day, rejected for no coverage."""
    per_cell = src.plan_dates(_tiles(src, cols, rows, crs, gsd, size))  # type: ignore[attr-defined]
    counts = np.array([max(len(d), 1) for d in per_cell], dtype=np.int64)
    items: list[str | None] = []
    days: list[str | None] = []
    for dated in per_cell:
        items += [item for item, _ in dated] or [None]
        days += [day for _, day in dated] or [None]
    return np.repeat(cols, counts), np.repeat(rows, counts), items, days


def _tiles(
    src: ImagerySource, cols: np.ndarray, rows: np.ndarray, crs: str, gsd: float, size: int
) -> list[Tile]:
    prefix = key_prefix(src.name, gsd, crs)
    return [Tile(f"{prefix}{c}_{r}", src.name, crs, gsd, size, c, r)
            for c, r in zip(cols.tolist(), rows.tolist(), strict=True)]  # fmt: skip


def _items(
    src: ImagerySource, cols: np.ndarray, rows: np.ndarray, crs: str, gsd: float, size: int
) -> list[str | None]:
    """The source's item per cell: its vectorised ``plan_cells`` when it has one, else its
    ``plan`` of Tile objects (the protocol's method)."""
    fast = getattr(src, "plan_cells", None)
    if callable(fast):
        return list(fast(crs, gsd * size, cols, rows))
    return src.plan(_tiles(src, cols, rows, crs, gsd, size))
