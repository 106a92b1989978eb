"""``build-dataset export OUT --where SQL --to NEW_OUT``: a subset of a build as a build.

The kept samples of OUT's manifest that match ``--where`` (after corpus passes and reviews:
edited captions and QA pairs as the reviewer left them, reviewed rejections and
near-duplicates left out) are written to NEW_OUT as fresh shards in the source build's
formats (WebDataset tar and Parquet, each with its sidecar and checksummed stats), with the
images copied byte for byte from OUT's shard files and every record field kept (the split
too). NEW_OUT gets its own run record (naming the source build and the condition), the
corpus passes and a manifest, so ``query``, ``verify`` and ``review`` work on it as on any
build. NEW_OUT must be new or empty; it is locked while written.
"""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from geoweave.builders.outdir import OutputLock
from geoweave.builders.plan_file import PlanWriter, tiles_table
from geoweave.builders.writers import ShardWriter
from geoweave.errors import FatalError
from geoweave.files import atomic_path
from geoweave.manifests.manifest import PLAN, finished_run, record_run
from geoweave.manifests.manifest_builder import write_manifest
from geoweave.manifests.passes import run_passes
from geoweave.manifests.query import kept_batches
from geoweave.manifests.report import write_report_or_warn
from geoweave.manifests.review_tasks import images
from geoweave.tile import Tile

MAPS = ("landcover", "scores")  # Arrow maps: (key, value) pairs out of DuckDB, dicts in


def _as_meta(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row as ``Sample.metadata()`` gives it (maps as dicts)."""
    meta = dict(row)
    for name in MAPS:
        meta[name] = dict(meta[name] or {})
    meta["osm"] = [{**e, "tags": dict(e["tags"] or {})} for e in meta["osm"] or []]
    return meta


def _check_target(to_dir: Path, out_dir: Path) -> None:
    if to_dir.resolve() == out_dir.resolve():
        raise FatalError(f"--to {to_dir} is the build itself: give a new folder")
    if to_dir.exists() and any(to_dir.iterdir()):
        raise FatalError(f"--to {to_dir} is not empty: give a new or empty folder")


def export_subset(
    out_dir: Path, where: str | None, to_dir: Path, per_shard: int | None
) -> dict[str, Any]:
    """Write the subset; returns the summary ``print_summary`` prints. The samples stream
    from the manifest in key order, one shard's worth at a time, so a subset of any size
    is never all in memory."""
    t0 = time.time()
    run = finished_run(out_dir)
    _check_target(to_dir, out_dir)
    name, recipe = str(run["name"]), dict(run.get("recipe") or {})
    output = recipe.get("output") or {}
    formats = list(output.get("formats") or ["webdataset", "parquet"])
    per = per_shard or int(output.get("samples_per_shard") or 1000)
    batches = kept_batches(out_dir, "*", where, order_by="key", rows=per)
    first = next(batches, None)
    if first is None:
        raise FatalError(f"no kept sample of {out_dir} matches --where {where!r}")
    to_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(to_dir):
        with atomic_path(to_dir / PLAN) as tmp:
            plan = PlanWriter(tmp, per, {})
            try:
                shards = 0
                for rows in itertools.chain([first], batches):
                    _write_shard(out_dir, to_dir, name, shards, rows, formats)
                    plan.add(_plan_rows(rows, shards))
                    shards += 1
                written = plan.finish()
            except BaseException:
                plan.abort()
                raise
        record = _run_record(name, recipe, out_dir, where, t0, shards, written.num_tiles)
        record_run(to_dir, record)
        run_passes(to_dir, name, [("statistics_v1", {})])
        manifest = write_manifest(to_dir, name)
        write_report_or_warn(to_dir)  # a build of its own: its own report
    return {**record, "out_dir": str(to_dir), "manifest": str(manifest),
            "seconds": time.time() - t0}  # fmt: skip


def _write_shard(
    out_dir: Path,
    to_dir: Path,
    name: str,
    shard: int,
    rows: list[dict[str, Any]],
    formats: list[str],
) -> int:
    pictures = images(out_dir, name, rows)
    writer = ShardWriter(to_dir, name, shard, formats)
    try:
        for row in rows:
            if row["key"] not in pictures:
                raise FatalError(f"no image for {row['key']} in {out_dir}: run `verify` on it")
            jpeg, tif = pictures[row["key"]]
            writer.write_row({**_as_meta(row), "shard": shard}, True, jpeg, tif)
        writer.finish(["export"], {})
    except BaseException:
        writer.abort()
        raise
    return shard


def _plan_rows(rows: list[dict[str, Any]], shard: int) -> pa.Table:
    """One shard's samples as planned tiles (what ``verify`` and the manifest read)."""
    tiles = []
    for r in rows:
        ground = r["gsd_m"] * r["size_px"]  # the cell from the transform's origin (x, y)
        col, row = round(r["transform"][2] / ground), round(r["transform"][5] / ground) - 1
        tiles.append(Tile(r["key"], r["source"], r["crs"], r["gsd_m"], r["size_px"], col, row,
                          shard, None, r["item_id"], r["split"]))  # fmt: skip
    return tiles_table(tiles)


def _run_record(
    name: str, recipe: dict[str, Any], source: Path, where: str | None, t0: float,
    shards: int, samples: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t0))}-{uuid.uuid4().hex[:6]}",
        "name": name, "started": t0, "finished": time.time(), "recipe": recipe,
        "versions": {}, "inputs": {"exported_from": str(source), "where": where},
        "shards_planned": shards, "shards_run": shards, "shards_failed": 0,
        "tiles_planned": samples, "osm_snapshot": None,
    }  # fmt: skip
