"""The DuckDB manifest: one file that records every planned tile, shard and run.

Rebuilt from the shard sidecars at the end of every run (so it always matches the files), written
under a temporary name and renamed. Runs accumulate in ``_runs/*.json`` beside it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from geoweave.manifests.passes import overlays
from geoweave.record import SIDECAR_SCHEMA
from geoweave.stats import COMPLETE, SHARDS_SCHEMA, ShardStats

MANIFEST = "manifest.duckdb"
PLAN = "plan.parquet"
RUNS_DIR = "_runs"

REJECTS_VIEW = """
CREATE VIEW rejects AS
SELECT key, shard, source, gsd_m, bbox, status, reject_reason, scores
FROM samples WHERE status <> 'kept'
"""
# Tiles of a failed shard have no sidecar; they enter the manifest from the plan as 'failed'.
MISSING_FROM_PLAN = """
INSERT INTO samples BY NAME
SELECT p.key, p.shard::INTEGER AS shard, 'failed' AS status, 'shard_failed' AS reject_reason,
       p.source, p.crs, p.gsd_m, p.size_px::INTEGER AS size_px
FROM read_parquet(?) p ANTI JOIN samples s ON s.key = p.key
"""


def record_run(out_dir: Path, record: dict[str, Any]) -> None:
    runs = out_dir / RUNS_DIR
    runs.mkdir(exist_ok=True)
    path = runs / f"{record['run_id']}.json"
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def _shard_stats(out_dir: Path, name: str) -> list[ShardStats]:
    return [
        ShardStats.from_dict(json.loads(p.read_text()))
        for p in sorted(out_dir.glob(f"{name}-*.stats.json"))
    ]


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


def _runs_table(out_dir: Path) -> pa.Table:
    """One row per run; nested fields (recipe, versions, inputs) as JSON text."""
    rows = []
    for p in sorted((out_dir / RUNS_DIR).glob("*.json")):
        r = json.loads(p.read_text())
        rows.append({f.name: _scalar(r.get(f.name)) for f in RUNS_SCHEMA})
    return pa.Table.from_pylist(rows, schema=RUNS_SCHEMA)


def _scalar(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value


def write_manifest(out_dir: Path, name: str) -> Path:
    """(Re)build ``manifest.duckdb`` from the sidecars, stats files, plan and run records."""
    tmp = out_dir / f"{MANIFEST}.tmp-{uuid.uuid4().hex[:8]}"
    con = duckdb.connect(str(tmp))
    try:
        sidecars = sorted(str(p) for p in out_dir.glob(f"{name}-*.samples.parquet"))
        con.register("empty_samples", SIDECAR_SCHEMA.empty_table())
        con.execute("CREATE TABLE samples AS SELECT * FROM empty_samples")
        if sidecars:
            con.execute("INSERT INTO samples SELECT * FROM read_parquet(?)", [sidecars])
        if (out_dir / PLAN).exists():
            con.execute(MISSING_FROM_PLAN, [str(out_dir / PLAN)])
        con.execute(REJECTS_VIEW)
        stats = _shard_stats(out_dir, name)
        for table, data in (
            ("shards", pa.Table.from_pylist([s.row() for s in stats], schema=SHARDS_SCHEMA)),
            ("funnel", funnel_table(stats)),
            ("runs", _runs_table(out_dir)),
        ):
            con.register(f"{table}_src", data)
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_src")
            con.unregister(f"{table}_src")
        for table, path in overlays(out_dir).items():
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM read_parquet(?)', [str(path)])
        con.unregister("empty_samples")
    finally:
        con.close()
    final = out_dir / MANIFEST
    os.replace(tmp, final)
    return final
