"""Pixel throughput on the seeded mosaic: floor vs geoweave at 128 and 256 px tiles.

The floor is the bare work every tile needs, with no geoweave code in the loop: for each tile
of a grid aligned with the raster, one ``rasterio`` window read of the 3 bands, a transpose to
HWC, a PIL JPEG at the build's quality and a ``webdataset.TarWriter`` write of
``{__key__, jpg}``, one tar per 256 tiles (the shard size); single process, every tile
encoded. A build cannot be faster than this per worker, so geoweave's rates are quoted as
fractions of it.

Per tile size: the floor, a one-worker and a two-worker ``build-dataset run``
with filters relaxed so every planned tile is kept, and the figures derived from them. The
grid is the mosaic's own (tile GSD = mosaic pixel size, origin aligned), so the floor's plain
window reads cut exactly the tiles geoweave plans.
"""

from __future__ import annotations

import functools
import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import webdataset as wds
from PIL import Image
from rasterio.windows import Window

from benchmarks.builds import OUT, detect_new_format, plan, relaxed_filters, run_build, write_recipe
from benchmarks.make_mosaic import CRS, Mosaic

JPEG_QUALITY = 90
PER_SHARD = 256  # the recipe's default output.samples_per_shard
RecipeFor = Callable[[bool], dict[str, Any]]


