"""Join label features to tiles: which elements are visible in a tile, how big, and where.

Every source's ids and tags are cleaned here (``geoweave.text.clean_tags``: one line, no
control or bidi characters, capped length) before any caption, QA pair or record sees them.

Labels are fetched once per shard (one query over the shard's bounding box), cleaned in bulk
(a batch that is clean already is checked in one pass), reprojected once to the grid CRS and
put in an STRtree; the shard's tiles then cost one bulk tree query and one vectorised clip of
every (tile, feature) pair. That is what makes the join much faster than a per-tile spatial
join on a whole table.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely

from geoweave.sources.grid import transform_geom
from geoweave.sources.labels import LABEL_CRS, LabelSource
from geoweave.text import clean_labels, clean_tags_batch
from geoweave.tile import Tile, transform_bbox

POSITIONS = (
    ("top-left", "top", "top-right"),
    ("left", "centre", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)


class ShardLabels:
    """The label features of all sources near one shard's tiles, in the grid CRS."""

    def __init__(self, label_sources: Sequence[LabelSource], tiles: Sequence[Tile]) -> None:
        crs = tiles[0].crs
        b = np.array([t.bounds for t in tiles])
        shard_box = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
        bbox = transform_bbox(shard_box, crs, LABEL_CRS)
        ids, tags, names, geoms = [], [], [], []
        for src in label_sources:
            f = src.query(bbox)
            if len(f):
                i, t, g = _features(src, f, crs)
                ids.append(i)
                tags.append(t)
                names.append(np.full(len(f), src.name, dtype=object))
                geoms.append(g)
        self.ids = _concat(ids)
        self.tags = _concat(tags)
        self.sources = _concat(names)
        self.geoms = _concat(geoms)
        self.tree = shapely.STRtree(self.geoms)

    def __len__(self) -> int:
        return len(self.ids)

    def for_tile(self, tile: Tile, min_pixels: float, points: bool = False) -> list[dict[str, Any]]:
        """The visible elements of one tile, largest first (``for_tiles`` of one tile)."""
        return self.for_tiles([tile], min_pixels, points)[0]

    def for_tiles(
        self, tiles: Sequence[Tile], min_pixels: float, points: bool = False
    ) -> list[list[dict[str, Any]]]:
        """Per tile, its visible elements, largest first: one tree query and one vectorised
        clip for the whole batch (shapely's per-call cost paid once, not per tile).

        Lines and polygons smaller than ``min_pixels`` (of length or area) are not visible; points
        have no extent and are kept only when ``points`` is set.
        """
        b = np.array([t.bounds for t in tiles], dtype=float).reshape(-1, 4)
        boxes = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
        tile_of, idx = self.tree.query(boxes, predicate="intersects")
        out: list[list[dict[str, Any]]] = [[] for _ in tiles]
        if idx.size == 0:
            return out
        geoms, box = self.geoms[idx], boxes[tile_of]
        shapely.prepare(boxes)
        cut = ~shapely.contains_properly(box, geoms)
        clipped = geoms.copy()  # only elements crossing the edge need the (costly) clip
        clipped[cut] = shapely.intersection(geoms[cut], box[cut])
        gsd = np.array([t.gsd_m for t in tiles])[tile_of]
        tile_area = np.array([t.ground_m**2 for t in tiles])[tile_of]
        dims = shapely.get_dimensions(geoms)
        area, length = shapely.area(clipped), shapely.length(clipped)
        coverage = np.where(dims == 2, area / gsd**2, np.where(dims == 1, length / gsd, 1.0))
        positions = _positions(b[tile_of], *_centres(clipped))
        visible = np.where(dims == 0, points, coverage >= min_pixels)
        order = np.lexsort((-coverage, tile_of))  # by tile, largest first; ties in tree order
        for j in order[visible[order]]:
            i = idx[j]
            out[tile_of[j]].append(
                {
                    "id": str(self.ids[i]),
                    "source": str(self.sources[i]),
                    "tags": dict(self.tags[i]),
                    "geom_type": _TYPE_NAMES[int(dims[j])],
                    "coverage_px": round(float(coverage[j]), 2),
                    "coverage_frac": round(float(area[j] / tile_area[j]), 5),
                    "area_m2": round(float(area[j]), 1),
                    "length_m": round(float(length[j]), 1) if dims[j] == 1 else 0.0,
                    "position": positions[j],
                    "clipped": bool(cut[j]),
                }
            )
        return out


_TYPE_NAMES = {0: "point", 1: "line", 2: "polygon"}

# Per process: source -> grid CRS -> raw id -> (clean id, clean tags, geometry in that CRS), for
# sources whose features never change (``fixed_features``). Neighbouring shards and the shards
# of other GSDs over the same ground ask for the same features: on the 8 px benchmark each was
# fetched 6 times, and 85% of the reprojected vertices were ones reprojected before.
_KNOWN: weakref.WeakKeyDictionary[Any, dict[str, dict[str, tuple[Any, Any, Any]]]] = (
    weakref.WeakKeyDictionary()
)
MAX_KNOWN = 200_000  # features per source and CRS; past it the cache starts again


def _features(src: LabelSource, f: Any, crs: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean ids, clean tags and geometries in ``crs`` of the frame ``src`` returned; label text
    is untrusted, so it is cleaned here, once, for every source."""
    raw = f["id"].to_list()
    if not getattr(src, "fixed_features", False):
        return _prepare(raw, f["tags"].to_list(), f.geometry.to_numpy(), crs)
    known = _KNOWN.setdefault(src, {}).setdefault(crs, {})
    new = [j for j, r in enumerate(raw) if r not in known]
    if new:
        if len(known) + len(new) > MAX_KNOWN:
            known.clear()
        tags, geoms = f["tags"].to_numpy()[new], f.geometry.to_numpy()[new]
        fresh = zip(*_prepare([raw[j] for j in new], list(tags), geoms, crs), strict=True)
        known.update(zip([raw[j] for j in new], fresh, strict=True))
    rows = [known[r] for r in raw]
    return tuple(_objects([row[k] for row in rows]) for k in range(3))  # type: ignore[return-value]


def _prepare(
    ids: list[Any], tags: list[Any], geoms: np.ndarray, crs: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        _objects(clean_labels(ids)),
        _objects(clean_tags_batch(tags)),
        transform_geom(geoms, LABEL_CRS, crs),
    )


def _objects(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=object)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _centres(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = shapely.point_on_surface(geoms)
    return shapely.get_x(pts), shapely.get_y(pts)


def _positions(bounds: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[str]:
    """The 3x3 grid cell of each point in its (minx, miny, maxx, maxy) row of ``bounds``:
    "top-left" ... "bottom-right"."""
    minx, miny, maxx, maxy = bounds.T
    col = np.clip(((x - minx) / (maxx - minx) * 3).astype(int), 0, 2)
    row = np.clip(((maxy - y) / (maxy - miny) * 3).astype(int), 0, 2)
    return [POSITIONS[r][c] for r, c in zip(row.tolist(), col.tolist(), strict=True)]
