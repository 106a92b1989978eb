"""A shard that keeps failing is retried, then recorded as failed; the other shards complete."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from tests.conftest import run_cli
from tests.data.raster_fixture import write_cog_with_bad_block

pytestmark = pytest.mark.integration


def test_failed_shard_is_recorded_and_the_rest_complete(tmp_path: Path) -> None:
    image = write_cog_with_bad_block(tmp_path / "damaged_cog.tif")
    recipe = {
        "name": "dmg",
        "imagery": [{"name": "img", "path": str(image), "scale": "none"}],
        "tiles": {"size_px": 128, "gsd_m": [10]},
        "filters": {"min_labels": 0, "max_nodata_fraction": 1.0},
        "output": {"samples_per_shard": 16},
        "execution": {"num_cpus": 2, "retries": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    res = run_cli("run", str(path), "-o", str(out), "--no-progress")
    assert res.returncode == 1, res.stderr[-2000:]  # some shards failed: rerun to retry them
    assert "failed" in res.stderr

    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    shards = dict(con.execute("SELECT status, count(*) FROM shards GROUP BY 1").fetchall())
    assert shards.get("failed", 0) >= 1 and shards.get("complete", 0) >= 1
    error = con.execute("SELECT error FROM shards WHERE status = 'failed'").fetchone()[0]
    assert "damaged_cog.tif" in error or "Read failed" in error
    failed_tiles = con.execute(
        "SELECT count(*) FROM samples WHERE status = 'failed' AND reject_reason = 'shard_failed'"
    ).fetchone()[0]
    assert (
        failed_tiles
        == con.execute("SELECT sum(tiles) FROM shards WHERE status = 'failed'").fetchone()[0]
    )
    planned = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    keys = con.execute("SELECT count(DISTINCT key) FROM samples").fetchone()[0]
    assert planned == keys  # every tile once: kept, rejected or failed
    con.close()

    again = run_cli("run", str(path), "-o", str(out), "--no-progress")
    assert again.returncode == 1
    assert f"{shards['failed']} run now" in again.stdout  # only the failed shards are retried
    assert not list(out.glob("*.tmp-*"))
