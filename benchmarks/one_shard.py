"""One shard of a recipe built in-process and timed (the read-path benchmarks of the STAC and
Earth Engine sources): no Ray, no manifest, only the shard's own work."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

# Filters that would reject tiles for what they show: off, so every tile is read and written.
NO_IMAGE_FILTERS = {"min_labels_v1": False, "low_variance_v1": False, "nodata_v1": False,
                    "saturation_v1": False, "cloud_v1": False}  # fmt: skip


def time_first_shard(recipe: dict[str, Any], out: Path) -> tuple[int, float]:
    """(tiles, seconds) of shard 0 of ``recipe`` (a recipe mapping) written under ``out``;
    preparing the inputs and the plan is not timed."""
    from geoweave.builders.prepare import prepare
    from geoweave.builders.recipe import Recipe
    from geoweave.builders.shard import run_shard

    ctx, plan, _ = prepare(Recipe.model_validate(recipe), out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    stats = run_shard(ctx, 0, plan.shard_tiles(0))
    return stats.tiles, time.perf_counter() - t
