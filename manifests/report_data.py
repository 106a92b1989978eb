"""What the HTML report shows, read from a build's manifest (read-only) and its shard files.

Everything is computed in DuckDB over the ``samples``, ``funnel``, ``shards``, ``runs`` and
``reviews`` tables, so a large build costs a few scans, not a Python loop over its rows; the
only files read besides the manifest are the shards holding the gallery's images
(``report_images``). Rendering is ``report_html``'s job: this module returns plain data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from geoweave.manifests.query import open_manifest
from geoweave.manifests.report_images import gallery_images
from geoweave.manifests.report_stats import Histogram, histograms

T = TypeVar("T")
KEPT = "status = 'kept'"
SQL = {
    "status": "SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1",
    "reasons": f"SELECT reject_reason, count(*) n FROM samples WHERE NOT ({KEPT}) "
    "GROUP BY 1 ORDER BY n DESC, 1",
    "funnel": "SELECT position, step, rejected, remaining FROM funnel ORDER BY 1",
    "shards": "SELECT count(*), count(*) FILTER (status = 'complete'), "
    "coalesce(sum(bytes), 0) FROM shards",
    "by_gsd": f"SELECT gsd_m, count(*) FILTER ({KEPT}), count(*) FROM samples "
    "WHERE gsd_m IS NOT NULL GROUP BY 1 ORDER BY 1",
    "splits": f"SELECT split, count(*) FROM samples WHERE {KEPT} AND split IS NOT NULL "
    "GROUP BY 1 ORDER BY array_position(['train', 'val', 'test', 'buffer'], split), 1",
}


@dataclass
class Footprint:
    """One tile on the map: its lon/lat box, status and split."""

    west: float
    south: float
    east: float
    north: float
    status: str
    split: str | None
    gsd_m: float
    key: str
    reason: str | None


@dataclass
class GalleryItem:
    """One kept sample of the gallery, its image read from its shard."""

    key: str
    source: str
    gsd_m: float
    split: str | None
    captions: list[dict[str, Any]]
    qa: list[dict[str, Any]]
    scores: dict[str, float]
    labels: list[str]
    image: bytes | None = None


@dataclass
class ReportData:
    """Everything the page shows; lists of (label, number) rows are in display order."""

    name: str
    status: dict[str, int]
    reasons: list[tuple[str, int]]
    funnel: list[tuple[int, str, int, int]]
    shards: tuple[int, int, int]  # planned, complete, bytes
    by_gsd: list[tuple[float, int, int]]  # gsd, kept, planned
    splits: list[tuple[str, int]]
    footprints: list[Footprint]
    footprints_total: int
    area: tuple[float, float, float, float] | None
    gallery: list[GalleryItem]
    histograms: list[Histogram]
    landcover: list[tuple[str, float]]
    top_tags: list[tuple[str, int, int]]  # tag, tiles, elements
    reviews: dict[str, Any] | None
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.status.get("kept", 0)

    @property
    def planned(self) -> int:
        return sum(self.status.values())


def gather(out_dir: Path, seed: int = 0, gallery: int = 24, max_tiles: int = 20000) -> ReportData:
    """Read what the report shows from the build in ``out_dir`` (FatalError without a
    manifest). ``gallery`` kept samples are drawn by ``seed``; at most ``max_tiles``
    footprints are drawn on the map (a seeded sample of them beyond that).

    The three largest reads (histograms, footprints, gallery) run on threads, each on a cursor
    of its own, beside the small queries: DuckDB releases the GIL (the benchmark's 36,864
    samples, 2 CPUs: 0.47-0.54 s -> 0.36-0.38 s)."""
    con = open_manifest(out_dir, capped=True)
    try:
        with ThreadPoolExecutor(3, thread_name_prefix="report") as pool:
            hist = pool.submit(_on_cursor, con, histograms)
            feet = pool.submit(_on_cursor, con, _footprints, max_tiles)
            items = pool.submit(_on_cursor, con, _gallery_items, out_dir, seed, gallery)
            run = _newest_run(con)
            return ReportData(  # the small queries first (arguments run in order), then the rest
                name=str(run.get("name") or out_dir.name),
                status=dict(_rows(con, SQL["status"])),
                reasons=_rows(con, SQL["reasons"]),
                funnel=_rows(con, SQL["funnel"]),
                shards=_one(con, SQL["shards"]),
                by_gsd=_rows(con, SQL["by_gsd"]),
                splits=_rows(con, SQL["splits"]),
                area=_area(run),
                landcover=_landcover(con),
                top_tags=_top_tags(con),
                reviews=_reviews(con),
                run=run,
                footprints=feet.result()[0],
                footprints_total=feet.result()[1],
                gallery=items.result(),
                histograms=hist.result(),
            )
    finally:
        con.close()


def _on_cursor(con: duckdb.DuckDBPyConnection, read: Callable[..., T], *args: Any) -> T:
    """``read(cursor, *args)`` on a cursor of its own (a connection per thread)."""
    cur = con.cursor()
    try:
        return read(cur, *args)
    finally:
        cur.close()


def _gallery_items(
    con: duckdb.DuckDBPyConnection, out_dir: Path, seed: int, n: int
) -> list[GalleryItem]:
    items = _gallery(con, seed, n)
    gallery_images(out_dir, items, _shard_files(con, {i.key: i for i in items}, out_dir))
    return items


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[Any]:
    return [tuple(r) for r in con.execute(sql, params or []).fetchall()]


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def _newest_run(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    cur = con.execute("SELECT * FROM runs ORDER BY started DESC NULLS LAST LIMIT 1")
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    run = dict(zip(names, row, strict=True)) if row else {}
    for key in ("recipe", "versions", "timings"):
        try:
            run[key] = json.loads(run.get(key) or "{}")
        except ValueError:
            run[key] = {}
    return run


def _area(run: dict[str, Any]) -> tuple[float, float, float, float] | None:
    bbox = ((run.get("recipe") or {}).get("area") or {}).get("bbox")
    return (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])) if bbox else None


def _footprints(con: duckdb.DuckDBPyConnection, limit: int) -> tuple[list[Footprint], int]:
    """The tiles with a footprint (a tile of a shard that never wrote its sidecar has none),
    coarse GSDs first so finer tiles are drawn over them; a seeded sample beyond ``limit``."""
    (total,) = _one(con, "SELECT count(*) FROM samples WHERE bbox IS NOT NULL")
    order = "md5(key)" if total > limit else "key"
    rows = con.execute(
        "SELECT * FROM (SELECT bbox.west, bbox.south, bbox.east, bbox.north, status, split, "
        f"gsd_m, key, reject_reason FROM samples WHERE bbox IS NOT NULL ORDER BY {order} "
        "LIMIT ?) ORDER BY gsd_m DESC, key",
        [limit],
    ).fetchall()
    return [Footprint(*r) for r in rows], int(total)


def _gallery(con: duckdb.DuckDBPyConnection, seed: int, n: int) -> list[GalleryItem]:
    """``n`` kept samples in a seeded random order (an MD5 of key and seed: the same seed
    draws the same samples, whatever the order of the rows)."""
    rows = con.execute(
        f"SELECT key, source, gsd_m, split, captions, qa, scores, osm FROM samples WHERE {KEPT} "
        "ORDER BY md5(key || ':' || ?), key LIMIT ?",
        [str(seed), n],
    ).fetchall()
    return [
        GalleryItem(key, source, gsd, split, caps or [], qa or [], scores or {}, _labels(osm or []))
        for key, source, gsd, split, caps, qa, scores, osm in rows
    ]


def _labels(elements: list[dict[str, Any]], limit: int = 8) -> list[str]:
    """``key=value`` of a tile's labels, most common first (the first ``limit``)."""
    counts: dict[str, int] = {}
    for e in elements:
        for k, v in (e.get("tags") or {}).items():
            counts[f"{k}={v}"] = counts.get(f"{k}={v}", 0) + 1
    return [f"{t} ×{n}" if n > 1 else t for t, n in sorted(counts.items(), key=lambda x: -x[1])][
        :limit
    ]


