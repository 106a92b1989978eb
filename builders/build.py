"""A whole build: check every input, plan, run the missing shards, the corpus passes, the
manifest (``prepare.py`` checks and plans; ``plan_check.py`` keeps a resume to one recipe).

Everything that can fail on bad input (recipe, imagery, label files, indexes) runs before the
output folder is touched, so a bad run leaves nothing behind.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from geoweave.builders.executor import run_shards
from geoweave.builders.outdir import (
    OutputLock,
    check_output_dir,
    make_output_dir,
    remove_temporaries,
)
from geoweave.builders.plan_check import check_plan, write_plan
from geoweave.builders.plan_file import Plan
from geoweave.builders.prepare import checked_prepare
from geoweave.builders.ray_start import RayStopper, init_ray, ray_shutdown, thaw_driver_heap
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import BuildContext
from geoweave.builders.writers import is_complete, sidecar_path
from geoweave.errors import DISK_FULL, BuildFailed, is_disk_full
from geoweave.files import DRIVER_ENV
from geoweave.manifests.manifest import record_run
from geoweave.manifests.manifest_builder import ManifestBuilder
from geoweave.manifests.passes import run_passes
from geoweave.sources.checksums import InputChecksums
from geoweave.sources.rasters import streaming_block_cache
from geoweave.stats import COMPLETE, ShardStats

log = logging.getLogger("geoweave")
VERSIONED = ("geoweave", "ray", "osmium", "rasterio", "duckdb", "pyarrow", "webdataset", "shapely")


def build(recipe: Recipe, progress: bool = True, verify: bool = False) -> dict[str, Any]:
    """Check inputs -> plan -> shards -> corpus passes -> manifest; returns a summary.

    Complete shards of an earlier run are kept (``verify``: only when every checksum holds).
    The output folder is locked for the run."""
    frozen_before = gc.get_freeze_count()  # the executor freezes the driver's heap
    try:
        return _build(recipe, progress, verify)
    finally:
        thaw_driver_heap(frozen_before)


def _build(recipe: Recipe, progress: bool, verify: bool) -> dict[str, Any]:
    t0 = time.time()
    streaming_block_cache()  # before the input checks read a block
    timings: dict[str, float] = {}  # seconds per phase, in the run record
    recipe = recipe.check_components()
    out_dir = recipe.output.dir.resolve()
    check_output_dir(out_dir, recipe.name)
    ctx, plan, inputs = checked_prepare(recipe, out_dir)
    plan_unchanged = check_plan(out_dir, plan)
    timings["prepare_s"] = time.time() - t0
    started_ray = False
    if recipe.execution.ray_address:  # a bad cluster address fails before any output
        started_ray = init_ray(recipe.execution)
        timings["ray_start_s"] = time.time() - t0 - timings["prepare_s"]
    make_output_dir(out_dir)
    os.environ[DRIVER_ENV] = str(os.getpid())  # for the reliability tests' crash points
    with OutputLock(out_dir):
        manifest = ManifestBuilder(out_dir, recipe.name)  # loads sidecars as shards complete
        try:
            if not plan_unchanged:  # a resume leaves the plan file as it is
                write_plan(out_dir, plan)
            todo, results = _shards(ctx, plan, inputs, manifest, progress, timings, verify)
        except BaseException:
            manifest.abort()
            raise
        finally:
            if started_ray:
                ray_shutdown()
        run = _run_record(ctx, plan, inputs, t0, len(todo), results)
        try:
            manifest_path = _finish(out_dir, recipe, manifest, run, timings)
        except BaseException as e:
            manifest.abort()  # a corpus pass failed before the manifest's own clean-up could run
            if not isinstance(e, Exception) or not is_disk_full(e):
                raise
            raise BuildFailed(
                _disk_full_message(out_dir, recipe.name, plan, results, "the manifest")
            ) from e
    if any(r.error and DISK_FULL in r.error for r in results):
        log.error(_disk_full_message(out_dir, recipe.name, plan, results, None))
    return {"out_dir": str(out_dir), "manifest": str(manifest_path), **run} | {
        "seconds": time.time() - t0
    }


def _disk_full_message(
    out_dir: Path, name: str, plan: Plan, results: list[ShardStats], unwritten: str | None
) -> str:
    failed = sum(r.status != COMPLETE for r in results)
    complete = sum(is_complete(out_dir, name, s) for s in range(plan.num_shards))
    what = f"; {unwritten} could not be written" if unwritten else ""
    return (
        f"the disk holding {out_dir} is full ({DISK_FULL}): {complete} of {plan.num_shards} "
        f"shards are complete, {failed} failed, the others were not started{what}. Free space "
        "and rerun to resume; complete shards are kept"
    )


def _finish(
    out_dir: Path,
    recipe: Recipe,
    manifest: ManifestBuilder,
    run: dict[str, Any],
    timings: dict[str, float],
) -> Path:
    """Corpus passes, the run record, the manifest and the report, while a local Ray stops."""
    stopper = RayStopper(started_here="ray_start_s" in timings)  # timed only when started here
    t = time.time()
    run_passes(out_dir, recipe.name, list(recipe.passes.items()), manifest.pass_rows())
    timings["passes_s"] = time.time() - t
    run["timings"] = timings
    record_run(out_dir, run)
    t = time.time()
    path = manifest.finish()
    # The run file gets the manifest's own time and Ray's stop too (the manifest's runs table
    # has them from the next build on).
    timings["manifest_s"] = time.time() - t
    from geoweave.manifests.report import write_report_or_warn  # a failure only warns

    timings["report_s"] = write_report_or_warn(out_dir)
    timings["ray_stop_s"] = stopper.join()
    record_run(out_dir, run)
    return path


def _shards(
    ctx: BuildContext,
    plan: Plan,
    inputs: InputChecksums,
    manifest: ManifestBuilder,
    progress: bool,
    timings: dict[str, float],
    verify: bool = False,
) -> tuple[list[int], list[ShardStats]]:
    """Run the shards not complete yet; the manifest loads each sidecar as its shard
    completes. Returns the shards run and their stats."""
    out_dir, name = ctx.out_dir, ctx.recipe.name
    remove_temporaries(out_dir, name)
    todo = [s for s in range(plan.num_shards) if not is_complete(out_dir, name, s, verify)]
    for s in sorted(set(range(plan.num_shards)) - set(todo)):
        manifest.add(sidecar_path(out_dir, name, s))
    if len(todo) < plan.num_shards:
        log.info(
            "resume: %d shards complete already, %d to run", plan.num_shards - len(todo), len(todo)
        )

    def after_fork() -> None:  # threads start after the early worker's fork
        inputs.start()
        manifest.start()

    def on_done(stats: list[ShardStats]) -> None:
        for st in stats:
            if st.status == COMPLETE:
                manifest.add(sidecar_path(out_dir, name, st.shard))

    t = time.time()
    results = run_shards(ctx, plan, todo, progress, timings, after_fork, on_done) if todo else []
    remove_temporaries(out_dir, name, keep=manifest.tmp.name)
    timings["shards_s"] = time.time() - t
    return todo, results


def _run_record(
    ctx: BuildContext,
    plan: Plan,
    inputs: InputChecksums,
    t0: float,
    shards_run: int,
    results: list[ShardStats],
) -> dict[str, Any]:
    """The provenance of one run, as stored in the manifest's ``runs`` table."""
    recipe = ctx.recipe
    return {
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(t0))}-{uuid.uuid4().hex[:6]}",
        "name": recipe.name,
        "started": t0,
        "finished": time.time(),
        "recipe": recipe.model_dump(mode="json"),
        "versions": _versions(),
        "inputs": inputs.result(),
        "shards_planned": plan.num_shards,
        "shards_run": shards_run,
        "shards_failed": sum(r.status != COMPLETE for r in results),
        "tiles_planned": plan.num_tiles,
        "osm_snapshot": ctx.osm_snapshot,
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
