"""``OUT/report.html``: a build at a glance, as one self-contained page that works offline.

A map of the tile footprints by status and split, a seeded gallery of kept samples (their
images embedded from the shard files) with captions, QA pairs and scores, histograms, the
commonest OSM tags, the filter funnel and the review statistics. ``build-dataset report OUT``
writes it; a build writes it after its manifest (``write_report_or_warn``: a report that
cannot be written never fails the build).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from geoweave.errors import FatalError
from geoweave.files import write_text
from geoweave.manifests.manifest import MANIFEST
from geoweave.manifests.report_data import gather
from geoweave.manifests.report_html import render

log = logging.getLogger("geoweave")

REPORT = "report.html"


def write_report(out_dir: Path, seed: int = 0, gallery: int = 24) -> Path:
    """Write ``out_dir/report.html`` (through a temporary name) and return its path.

    Args:
        out_dir: the output folder of a finished build.
        seed: draws the gallery's samples (the same seed, the same samples).
        gallery: how many kept samples the gallery shows.

    Raises:
        FatalError: ``out_dir`` holds no manifest, or ``gallery`` is negative.
    """
    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST).is_file():
        raise FatalError(
            f"{out_dir} holds no finished build (no {MANIFEST}): run "
            f"`build-dataset run RECIPE --output {out_dir}` first"
        )
    if gallery < 0:
        raise FatalError(f"--gallery {gallery}: give a number of samples >= 0")
    page = render(gather(out_dir, seed=seed, gallery=gallery))
    path = out_dir / REPORT
    write_text(path, page)
    return path


def write_report_or_warn(out_dir: Path) -> float:
    """``write_report`` at the end of a build: a failure is logged as a warning, never
    raised. Returns the seconds it took."""
    t = time.time()
    try:
        path = write_report(out_dir)
        log.info("report: %s (%.2f s)", path, time.time() - t)
    except Exception as e:
        log.warning(
            "the report could not be written (%s: %s); the build is complete, "
            "`build-dataset report %s` retries it",
            type(e).__name__,
            e,
            out_dir,
        )
    return time.time() - t