def encode(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def grid(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """(col, row) of every whole tile, in row-major order."""
    return [(c, r) for r in range(height // size) for c in range(width // size)]


def floor(
    image: Path,
    size: int,
    out: Path,
    quality: int = 90,
    per_tar: int = PER_SHARD,
    part: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Time the floor over every ``size`` px tile of ``image``; tars go to ``out``. With
    ``part`` (i, n), only every n-th tar from the i-th (one of n processes)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    n = 0
    t0 = time.perf_counter()
    with rasterio.open(image) as src:
        cells = grid(src.width, src.height, size)
        for start in range(part[0] * per_tar, len(cells), part[1] * per_tar):
            with wds.TarWriter(str(out / f"floor-{start // per_tar:06d}.tar")) as tar:
                for col, row in cells[start : start + per_tar]:
                    window = Window(col * size, row * size, size, size)
                    rgb = np.ascontiguousarray(
                        src.read([1, 2, 3], window=window).transpose(1, 2, 0)
                    )
                    tar.write({"__key__": f"t_{col}_{row}", "jpg": encode(rgb, quality)})
                    n += 1
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)  # only the time matters; don't keep GBs of tars
    return {"tiles": n, "seconds": seconds, "tiles_per_s": n / seconds}


def floor_processes(
    image: Path, size: int, out: Path, quality: int, processes: int
) -> dict[str, Any]:
    """The floor split over ``processes`` forked processes, timed from outside: what the
    machine gives two workers with no overhead at all (the ceiling of "2 workers / 1")."""
    ctx = multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    with ctx.Pool(processes) as pool:
        parts = pool.starmap(
            floor,
            [
                (image, size, out / f"p{i}", quality, PER_SHARD, (i, processes))
                for i in range(processes)
            ],
        )
    seconds = time.perf_counter() - t0
    tiles = sum(p["tiles"] for p in parts)
    return {
        "tiles": tiles,
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "processes": processes,
    }


def mosaic_recipe(mosaic: Mosaic, size: int) -> RecipeFor:
    """The recipe for one tile size, as a function of the filter format (old or new)."""

    def recipe(new_format: bool) -> dict[str, Any]:
        return {
            "name": f"mosaic{size}",
            "area": {"geojson": str(mosaic.area)},
            "imagery": [{"name": "mosaic", "path": str(mosaic.image), "bands": [1, 2, 3], "scale": "none"}],
            "tiles": {"size_px": size, "gsd_m": [mosaic.pixel_m], "grid_crs": CRS},
            "labels": {"landcover": {"path": str(mosaic.landcover), "legend": "esa_worldcover", "name": "landcover"}},
            "filters": relaxed_filters(new_format),
            "output": {"dir": str(OUT / f"mosaic{size}"), "samples_per_shard": PER_SHARD,
                       "jpeg_quality": JPEG_QUALITY},
            "execution": {"num_cpus": 1},
        }  # fmt: skip

    return recipe


def phase(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement, print it, record the machine load around it (others skew it)."""
    print(f"== {name} ...", flush=True)
    before = os.getloadavg()[0]
    result = fn()
    result["load_1min"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=1, default=str), flush=True)
    return result


def size_figures(mosaic: Mosaic, size: int, new_format: bool | None) -> dict[str, Any]:
    """Floor, 1 worker and 2 workers for one tile size; ratios and overheads from them."""
    recipe_for = mosaic_recipe(mosaic, size)
    path = OUT / f"recipe-mosaic{size}.yaml"
    if new_format is None:
        new_format = detect_new_format(recipe_for, path)
    write_recipe(recipe_for(new_format), path)
    expected = (mosaic.size_px // size) ** 2
    planned, _ = plan(path)
    r: dict[str, Any] = {"size_px": size, "expected_tiles": expected, "planned_tiles": planned,
                         "new_filter_format": new_format}  # fmt: skip
    one_floor = functools.partial(floor, mosaic.image, size, OUT / "floor", JPEG_QUALITY)
    r["floor"] = phase(f"floor {size} px", one_floor)
    r["floor_2"] = phase(
        f"floor {size} px, 2 processes",
        lambda: floor_processes(mosaic.image, size, OUT / "floor", JPEG_QUALITY, 2),
    )
    out = OUT / f"mosaic{size}"
    r["one"] = phase(f"geoweave {size} px, 1 worker", lambda: run_build(path, out, 1))
    r["two"] = phase(f"geoweave {size} px, 2 workers", lambda: run_build(path, out, 2))
    r["alone"] = phase(
        f"geoweave {size} px, 1 worker, no early worker", lambda: run_build(path, out, 1, False)
    )
    # The machine's speed drifts by 10-30% over minutes: the floor again after the builds, and
    # the ratios against the two together.
    r["floor_after"] = phase(f"floor {size} px, after the builds", one_floor)
    derive(r)
    return r


def derive(r: dict[str, Any]) -> None:
    """Ratios against the floor, 2 workers against 1, and whether every tile was built and kept."""
    before, after = r["floor"], r.get("floor_after", r["floor"])
    r["floor_s"] = (before["seconds"] + after["seconds"]) / 2
    floor_rate = r["floor_tiles_per_s"] = (before["tiles"] + after["tiles"]) / (2 * r["floor_s"])
    one, two = r["one"], r["two"]
    r["wall_vs_floor"] = one["tiles_per_s"] / floor_rate
    r["inside_vs_floor"] = one["inside_tiles_per_s"] / floor_rate
    r["inside_alone_vs_floor"] = r["alone"]["inside_tiles_per_s"] / floor_rate
    r["speedup_2w"] = two["tiles_per_s"] / one["tiles_per_s"]
    r["speedup_2_floors"] = r["floor_2"]["tiles_per_s"] / floor_rate
    r["every_tile_kept"] = (r["floor"]["tiles"] == r["planned_tiles"] == one["tiles"] == one["kept"]
                            == two["kept"] == r["expected_tiles"])  # fmt: skip
    if not r["every_tile_kept"]:
        print(f"warning: {size_counts(r)}: not every tile was planned, built and kept:", flush=True)
        print(json.dumps(r["one"]["by_reason"], indent=1), flush=True)


def size_counts(r: dict[str, Any]) -> str:
    return (f"{r['size_px']} px: expected {r['expected_tiles']}, planned {r['planned_tiles']}, "
            f"floor {r['floor']['tiles']}, kept {r['one']['kept']} / {r['two']['kept']}")  # fmt: skip
