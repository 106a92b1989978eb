"""Stream an OSM file with osmium into batches of label rows, one row per (feature, grid cell).

The file is read once (twice for areas: osmium's first pass reads the relations only), never
held in memory: features are collected up to ``BATCH_SIZE``, turned into an Arrow record batch
with vectorised shapely and handed to the writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import osmium
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

BATCH_SIZE = 50_000
DISK_LOCATIONS_BYTES = 512 << 20  # files from this size keep node locations on disk
DENSE_LOCATIONS_BYTES = 8 << 30  # and from this size in a dense array
# A feature touching more cells than this (a big lake, a national park) goes to one shared
# partition that every query reads, instead of being copied into thousands of cells.
MAX_CELLS_PER_FEATURE = 256
BIG_CELL = "big"

# Closed ways with these tags are rings (roundabouts, fences), not areas, unless area=yes.
# A value set limits the rule to those values; None means any value.
LINEAR_TAGS: dict[str, frozenset[str] | None] = {
    "highway": None,
    "railway": None,
    "barrier": None,
    "waterway": frozenset({"river", "stream", "canal", "drain", "ditch"}),
    "power": frozenset({"line", "minor_line", "cable"}),
    "natural": frozenset({"coastline", "tree_row", "cliff"}),
    "aeroway": frozenset({"runway", "taxiway"}),
}

_EPOCH = datetime.fromtimestamp(0, timezone.utc)


COUNTERS = (
    "area_ways",
    "points",
    "lines",
    "areas_from_ways",
    "areas_from_relations",
    "skipped_invalid_location",
    "skipped_bad_geometry",
    "rows",
)


@dataclass
class StreamStats:
    """What the stream kept and skipped; ``counts`` goes into the index's meta.json.

    ``area_ways`` counts the closed ways left to osmium's area assembler; those it could not
    turn into an area (missing nodes, invalid rings) are ``area_ways - areas_from_ways``.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    newest: datetime = _EPOCH

    def newest_iso(self) -> str | None:
        """The newest timestamp of the kept elements (ISO 8601), None when they have none."""
        return self.newest.isoformat().replace("+00:00", "Z") if self.newest > _EPOCH else None


def _row_schema() -> pa.Schema:
    """The Arrow schema of a row, with the GeoParquet ``geo`` metadata (WKB in EPSG:4326).

    The ``cell`` column becomes the ``cell=<name>`` folders and is not stored in the files.
    """
    from pyproj import CRS

    column = {"encoding": "WKB", "geometry_types": [], "crs": CRS.from_epsg(4326).to_json_dict()}
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
    fields = [("id", pa.string()), ("tags", pa.string()), ("geometry", pa.binary())]
    fields += [(name, pa.float64()) for name in ("minx", "miny", "maxx", "maxy")]
    fields.append(("cell", pa.string()))
    return pa.schema(fields, metadata={"geo": json.dumps(geo)})


# Built once at import: pyproj must not run in the Arrow writer threads that pull the batches.
ROW_SCHEMA = _row_schema()


def is_linear(tags: osmium.osm.TagList) -> bool:
    """Whether a closed way is a line (ring road, fence) rather than an area."""
    area = tags.get("area")
    if area is not None:
        return area == "no"
    if "building" in tags:
        return False
    for key, values in LINEAR_TAGS.items():
        value = tags.get(key)
        if value is not None and (values is None or value in values):
            return True
    return False


def location_storage(path: Path, scratch: Path) -> str:
    """Where osmium keeps node locations while it builds way and area geometries: in memory
    for an extract (``flex_mem``), in a file under ``scratch`` for a large one (a country:
    ``sparse_file_array``; a continent or the planet: ``dense_file_array``, 8 bytes per node
    id, as osm2pgsql's flat nodes), so the build's memory does not grow with the file."""
    size = path.stat().st_size
    if size < DISK_LOCATIONS_BYTES:
        return "flex_mem"
    kind = "dense_file_array" if size >= DENSE_LOCATIONS_BYTES else "sparse_file_array"
    return f"{kind},{scratch / 'node-locations.bin'}"


def stream_batches(
    path: Path,
    tag_keys: Sequence[str],
    cell_deg: float,
    stats: StreamStats,
    locations: str = "flex_mem",
) -> Iterator[pa.RecordBatch]:
    """Yield record batches of label rows from the OSM file at ``path``.

    Args:
        path: ``.osm.pbf``, ``.osm`` or ``.osm.bz2`` file.
        tag_keys: keep elements with at least one of these keys, and only these keys.
        cell_deg: grid cell size in degrees; each row is one (feature, cell) pair.
        stats: updated in place as elements are kept or skipped.
        locations: osmium's node location storage (``location_storage``).

    Raises:
        RuntimeError: osmium cannot read the file (corrupt, truncated).
    """
    keys = tuple(dict.fromkeys(tag_keys))
    processor = (
        osmium.FileProcessor(str(path))
        .with_locations(locations)
        .with_areas(osmium.filter.KeyFilter(*keys))
        .with_filter(osmium.filter.KeyFilter(*keys))
    )
    factory = osmium.geom.WKBFactory()
    ids: list[str] = []
    tags: list[str] = []
    wkbs: list[str] = []
    for obj in processor:
        feature = _feature(obj, keys, factory, stats)
        if feature is None:
            continue
        ids.append(feature[0])
        wkbs.append(feature[1])
        tags.append(feature[2])
        if len(ids) >= BATCH_SIZE:
            yield to_batch(ids, tags, wkbs, cell_deg, stats)
            ids, tags, wkbs = [], [], []
    if ids:
        yield to_batch(ids, tags, wkbs, cell_deg, stats)


