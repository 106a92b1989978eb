"""The tile plan: which tiles exist and which shard each one goes to, fixed before work starts.

The plan is a pure function of the recipe and the imagery footprints, so a rerun computes the
same shards with the same tiles; that is what makes resume safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import shapely
from shapely.geometry.base import BaseGeometry

from geoweave.builders.recipe import Recipe
from geoweave.builders.splits import with_splits
from geoweave.errors import FatalError
from geoweave.protocols import ImagerySource
from geoweave.record import is_upsampled
from geoweave.sources.grid import cells_over, grid_crs_for, split_antimeridian, tile_key
from geoweave.tile import Tile

log = logging.getLogger("geoweave")

NO_COVERAGE = "no_imagery_coverage"
# Shards take tiles in strips this many rows tall, so a shard is a compact patch of ground
# and reads few label partitions.
STRIP_ROWS = 8
CLIPPED_WARNING = 0.5  # the plan warns when a source's stretch clips more of its pixels


@dataclass(frozen=True, slots=True)
class Plan:
    """Tiles in shard order; shard ``s`` holds ``tiles[s * per_shard : (s + 1) * per_shard]``."""

    tiles: tuple[Tile, ...]
    num_shards: int
    per_shard: int

    def shard_tiles(self, shard: int) -> list[Tile]:
        return list(self.tiles[shard * self.per_shard : (shard + 1) * self.per_shard])


def area_geometry(recipe: Recipe, sources: Sequence[ImagerySource]) -> BaseGeometry:
    """The area to tile, in lon/lat: the recipe's bbox or GeoJSON, else the imagery footprint."""
    if recipe.area.bbox is not None:
        w, s, e, n = recipe.area.bbox
        if w > e:  # across the antimeridian, as GeoJSON bboxes say it (RFC 7946, 5.2)
            return shapely.union_all([shapely.box(w, s, 180, n), shapely.box(-180, s, e, n)])
        return shapely.box(w, s, e, n)
    if recipe.area.geojson is not None:
        import geopandas as gpd

        try:
            gdf = gpd.read_file(recipe.area.geojson)
        except Exception as e:
            raise FatalError(f"area.geojson {recipe.area.geojson}: cannot read it ({e})") from e
        if gdf.empty or gdf.crs is None:
            raise FatalError(f"area.geojson {recipe.area.geojson}: empty or without a CRS")
        return split_antimeridian(shapely.union_all(gdf.to_crs("EPSG:4326").geometry.values))
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


def plan_tiles(recipe: Recipe, sources: Sequence[ImagerySource]) -> Plan:
    """Every tile of every source and GSD over the area, assigned to shards."""
    area = area_geometry(recipe, sources)
    size = recipe.tiles.size_px
    per = recipe.output.samples_per_shard
    tiles: list[Tile] = []
    crs = grid_crs_for(area, recipe.tiles.grid_crs)  # one grid for every source
    for src in sources:
        warn_clipping(src)
        covered = _covered(area, src)
        for gsd in recipe.tiles.gsd_m:
            if is_upsampled(gsd, src.res_m):
                log.warning(
                    "imagery %s has a ground resolution of %.3g m: tiles at %g m are upsampled "
                    "%.1fx (no new detail); samples record upsampled = true and captions state "
                    "%.3g m",
                    src.name, src.res_m, gsd, src.res_m / gsd, src.res_m,
                )  # fmt: skip
            cells = cells_over(covered, crs, gsd * size) if not covered.is_empty else []
            cells.sort(key=lambda c: (-(c[1] // STRIP_ROWS), c[0], -c[1]))
            grid = [
                Tile(tile_key(src.name, gsd, crs, col, row), src.name, crs, gsd, size, col, row)
                for col, row in cells
            ]
            items = src.plan(grid)  # the source picks what covers each tile, without pixels
            # Each tile is built once more with its shard and item (a million tiles: dataclass
            # ``replace`` twice per tile cost seconds).
            first = len(tiles)
            tiles += [
                Tile(t.key, t.source, crs, gsd, size, t.col, t.row, (first + i) // per,
                     None if item else NO_COVERAGE, item)
                for i, (t, item) in enumerate(zip(grid, items, strict=True))
            ]  # fmt: skip
    if not tiles:
        raise FatalError("the area holds no tiles: check area.bbox / area.geojson and the imagery")
    if recipe.splits.enabled:
        tiles = with_splits(tiles, recipe.splits, recipe.seed)
    return Plan(tuple(tiles), num_shards=(len(tiles) + per - 1) // per, per_shard=per)
