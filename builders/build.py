"""A whole build: check every input, plan, run the missing shards, write the manifest.

Everything that can fail on bad input (recipe, imagery, label files, indexes) runs before the
output folder is touched, so a bad run leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
import uuid
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.builders.executor import run_shards
from geoweave.builders.outdir import (
    OutputLock,
    check_output_dir,
    make_output_dir,
    remove_temporaries,
)
from geoweave.builders.plan import plan_tiles
from geoweave.builders.plan_file import Plan
from geoweave.builders.ray_start import RayStopper, init_ray, ray_shutdown
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import BuildContext
from geoweave.builders.worker_state import (
    open_imagery,
    open_label_sources,
    open_landcover,
    open_landcover_by_date,
)
from geoweave.builders.writers import is_complete, sidecar_path
from geoweave.errors import DISK_FULL, BuildFailed, FatalError, is_disk_full
from geoweave.files import DRIVER_ENV, atomic_path, crash_point, default_cache_root
from geoweave.manifests.manifest import PLAN, newest_run, record_run
from geoweave.manifests.manifest_builder import ManifestBuilder
from geoweave.manifests.passes import run_passes
from geoweave.protocols import ImagerySource
from geoweave.registry import CAPTIONERS, FILTERS, QUESTION_GENERATORS, load_plugins
from geoweave.sources.checksum_cache import CHECKSUM_CACHE, ChecksumCache
from geoweave.sources.checksums import InputChecksums
from geoweave.sources.rasters import streaming_block_cache
from geoweave.stats import COMPLETE, ShardStats

log = logging.getLogger("geoweave")
VERSIONED = ("geoweave", "ray", "osmium", "rasterio", "duckdb", "pyarrow", "webdataset", "shapely")


def cache_root(recipe: Recipe) -> Path:
    return recipe.execution.cache_dir or default_cache_root()


def _check_cache(root: Path) -> None:
    try:
        (root / "osm").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FatalError(
            f"cannot create the label cache {root} ({e.strerror or e}): set "
            "execution.cache_dir (or $GEOWEAVE_CACHE) to a writable folder"
        ) from None


def prepare(recipe: Recipe, out_dir: Path) -> tuple[BuildContext, Plan, InputChecksums]:
    """Open and check every input, build the label indexes, plan the tiles. Writes no output."""
    sources = [open_imagery(c) for c in recipe.imagery]
    for c, src in zip(recipe.imagery, sources, strict=True):
        log.info("imagery %s (%s): %s, %g m", src.name, c.type, src.crs, src.res_m)
    checksums = ChecksumCache(cache_root(recipe) / CHECKSUM_CACHE)
    inputs = InputChecksums(checksums, verify=recipe.execution.verify_inputs)
    for c in recipe.imagery:
        if c.path:
            inputs.hash(c.path)
    index_dirs: list[str] = []
    snapshots: dict[str, str | None] = {}
    if recipe.labels.osm:  # the OSM code imports pyarrow.dataset and pandas: 0.3 s
        from geoweave.sources.osm import build_osm_index

        _check_cache(cache_root(recipe))
    for p in recipe.labels.osm:
        t0 = time.time()
        log.info("OSM index for %s (%.1f MB) ...", p, p.stat().st_size / 1e6 if p.exists() else 0)
        idx = build_osm_index(
            p, cache_root(recipe) / "osm", recipe.labels.tag_keys,
            verify=recipe.execution.verify_inputs,
        )  # fmt: skip
        rows = idx.meta.get("counts", {}).get("rows", "?")
        log.info("OSM index ready in %.1f s: %s features in %s", time.time() - t0, rows, idx.root)
        index_dirs.append(str(idx.root))
        inputs.set(str(p), idx.checksum)
        snapshots[str(p)] = idx.meta.get("osm_timestamp")
    snapshot = "; ".join(sorted({t for t in snapshots.values() if t})) or None
    ctx = BuildContext(recipe, out_dir, tuple(index_dirs), snapshot)
    open_label_sources(ctx.osm_index_dirs, recipe.labels)  # checks vector files now
    for v in recipe.labels.vector:
        inputs.hash(v.path)
    for c in recipe.labels.sources:
        if c.options.get("path"):
            inputs.hash(Path(c.options["path"]))
    if recipe.labels.landcover:
        lc = recipe.labels.landcover
        open_landcover(lc)
        inputs.hash(lc.path)
        open_landcover_by_date(lc)  # each checked now, as the main raster
        for path in lc.by_date.values():
            inputs.hash(path)
    _preflight(recipe)
    _check_filters(recipe, sources)
    t0 = time.time()
    meta = {b"geoweave_recipe": json.dumps(content_fingerprint(recipe)).encode()}
    plan = plan_tiles(recipe, sources, _plan_temp_dir(recipe), meta)
    log.info(
        "plan: %d tiles (%d outside the imagery) in %d shards, %.1f s",
        plan.num_tiles, plan.outside, plan.num_shards, time.time() - t0,
    )  # fmt: skip
    return ctx, plan, inputs


def _plan_temp_dir(recipe: Recipe) -> Path | None:
    """Where the plan is written while it is made: the cache (a continent's plan file is
    large for a RAM-backed /tmp), else the system's temporary folder."""
    folder = cache_root(recipe) / "plans"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _preflight(recipe: Recipe) -> None:
    """A captioner that talks to a server checks it once before any work (``preflight``)."""
    import geoweave.builders.components  # noqa: F401  (registers the built-ins)

    load_plugins(recipe.plugins)
    captioner = CAPTIONERS.build(recipe.captions.name, recipe.captions.options, recipe.seed)
    if hasattr(captioner, "preflight"):
        captioner.preflight()
    q = recipe.questions
    if q.enabled:
        generator = QUESTION_GENERATORS.build(q.name, q.options, recipe.seed)
        if hasattr(generator, "preflight"):
            generator.preflight()


