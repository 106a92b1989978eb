"""Tiles/s from Earth Engine (``type: earthengine``, the real earthengine-api client) against
a stand-in API on 127.0.0.1 (tests/ee_server.py, in its own process: one ``computePixels``
per tile, a median of two cloud-masked Sentinel-2 images computed from the Helsinki sample)
against the same windows of the same scene read from disk (``type: geotiff``): one shard
in-process each, one process.

Usage: ``.venv/bin/python benchmarks/earthengine.py`` (about 30 s)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.one_shard import NO_IMAGE_FILTERS, time_first_shard
from tests.conftest import HELSINKI

SCENE = HELSINKI / "S2B_RGBNIR_20210926_Seurasaari.tif"
BOUNDS = (24.8784, 60.1757, 24.8913, 60.1865)  # the scene's lon/lat box
SIZE_PX = 8


def _serve(key: str, port: Any) -> None:
    from tests.ee_server import EarthEngineStandIn

    srv = EarthEngineStandIn()
    srv.service_account(Path(key))
    port.value = srv.server_address[1]
    srv.serve_forever()


def build(out: Path, imagery: dict[str, Any]) -> tuple[int, float]:
    return time_first_shard({
        "name": "ee", "area": {"bbox": BOUNDS},
        "imagery": [{"name": "s2", **imagery}],
        "tiles": {"size_px": SIZE_PX, "gsd_m": [10]},
        "filters": NO_IMAGE_FILTERS,
        "passes": {"near_duplicates_v1": False},
        "questions": {"enabled": False},
        "output": {"dir": str(out), "samples_per_shard": 100000},
    }, out)  # fmt: skip


def main() -> None:
    import ee.deprecation

    ee.deprecation._FetchDataCatalogStac = lambda: {}  # it fetches a Google URL
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ctx = multiprocessing.get_context("spawn")
        port = ctx.Value("i", 0)
        key = tmp / "key.json"
        proc = ctx.Process(target=_serve, args=(str(key), port), daemon=True)
        proc.start()
        while not port.value:
            time.sleep(0.05)
        os.environ["EE_SERVICE_ACCOUNT_JSON"] = str(key)
        url = f"http://127.0.0.1:{port.value}"
        runs = {}
        try:
            for conc in (1, 8, 16):
                runs[f"stand-in API, max_concurrency {conc}"] = build(tmp / f"ee{conc}", {
                    "type": "earthengine", "collection": "COPERNICUS/S2_SR_HARMONIZED",
                    "start": "2021-09-01", "end": "2021-10-01", "cloud_mask": "s2_scl",
                    "bands": ["B4", "B3", "B2", "B8"], "url": url, "bounds": BOUNDS,
                    "max_concurrency": conc,
                })  # fmt: skip
        finally:
            proc.terminate()
        local = {"path": str(SCENE), "bands": [3, 2, 1], "nodata": 0, "scale": [0, 3000]}
        runs["local GeoTIFF (same windows)"] = build(tmp / "disk", local)
    print(f"Earth Engine imagery, one shard in-process, {SIZE_PX} px tiles at 10 m over the "
          "Helsinki Sentinel-2 sample")  # fmt: skip
    print("| imagery | tiles | seconds | tiles/s |")
    print("|---|---|---|---|")
    for name, (n, s) in runs.items():
        print(f"| {name} | {n} | {s:.2f} | {n / s:.0f} |")


if __name__ == "__main__":
    main()
