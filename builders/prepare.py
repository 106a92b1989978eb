"""Before any output: open and check every input, build the label indexes, plan the tiles.

Everything that can fail on bad input (recipe, imagery, label files, indexes, a captioner's
server, a filter's bands) fails here, so a bad run leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from geoweave.builders.plan import plan_tiles
from geoweave.builders.plan_check import content_fingerprint
from geoweave.builders.plan_file import Plan
from geoweave.builders.recipe import Recipe
from geoweave.builders.shard import BuildContext
from geoweave.builders.worker_state import (
    open_imagery,
    open_label_sources,
    open_landcover,
    open_landcover_by_date,
)
from geoweave.errors import FatalError
from geoweave.files import default_cache_root
from geoweave.protocols import ImagerySource
from geoweave.registry import CAPTIONERS, FILTERS, QUESTION_GENERATORS, load_plugins
from geoweave.sources.checksum_cache import CHECKSUM_CACHE, ChecksumCache
from geoweave.sources.checksums import InputChecksums

log = logging.getLogger("geoweave")


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