def _shard_files(
    con: duckdb.DuckDBPyConnection, items: dict[str, GalleryItem], out_dir: Path
) -> dict[str, list[Path]]:
    """For each gallery key, the files of its shard (from the shards table)."""
    if not items:
        return {}
    rows = con.execute(
        "SELECT s.key, h.files FROM samples s JOIN shards h USING (shard) WHERE s.key IN "
        "(SELECT unnest(?))",
        [list(items)],
    ).fetchall()
    return {key: [out_dir / f for f in json.loads(files or "{}")] for key, files in rows}


def _landcover(con: duckdb.DuckDBPyConnection) -> list[tuple[str, float]]:
    """Each land-cover class's mean share of the kept tiles."""
    return _rows(
        con,
        f"WITH k AS (SELECT landcover FROM samples WHERE {KEPT}), "
        "e AS (SELECT unnest(map_keys(landcover)) c, unnest(map_values(landcover)) v FROM k) "
        "SELECT c, sum(v) / (SELECT count(*) FROM k) AS mean_share FROM e GROUP BY c "
        "ORDER BY mean_share DESC, c",
    )


def _top_tags(con: duckdb.DuckDBPyConnection, n: int = 20) -> list[tuple[str, int, int]]:
    """The ``n`` commonest ``key=value`` tags of kept samples' labels: tiles, elements."""
    return _rows(
        con,
        f"WITH e AS (SELECT key, unnest(osm) e FROM samples WHERE {KEPT}), "
        "t AS (SELECT key, unnest(map_keys(e.tags)) k, unnest(map_values(e.tags)) v FROM e) "
        "SELECT k || '=' || v, count(DISTINCT key) tiles, count(*) elements FROM t "
        "GROUP BY ALL ORDER BY tiles DESC, elements DESC, 1 LIMIT ?",
        [n],
    )


def _reviews(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """Review counts, issue tags and the ``review_stats`` rows; None when nothing was
    reviewed."""
    (has,) = _one(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'reviews'")
    if not has:
        return None
    counts = _one(
        con,
        "SELECT count(*), count(*) FILTER (verdict = 'accept'), count(*) FILTER "
        "(verdict = 'reject'), count(*) FILTER (captions_edited), count(*) FILTER (qa_edited) "
        "FROM reviews",
    )
    return {
        "reviewed": counts[0], "accepted": counts[1], "rejected": counts[2],
        "captions_edited": counts[3], "qa_edited": counts[4],
        "issues": _rows(con, "SELECT i, count(*) n FROM (SELECT unnest(issues) i FROM reviews) "
                        "GROUP BY 1 ORDER BY n DESC, 1"),
        "stats": _rows(con, "SELECT dimension, value, reviewed, acceptance FROM review_stats "
                       "ORDER BY 1, 2 NULLS LAST"),
    }  # fmt: skip
