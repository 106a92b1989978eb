"""Resume safety: a rerun into a folder must plan the same tiles into the same shards from the
same recipe content. The plan file carries a hash per content section of the recipe."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.builders.plan_file import Plan
from geoweave.builders.recipe import Recipe
from geoweave.errors import FatalError
from geoweave.files import atomic_path, crash_point
from geoweave.manifests.manifest import PLAN, newest_run

log = logging.getLogger("geoweave")

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


def check_plan(out_dir: Path, plan: Plan) -> bool:
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
            compare_content(out_dir, _fingerprint(recorded["recipe"]), now)
        return False
    if not same:
        raise FatalError(
            f"{out_dir} holds a build with a different tile plan (recipe changed?); {_HINT}"
        )
    compare_content(out_dir, json.loads(before), now)
    plan.use(path)
    return True


_HINT = "use another --output folder, or delete this one to rebuild"


def compare_content(out_dir: Path, before: dict[str, str], now: dict[str, str]) -> None:
    compared = [*now, *(k for k in OPTIONAL_SECTIONS if k in before and k not in now)]
    changed = sorted(k for k in compared if before.get(k) != now.get(k))
    if changed:
        raise FatalError(
            f"{out_dir} was built from a recipe that differs in {', '.join(changed)}; "
            f"its complete shards would not match the new ones: {_HINT}"
        )


def write_plan(out_dir: Path, plan: Plan) -> None:
    """Move the plan file into the folder (under a temporary name there, then renamed)."""
    with atomic_path(out_dir / PLAN) as tmp:
        shutil.move(plan.path, tmp)
        crash_point("plan")
    plan.use(out_dir / PLAN)
