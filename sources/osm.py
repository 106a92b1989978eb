"""OSM labels: stream an OSM file once into a spatially partitioned GeoParquet index, then
answer each shard's bbox query from the few partitions it touches.

Layout of an index (``cache_dir/osm-<sha256[:16]>-<params hash>/``)::

    meta.json                             input, checksum, counts, tag keys, cell size, ...
    cells/cell=<ix>_<iy>/part-<i>.parquet the features whose bbox touches that cell
    cells/cell=big/part-<i>.parquet       features touching over MAX_CELLS_PER_FEATURE cells

``cells/`` is a hive-partitioned GeoParquet dataset: ``geopandas.read_parquet(root / "cells")``
reads it whole (a feature appears once per cell it touches).

Cell ``(ix, iy)`` covers lon ``[ix, ix + 1) * cell_deg`` and lat ``[iy, iy + 1) * cell_deg``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import osmium
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from osmium.version import pyosmium_release

from geoweave.errors import FatalError
from geoweave.sources.checksums import InputChecksums, file_fingerprint, file_sha256
from geoweave.sources.labels import DEFAULT_TAG_KEYS, LABEL_CRS, BBox, empty_labels
from geoweave.sources.osm_stream import (
    BIG_CELL,
    ROW_SCHEMA,
    StreamStats,
    cell_range,
    compact_cells,
    location_storage,
    stream_batches,
)

if TYPE_CHECKING:
    import geopandas as gpd

FORMAT_VERSION = 2  # 2: keyed by the quick fingerprint, meta.json holds "fingerprint"
log = logging.getLogger("geoweave")
META_FILE = "meta.json"
CELLS_DIR = "cells"
CACHED_CELLS = 64


def build_osm_index(
    path: str | Path,
    cache_dir: str | Path,
    tag_keys: Sequence[str] = DEFAULT_TAG_KEYS,
    cell_deg: float = 0.05,
    verify: bool = False,
) -> OsmIndex:
    """Build the label index of an OSM file, or reuse the one already built from it.

    The index is written into a temporary sibling directory and renamed into place only when
    complete, so a failed build leaves nothing behind and a rerun starts clean. It is keyed by
    the file's quick fingerprint (size, mtime and sampled blocks: ``file_fingerprint``), not a
    hash of the whole file on every run; its meta.json holds the file's full sha256 too, taken
    when it was built. ``verify`` hashes the whole file again and rebuilds the index when the
    hashes differ.

    Args:
        path: ``.osm.pbf``, ``.osm`` or ``.osm.bz2`` file (anything osmium reads).
        cache_dir: where indexes live; one subdirectory per (file checksum, parameters).
        tag_keys: keep elements with at least one of these keys, and only these keys.
        cell_deg: size of the grid cells that partition the index, in degrees.
        verify: check the file's full sha256 against the index's (``--verify-inputs``).

    Returns:
        The index, ready to query.

    Raises:
        FatalError: the file is missing, or osmium cannot read it (corrupt, truncated).
    """
    path, cache_dir = Path(path), Path(cache_dir)
    if not path.is_file():
        raise FatalError(
            f"OSM file not found: {path}. Check the OSM path in the recipe, or download an "
            "extract (for example from https://download.geofabrik.de)."
        )
    keys, cell_deg = tuple(dict.fromkeys(tag_keys)), float(cell_deg)
    if not keys or not cell_deg > 0:
        raise FatalError(f"OSM index needs tag keys and cell_deg > 0, got {keys}, {cell_deg}")
    fingerprint = file_fingerprint(path)
    root = cache_dir / index_name(fingerprint, keys, cell_deg)
    if _is_complete(root, fingerprint) and not (verify and _stale(root, path)):
        return OsmIndex(root)
    tmp = cache_dir / f".{root.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)  # not mkdtemp: the index must get the umask's permissions
    try:
        hashing = InputChecksums()  # the full sha256 on a thread beside the index build
        hashing.hash(path)
        hashing.start()
        _write_index(path, tmp, keys, cell_deg, fingerprint, hashing)
        _publish(tmp, root, fingerprint)
    except ValueError as err:  # libosmium refuses a tag of over 256 characters (1024 bytes)
        if "too long" not in str(err):
            raise
        raise FatalError(
            f"Cannot read the OSM file {path}: {err} (libosmium's limit is 256 characters; the "
            "OSM API allows 255): the file breaks OSM's own rules. Shorten or remove that tag, "
            "or use an extract from an OSM server, and rerun."
        ) from err
    except RuntimeError as err:  # what osmium raises for unreadable input
        raise FatalError(
            f"Cannot read the OSM file {path}: {err}. The file looks corrupt or truncated: "
            "download it again (check its size or checksum against the source) and rerun."
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return OsmIndex(root)


def index_name(fingerprint: str, tag_keys: Sequence[str], cell_deg: float) -> str:
    """Directory name of the index of one file built with one set of parameters."""
    params = json.dumps([sorted(tag_keys), cell_deg, FORMAT_VERSION])
    file_id = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return f"osm-{file_id}-{hashlib.sha256(params.encode()).hexdigest()[:8]}"


def _stale(root: Path, path: Path) -> bool:
    """``--verify-inputs``: the whole file hashed again differs from the index's hash."""
    recorded = (_read_meta(root) or {}).get("checksum")
    now = file_sha256(path)
    if recorded != now:
        log.warning(
            "OSM file %s changed in place (its sha256 differs from its index's, though size, "
            "mtime and sampled blocks match): rebuilding the index", path,
        )  # fmt: skip
        return True
    return False


