"""Tiles/s from a STAC catalogue served over HTTP on 127.0.0.1 (byte ranges, GDAL /vsicurl/)
against the same catalogue and COGs read from disk: one shard in-process, both runs in one
process, the stand-in server in its own process.

Usage: ``.venv/bin/python benchmarks/stac.py`` (about 1 minute)
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.one_shard import NO_IMAGE_FILTERS, time_first_shard
from tests.conftest import SF_BAY
from tests.data.stac_fixture import write_catalog
from tests.http_files import Files


def _serve(folder: str, port: Any) -> None:
    srv = Files(Path(folder))
    port.value = srv.server_address[1]
    srv.serve_forever()


def build(out: Path, catalog: str) -> tuple[int, float]:
    return time_first_shard({
        "name": "st",
        "imagery": [{"name": "l7", "type": "stac", "catalog": catalog, "scale": "none"}],
        "tiles": {"size_px": 8, "gsd_m": [30]},
        "filters": NO_IMAGE_FILTERS,
        "labels": {"landcover": None},
        "passes": {"near_duplicates_v1": False},
        "output": {"dir": str(out), "samples_per_shard": 100000},
    }, out)  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        catalog = write_catalog(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif", tmp / "cat")
        ctx = multiprocessing.get_context("spawn")
        port = ctx.Value("i", 0)
        proc = ctx.Process(target=_serve, args=(str(catalog.parent), port), daemon=True)
        proc.start()
        while not port.value:
            time.sleep(0.05)
        try:
            n_http, s_http = build(tmp / "http", f"http://127.0.0.1:{port.value}/catalog.json")
            n_disk, s_disk = build(tmp / "disk", str(catalog))
        finally:
            proc.terminate()
    print("STAC imagery, one shard in-process, 8 px tiles at 30 m over the whole SF Bay image")
    print("| catalogue and COGs | tiles | seconds | tiles/s |")
    print("|---|---|---|---|")
    print(f"| over HTTP on 127.0.0.1 | {n_http} | {s_http:.2f} | {n_http / s_http:.0f} |")
    print(f"| on disk | {n_disk} | {s_disk:.2f} | {n_disk / s_disk:.0f} |")


if __name__ == "__main__":
    main()