def _feature(
    obj: Any, keys: tuple[str, ...], factory: osmium.geom.WKBFactory, stats: StreamStats
) -> tuple[str, str, str] | None:
    """The id, hex WKB and tags (JSON) of one element; None when it is not indexed itself."""
    try:
        found = _geometry(obj, factory)
    except osmium.InvalidLocationError:  # a node missing from the extract
        stats.counts["skipped_invalid_location"] += 1
        return None
    except RuntimeError:  # osmium's geometry_error: an empty or degenerate geometry
        stats.counts["skipped_bad_geometry"] += 1
        return None
    if found is None:
        return None
    fid, wkb, counter = found
    stats.counts[counter] += 1
    if not fid:
        return None
    stats.newest = max(stats.newest, obj.timestamp)
    # One lookup per wanted key is faster in pyosmium than iterating over all the tags.
    tags = {k: v for k in keys if (v := obj.tags.get(k)) is not None}
    return fid, wkb, json.dumps(tags, ensure_ascii=False)


def _geometry(obj: Any, factory: osmium.geom.WKBFactory) -> tuple[str, str, str] | None:
    """The id, hex WKB and counter name of one element; None, or no id, when it is skipped."""
    kind = obj.type_str()
    if kind == "n":
        return f"n{obj.id}", factory.create_point(obj), "points"
    if kind == "w":
        if obj.is_closed() and len(obj.nodes) > 3 and not is_linear(obj.tags):
            return "", "", "area_ways"  # osmium's area assembler emits it as an area
        return f"w{obj.id}", factory.create_linestring(obj), "lines"
    if kind != "a":
        return None  # a relation's geometry comes as an area
    if not obj.from_way():
        return f"r{obj.orig_id()}", factory.create_multipolygon(obj), "areas_from_relations"
    if is_linear(obj.tags):
        return None  # already emitted as a line
    return f"w{obj.orig_id()}", factory.create_multipolygon(obj), "areas_from_ways"


def to_batch(
    ids: list[str], tags: list[str], wkbs: list[str], cell_deg: float, stats: StreamStats
) -> pa.RecordBatch:
    """Decode, bound and grid a batch of features into rows, one per cell a feature touches."""
    geoms = shapely.from_wkb(np.asarray(wkbs, dtype=object))
    single = (shapely.get_type_id(geoms) == 6) & (shapely.get_num_geometries(geoms) == 1)
    geoms[single] = shapely.get_geometry(geoms[single], 0)  # areas: Polygon when one part
    bounds = shapely.bounds(geoms)
    valid = ~np.isnan(bounds).any(axis=1)  # an empty geometry has no cell
    stats.counts["skipped_bad_geometry"] += int((~valid).sum())
    rows, cells = explode_cells(bounds[valid], cell_deg)
    rows = np.flatnonzero(valid)[rows]
    stats.counts["rows"] += len(rows)
    columns = [
        pa.array(ids).take(rows),
        pa.array(tags).take(rows),
        pa.array(shapely.to_wkb(geoms[rows]), type=pa.binary()),
        *(pa.array(bounds[rows, i]) for i in range(4)),
        cells,
    ]
    return pa.record_batch(columns, schema=ROW_SCHEMA)


def cell_range(bounds: np.ndarray, cell_deg: float) -> np.ndarray:
    """Integer cell indices (ix0, iy0, ix1, iy1) of the cells that each bbox row touches."""
    return np.floor(np.asarray(bounds, dtype=np.float64) / cell_deg).astype(np.int64)


def explode_cells(bounds: np.ndarray, cell_deg: float) -> tuple[np.ndarray, pa.Array]:
    """Repeat each feature once per cell it touches.

    Returns:
        The source row of each output row, and the cell name (``"<ix>_<iy>"`` or ``BIG_CELL``)
        of each output row.
    """
    rng = cell_range(bounds, cell_deg)
    nx, ny = rng[:, 2] - rng[:, 0] + 1, rng[:, 3] - rng[:, 1] + 1
    big = nx * ny > MAX_CELLS_PER_FEATURE
    per_row = np.where(big, 1, nx * ny)
    rows = np.repeat(np.arange(len(rng)), per_row)
    offset = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    ix = (rng[rows, 0] + offset % nx[rows]).astype(str)
    iy = (rng[rows, 1] + offset // nx[rows]).astype(str)
    names = pc.binary_join_element_wise(pa.array(ix), pa.array(iy), "_")
    return rows, pc.if_else(pa.array(big[rows]), pa.scalar(BIG_CELL), names)


def compact_cells(cells: Path) -> int:
    """Rewrite each partition that the streamed write left in several files or row groups (a
    large file arrives in many batches, each adding a small row group) as one file of one row
    group, a partition at a time (bounded memory); returns how many were rewritten."""
    done = 0
    for cell in sorted(cells.glob("cell=*")):
        files = sorted(cell.glob("*.parquet"))
        if len(files) == 1 and pq.ParquetFile(files[0]).num_row_groups == 1:
            continue
        table = pa.concat_tables([pq.read_table(f) for f in files])
        tmp = cell / ".compact.parquet.tmp"
        pq.write_table(table, tmp, row_group_size=max(table.num_rows, 1))
        for f in files:
            f.unlink()
        os.replace(tmp, cell / "part-0.parquet")
        done += 1
    return done