def _read_meta(root: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_complete(root: Path, fingerprint: str) -> bool:
    meta = _read_meta(root) or {}
    return meta.get("fingerprint") == fingerprint and meta.get("format_version") == FORMAT_VERSION


def _write_index(
    path: Path,
    out: Path,
    keys: tuple[str, ...],
    cell_deg: float,
    fingerprint: str,
    hashing: InputChecksums,
) -> None:
    """Stream the OSM file into partitioned Parquet files under ``out``, then meta.json."""
    import pyarrow.dataset as ds  # imports pandas (0.3 s): only when an index is built

    started = time.perf_counter()
    stats = StreamStats()
    scratch = out.with_name(out.name + ".nodes")
    scratch.mkdir(exist_ok=True)
    try:
        ds.write_dataset(
            stream_batches(path, keys, cell_deg, stats, location_storage(path, scratch)),
            out / CELLS_DIR,
            schema=ROW_SCHEMA,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("cell", pa.string())]), flavor="hive"),
            basename_template="part-{i}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    compacted = compact_cells(out / CELLS_DIR)
    meta = {
        "format_version": FORMAT_VERSION,
        "input": str(path.resolve()),
        "input_bytes": path.stat().st_size,
        "fingerprint": fingerprint,
        "checksum": hashing.result()[str(path)],
        "tag_keys": list(keys),
        "cell_deg": cell_deg,
        "counts": {
            **stats.counts,
            "partitions": len(list((out / CELLS_DIR).glob("cell=*"))),
            "partitions_compacted": compacted,
        },
        "osm_timestamp": stats.newest_iso() or _header_time(path),
        "osmium": pyosmium_release,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _header_time(path: Path) -> str | None:
    """The replication timestamp in the file header, when the file has one."""
    header = osmium.FileProcessor(str(path)).header
    return header.get("osmosis_replication_timestamp") or header.get("timestamp") or None


def _publish(tmp: Path, root: Path, checksum: str) -> None:
    """Move a complete build into place; a concurrent build that won the race is kept."""
    if root.exists():
        shutil.rmtree(root)  # stale: a different format version or an unreadable meta.json
    try:
        os.replace(tmp, root)
    except OSError:
        if not _is_complete(root, checksum):
            raise


# A decoded partition: ids, tag dicts, geometries (object arrays) and an (n, 4) bounds array.
Cell = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class OsmIndex:
    """A built OSM label index; a ``geoweave.sources.labels.LabelSource``.

    Attributes:
        name: ``"osm"``.
        root: the index directory.
        checksum: sha256 of the OSM file the index was built from.
    """

    name = "osm"
    fixed_features = True  # an id always comes with the same tags and geometry (the join caches)

    def __init__(self, root: str | Path, cached_cells: int = CACHED_CELLS) -> None:
        """Open the index at ``root``, keeping up to ``cached_cells`` partitions in memory."""
        self.root = Path(root)
        meta = _read_meta(self.root)
        if meta is None:
            raise FatalError(
                f"No OSM index at {self.root}: meta.json is missing or unreadable. "
                "Build it with build_osm_index()."
            )
        self._meta = meta
        self.checksum: str = meta["checksum"]
        self._cell_deg = float(meta["cell_deg"])
        self._cells = {p.name.removeprefix("cell=") for p in (self.root / CELLS_DIR).glob("cell=*")}
        self._load = functools.lru_cache(maxsize=cached_cells)(self._read_cell)

    @property
    def meta(self) -> dict[str, Any]:
        """The contents of the index's meta.json."""
        return json.loads(json.dumps(self._meta))

    def query(self, bbox: BBox) -> gpd.GeoDataFrame:
        """Return the features whose geometry intersects ``bbox`` (west, south, east, north).

        Only the partitions of the cells the box touches are read (and cached); features
        spanning several cells are returned once.
        """
        west, south, east, north = (float(v) for v in bbox)
        if not (west <= east and south <= north):
            raise ValueError(f"bbox must be (west, south, east, north), got {bbox}")
        cells = [self._load(cell) for cell in self._cells_for(west, south, east, north)]
        if not cells:
            return empty_labels()
        ids, tags, geoms, bounds = (
            np.concatenate([c[i] for c in cells]) if len(cells) > 1 else cells[0][i]
            for i in range(4)
        )
        minx, miny, maxx, maxy = bounds.T
        overlap = (minx <= east) & (maxx >= west) & (miny <= north) & (maxy >= south)
        idx = np.flatnonzero(overlap)
        _, first = np.unique(ids[idx], return_index=True)
        idx = idx[first]
        idx = idx[shapely.intersects(geoms[idx], shapely.box(west, south, east, north))]
        if idx.size == 0:
            return empty_labels()
        import geopandas as gpd  # 0.3 s to import: only in a build that reads OSM labels

        frame = {"id": ids[idx].tolist(), "tags": tags[idx].tolist()}
        return gpd.GeoDataFrame(frame, geometry=geoms[idx], crs=LABEL_CRS)

    def _cells_for(self, west: float, south: float, east: float, north: float) -> list[str]:
        """Names of the existing partitions a box touches, the shared big partition included."""
        ix0, iy0, ix1, iy1 = cell_range(np.array([west, south, east, north]), self._cell_deg)
        if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) <= len(self._cells):
            wanted = (f"{x}_{y}" for x in range(ix0, ix1 + 1) for y in range(iy0, iy1 + 1))
            names = [name for name in wanted if name in self._cells]
        else:  # a box larger than the index: scan the partitions instead of the grid
            names = [name for name in self._cells if _in_range(name, ix0, iy0, ix1, iy1)]
        if BIG_CELL in self._cells:
            names.append(BIG_CELL)
        return sorted(names)

    def _read_cell(self, name: str) -> Cell:
        """One partition, decoded once (ids, tag dicts, shapely geometries, bounds) and cached."""
        files = sorted((self.root / CELLS_DIR / f"cell={name}").glob("*.parquet"))
        table = pa.concat_tables([pq.ParquetFile(f).read() for f in files])
        ids = table["id"].to_numpy(zero_copy_only=False).astype(object)
        tags = np.empty(table.num_rows, dtype=object)
        tags[:] = [json.loads(t) for t in table["tags"].to_pylist()]
        geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
        bounds = np.column_stack([table[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy")])
        return ids, tags, geoms, bounds


def _in_range(name: str, ix0: int, iy0: int, ix1: int, iy1: int) -> bool:
    if name == BIG_CELL:
        return False
    x, y = (int(v) for v in name.split("_"))
    return ix0 <= x <= ix1 and iy0 <= y <= iy1
