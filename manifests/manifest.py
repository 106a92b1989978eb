"""The DuckDB manifest: one file that records every planned tile, shard and run.

Rebuilt from the shard sidecars at every run (so it always matches the files), written under a
temporary name and renamed (``manifest_builder.py``; a build loads the sidecars as its shards
complete). This module holds its tables and the run records (``_runs/*.json`` beside it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.errors import FatalError
from geoweave.files import atomic_path, crash_point
from geoweave.manifests.passes import overlays
from geoweave.stats import COMPLETE, SHARDS_SCHEMA, ShardStats
from geoweave.tile import grid_id

log = logging.getLogger("geoweave")

MANIFEST = "manifest.duckdb"
PLAN = "plan.parquet"
RUNS_DIR = "_runs"

REJECTS_VIEW = """
CREATE VIEW rejects AS
SELECT key, shard, source, gsd_m, bbox, status, reject_reason, scores
FROM samples WHERE status <> 'kept'
"""
# A cell's samples (every source and acquisition date over one grid cell at one GSD), oldest
# first: the way to find the same ground at several dates.
CELLS_VIEW = """
CREATE VIEW cells AS
SELECT cell, gsd_m, count(*) AS samples, count(*) FILTER (status = 'kept') AS kept,
       count(DISTINCT acquired) AS dates, min(acquired) AS first_acquired,
       max(acquired) AS last_acquired, list(key ORDER BY acquired, key) AS keys,
       list(acquired ORDER BY acquired, key) AS acquired
FROM samples WHERE cell IS NOT NULL GROUP BY cell, gsd_m
"""
# Tiles of a shard without a sidecar enter the manifest from the plan as 'failed': reason
# 'shard_failed' when the shard failed, 'not_built' when it never ran (the disk filled up).
MISSING_FROM_PLAN = """
INSERT INTO samples BY NAME
SELECT p.key, p.shard::INTEGER AS shard, 'failed' AS status,
       CASE WHEN p.shard IN (SELECT shard FROM shards WHERE status = 'failed')
            THEN 'shard_failed' ELSE 'not_built' END AS reject_reason,
       p.source, p.crs, p.gsd_m, p.size_px::INTEGER AS size_px{split},
       g.grid || '_' || p.col || '_' || p.row AS cell
