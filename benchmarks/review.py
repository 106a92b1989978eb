"""The Label Studio round trip at 1,000 samples: build a corpus with at least that many kept
samples (the seeded benchmark mosaic at 64 px, filters relaxed), start a real Label Studio (``.venv-label-studio``),
and time ``review export --sample 1000`` (choose, read the JPEGs, create the project, import
the tasks), annotating every task through the API (not timed: a reviewer's work), and
``review import`` (fetch, parse, store, rebuild the manifest).

Usage: ``.venv/bin/python benchmarks/review.py`` (about 2 minutes on 2 cores)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.builds import cli, relaxed_filters, write_recipe
from benchmarks.make_mosaic import CRS, make_mosaic
from tests import label_studio_server

N = 1000


def build(tmp: Path) -> Path:
    """1,024 tiles of 64 px over the seeded 2048 px mosaic (land cover everywhere: every tile
    has text)."""
    mosaic = make_mosaic(2048)
    recipe = {
        "name": "rv",
        "area": {"geojson": str(mosaic.area)},
        "imagery": [{"name": "mosaic", "path": str(mosaic.image), "bands": [1, 2, 3],
                     "scale": "none"}],
        "tiles": {"size_px": 64, "gsd_m": [mosaic.pixel_m], "grid_crs": CRS},
        "labels": {"landcover": {"path": str(mosaic.landcover), "legend": "esa_worldcover"}},
        "filters": relaxed_filters(True),
    }  # fmt: skip
    out = tmp / "out"
    res = cli("run", str(write_recipe(recipe, tmp / "r.yaml")), "-o", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    return out


def main() -> None:
    from label_studio_sdk import LabelStudio

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = build(tmp)
        srv = label_studio_server.start(tmp / "ls")
        try:
            os.environ |= {"LABEL_STUDIO_URL": srv.url, "LABEL_STUDIO_API_KEY": srv.token}
            t = time.perf_counter()
            res = cli("review", "export", str(out), "--sample", str(N))
            export_s = time.perf_counter() - t
            assert res.returncode == 0, res.stderr
            ls = LabelStudio(base_url=srv.url, api_key=srv.token)
            project = json.loads((out / "_reviews" / "exports.json").read_text())[-1]["project"]
            verdict = {"from_name": "verdict", "to_name": "image", "type": "choices"}
            from geoweave.manifests.label_studio import fetch_tasks

            tasks: list[Any] = fetch_tasks(project)
            for i, task in enumerate(tasks):
                choice = "reject" if i % 10 == 0 else "accept"
                ls.annotations.create(id=task["id"], project=project,
                                      result=[{**verdict, "value": {"choices": [choice]}}])  # fmt: skip
            t = time.perf_counter()
            res = cli("review", "import", str(out))
            import_s = time.perf_counter() - t
            assert res.returncode == 0, res.stderr
        finally:
            label_studio_server.stop(srv.proc)
    print(f"review round trip, {N} samples, 2 CPUs (each command's wall time, CLI start included)")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| review export (choose, JPEGs, project, import tasks) | {export_s:.1f} |")
    print(f"| review import (fetch, parse, store, manifest) | {import_s:.1f} |")
    print(res.stdout.strip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