def _check_filters(recipe: Recipe, sources: Sequence[ImagerySource]) -> None:
    """A filter that reads the sources' own bands (``cloud_v1``'s ``mask_band``) checks them
    once before any work: the class's ``check_imagery(options, sources)`` raises FatalError
    naming the field. No filter is set up here (that happens in the shards)."""
    for name, options in recipe.filters.items():
        check = getattr(FILTERS.get(name), "check_imagery", None)
        if check is not None:
            check(FILTERS.options(name, options, f"filters.{name}"), sources)


def checked_prepare(recipe: Recipe, out_dir: Path) -> tuple[BuildContext, Plan, InputChecksums]:
    """``prepare``, with any unexpected error while reading the inputs reported as bad input
    (FatalError: exit code 2, nothing written) rather than as a crash."""
    try:
        return prepare(recipe, out_dir)
    except FatalError:
        raise
    except Exception as e:
        raise FatalError(
            f"checking the inputs failed: {type(e).__name__}: {e}; check the recipe's input files"
        ) from e


# Sections that change what a shard holds. Output folder and execution settings may change
# between a run and its resume; anything else would mix two different datasets.
CONTENT_SECTIONS = (
    "name",
    "seed",
    "area",
    "imagery",
    "tiles",
    "labels",
    "captions",
    "questions",
    "filters",
    "plugins",
)
# Content sections hashed only while enabled, so a folder built before they existed resumes.
OPTIONAL_SECTIONS = ("splits",)


def content_fingerprint(recipe: Recipe) -> dict[str, str]:
    """A hash per content section of the recipe, stored with the plan."""
    return _fingerprint(recipe.model_dump(mode="json"))


def _fingerprint(data: dict[str, Any]) -> dict[str, str]:
    """``content_fingerprint`` of a recipe dumped as JSON (as run records hold it)."""
    data = dict(data)
    data["output_formats"] = data["output"]["formats"]
    data["output_jpeg_quality"] = data["output"]["jpeg_quality"]
    keys = [*CONTENT_SECTIONS, "output_formats", "output_jpeg_quality"]
    keys += [k for k in OPTIONAL_SECTIONS if (data.get(k) or {}).get("enabled")]
    return {
        k: hashlib.sha256(json.dumps(data[k], sort_keys=True).encode()).hexdigest() for k in keys
    }


def _check_plan(out_dir: Path, plan: Plan) -> bool:
    """A rerun must plan the same tiles into the same shards from the same recipe content, or
    resume would mix two builds in one folder. Returns True when the folder holds this very
    plan already (the build then reads that file). A damaged plan file is reported and
    re-derived; the recipe is then checked against the newest readable run record instead."""
    path = out_dir / PLAN
    if not path.exists():
        return False
    now = json.loads(pq.read_schema(plan.path).metadata[b"geoweave_recipe"])
    try:
        same = plan.same_as(path)
        before = (pq.read_schema(path).metadata or {}).get(b"geoweave_recipe", b"{}")
    except (pa.ArrowException, OSError) as e:
        log.warning("%s is damaged (%s); re-deriving it from the recipe", path, e)
        recorded = newest_run(out_dir)
        if recorded is not None and isinstance(recorded.get("recipe"), dict):
            _compare_content(out_dir, _fingerprint(recorded["recipe"]), now)
        return False
    if not same:
        raise FatalError(
            f"{out_dir} holds a build with a different tile plan (recipe changed?); {_HINT}"
        )
    _compare_content(out_dir, json.loads(before), now)
    plan.use(path)
    return True


_HINT = "use another --output folder, or delete this one to rebuild"


def _compare_content(out_dir: Path, before: dict[str, str], now: dict[str, str]) -> None:
    compared = [*now, *(k for k in OPTIONAL_SECTIONS if k in before and k not in now)]
    changed = sorted(k for k in compared if before.get(k) != now.get(k))
    if changed:
        raise FatalError(
            f"{out_dir} was built from a recipe that differs in {', '.join(changed)}; "
            f"its complete shards would not match the new ones: {_HINT}"
        )


def _write_plan(out_dir: Path, plan: Plan) -> None:
    """Move the plan file into the folder (under a temporary name there, then renamed)."""
    with atomic_path(out_dir / PLAN) as tmp:
        shutil.move(plan.path, tmp)
        crash_point("plan")
    plan.use(out_dir / PLAN)


def build(recipe: Recipe, progress: bool = True, verify: bool = False) -> dict[str, Any]:
    """Check inputs -> plan -> shards -> corpus passes -> manifest; returns a summary.

    Complete shards of an earlier run are kept (``verify``: only when every checksum holds).
    The output folder is locked for the run."""
    t0 = time.time()
    streaming_block_cache()  # before the input checks read a block
    timings: dict[str, float] = {}  # seconds per phase, in the run record
    recipe = recipe.check_components()
    out_dir = recipe.output.dir.resolve()
    check_output_dir(out_dir, recipe.name)
    ctx, plan, inputs = checked_prepare(recipe, out_dir)
    plan_unchanged = _check_plan(out_dir, plan)
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
                _write_plan(out_dir, plan)
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