FROM read_parquet(?) p JOIN plan_grids g USING (gsd_m, crs) ANTI JOIN samples s ON s.key = p.key
"""


def record_run(out_dir: Path, record: dict[str, Any]) -> None:
    runs = out_dir / RUNS_DIR
    runs.mkdir(exist_ok=True)
    with atomic_path(runs / f"{record['run_id']}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
        crash_point("run_record")


def _shard_stats(out_dir: Path, name: str) -> list[ShardStats]:
    """Every readable stats file; a damaged one is skipped with a warning (its shard is not
    complete, so a rerun rebuilds it)."""
    out = []
    for p in sorted(out_dir.glob(f"{name}-*.stats.json")):
        try:
            out.append(ShardStats.from_dict(json.loads(p.read_text())))
        except (OSError, ValueError, TypeError) as e:
            log.warning("skipping the damaged stats file %s: %s", p, e)
    return out


FUNNEL_SCHEMA = pa.schema(
    [("position", pa.int32()), ("step", pa.string()), ("rejected", pa.int64())]
    + [("remaining", pa.int64())]
)


def funnel_table(stats: list[ShardStats]) -> pa.Table:
    """How many samples each stage or filter removed, in the order they ran, over the complete
    shards; ``remaining`` is what was left after the step (the last row: the kept samples)."""
    complete = [s for s in stats if s.status == COMPLETE]
    order: dict[str, int] = {}
    for s in complete:
        for step, n in s.funnel.items():
            order[step] = order.get(step, 0) + n
    remaining = sum(s.tiles for s in complete)
    rows = []
    for i, (step, n) in enumerate(order.items()):
        remaining -= n
        rows.append({"position": i, "step": step, "rejected": n, "remaining": remaining})
    return pa.Table.from_pylist(rows, schema=FUNNEL_SCHEMA)


RUNS_SCHEMA = pa.schema(
    [("run_id", pa.string()), ("name", pa.string()), ("started", pa.float64())]
    + [("finished", pa.float64()), ("recipe", pa.string()), ("versions", pa.string())]
    + [("inputs", pa.string()), ("shards_planned", pa.int64()), ("shards_run", pa.int64())]
    + [("shards_failed", pa.int64()), ("tiles_planned", pa.int64()), ("osm_snapshot", pa.string())]
    + [("timings", pa.string())]
)


def run_records(out_dir: Path) -> list[dict[str, Any]]:
    """The run records, oldest first. A damaged one (a crash while it was written by an older
    version, a truncated copy) is skipped with a warning naming it."""
    records = []
    for p in sorted((out_dir / RUNS_DIR).glob("*.json")):
        try:
            record = json.loads(p.read_text())
            if not isinstance(record, dict) or "run_id" not in record:
                raise ValueError("not a run record")
        except (OSError, ValueError) as e:
            log.warning("skipping the damaged run record %s: %s", p, e)
            continue
        records.append(record)
    return records


def newest_run(out_dir: Path) -> dict[str, Any] | None:
    records = run_records(out_dir)
    return max(records, key=lambda r: r.get("started") or 0) if records else None


def finished_run(out_dir: Path) -> dict[str, Any]:
    """The newest run record of a build that has its manifest; FatalError (bad input) when
    the folder holds none (the commands that read a finished build: review, export)."""
    run = newest_run(out_dir)
    if run is None or not (out_dir / MANIFEST).exists():
        raise FatalError(f"{out_dir} holds no finished build (no {MANIFEST}): run it first")
    return run


def _runs_table(out_dir: Path) -> pa.Table:
    """One row per run; nested fields (recipe, versions, inputs) as JSON text."""
    rows = [{f.name: _scalar(r.get(f.name)) for f in RUNS_SCHEMA} for r in run_records(out_dir)]
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def write_tables(con: duckdb.DuckDBPyConnection, out_dir: Path, name: str) -> None:
    """Everything but the sidecar rows: failed tiles from the plan, shards, funnel, runs,
    pass overlays and the rejects view."""
    stats = _shard_stats(out_dir, name)
    for table, data in (
        ("shards", pa.Table.from_pylist([s.row() for s in stats], schema=SHARDS_SCHEMA)),
        ("funnel", funnel_table(stats)),
        ("runs", _runs_table(out_dir)),
    ):
        con.register(f"{table}_src", data)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_src")
        con.unregister(f"{table}_src")
    if (out_dir / PLAN).exists() and not _every_tile_loaded(con, out_dir / PLAN):
        has_split = "split" in pq.read_schema(out_dir / PLAN).names  # plans before splits: none
        sql = MISSING_FROM_PLAN.format(split=", p.split" if has_split else "")
        _register_grids(con, out_dir / PLAN)
        con.execute(sql, [str(out_dir / PLAN)])
        con.unregister("plan_grids")
    con.execute(REJECTS_VIEW)
    if "cell" in {r[0] for r in con.execute("DESCRIBE samples").fetchall()}:
        con.execute(CELLS_VIEW)
    for table, path in overlays(out_dir).items():
        con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet(?)', [str(path)])
        _apply_rejections(con, table)
    from geoweave.manifests.reviews import apply as apply_reviews

    apply_reviews(con, out_dir)  # human reviews imported from Label Studio, if any


def _every_tile_loaded(con: duckdb.DuckDBPyConnection, plan: Path) -> bool:
    """Whether ``samples`` holds a row for every tile of the plan: as many distinct keys as
    the plan has rows (a sidecar holds only tiles of the plan its build checked). Then no
    tile is failed or not built, and reading the plan for them is spared (60 ms of a 9,216-tile
    build's manifest)."""
    try:
        planned = pq.read_metadata(plan).num_rows
    except (OSError, ValueError):  # a damaged plan: the full query names it
        return False
    row = con.execute("SELECT count(DISTINCT key) FROM samples").fetchone()
    return row is not None and int(row[0]) == planned


def _register_grids(con: duckdb.DuckDBPyConnection, plan: Path) -> None:
    """``plan_grids(gsd_m, crs, grid)``: the plan's grids as cells name them (``grid_id``),
    so a tile that never got a sidecar still has its ``cell``."""
    pairs = con.execute("SELECT DISTINCT gsd_m, crs FROM read_parquet(?)", [str(plan)]).fetchall()
    grids = [{"gsd_m": g, "crs": c, "grid": grid_id(g, c)} for g, c in pairs]
    schema = pa.schema([("gsd_m", pa.float64()), ("crs", pa.string()), ("grid", pa.string())])
    con.register("plan_grids", pa.Table.from_pylist(grids, schema=schema))


def _apply_rejections(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """A pass overlay with ``key`` and ``reject_reason`` columns (near-duplicates) rejects
    those kept samples in the manifest, ``rejected_by`` the pass; the funnel gets its row."""
    columns = {row[0] for row in con.execute(f'DESCRIBE "{table}"').fetchall()}
    if not {"key", "reject_reason"} <= columns:
        return
    result = con.execute(
        f"""UPDATE samples SET status = 'rejected', reject_reason = o.reject_reason,
            rejected_by = ? FROM "{table}" o
        WHERE samples.key = o.key AND samples.status = 'kept' AND o.reject_reason IS NOT NULL""",
        [table],
    ).fetchone()
    con.execute(
        """INSERT INTO funnel SELECT (SELECT coalesce(max(position) + 1, 0) FROM funnel), ?, ?,
            (SELECT count(*) FROM samples WHERE status = 'kept')""",
        [table, int(result[0]) if result else 0],
    )
