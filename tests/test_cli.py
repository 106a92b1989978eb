"""The command line as a user meets it: help, plan, and a rerun with a changed recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli, run_main
from tests.data.raster_fixture import write_rgb


def test_help_lists_the_commands() -> None:
    res = run_main("--help")
    assert res.returncode == 0
    for word in ("run", "plan", "query", "examples:"):
        assert word in res.stdout
    run_help = run_main("run", "--help")
    assert "--ray-address" in run_help.stdout and "--set FIELD=VALUE" in run_help.stdout
    assert "--debug" in run_help.stdout


def test_plan_counts_tiles_without_building(tmp_path: Path) -> None:
    out = tmp_path / "never"
    res = run_main("plan", str(REPO / "examples/sf-bay.yaml"), "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "820 tiles in 13 shards of 64" in res.stdout
    assert not out.exists()


@pytest.mark.integration
def test_rerun_with_another_plan_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    image = write_rgb(tmp_path / "scene.tif")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "imagery": [{"name": "img", "path": str(image), "scale": "none"}],
                "tiles": {"size_px": 32, "gsd_m": [10]},
                "filters": {"min_labels_v1": {"min_labels": 0}},
                "execution": {"num_cpus": 1},
            }
        )
    )
    out = tmp_path / "out"
    first = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr[-2000:]
    before = sorted(p.name for p in out.iterdir())
    again = run_cli("run", str(recipe), "-o", str(out), "--set", "tiles.size_px=16")
    assert again.returncode == 2
    assert "different tile plan" in again.stderr and "another --output" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == before  # nothing touched
    stricter = run_cli(
        "run", str(recipe), "-o", str(out), "--set", "filters.low_variance_v1.min_std=50"
    )
    assert stricter.returncode == 2 and "differs in filters" in stricter.stderr
    moved = run_cli("run", str(recipe), "-o", str(out), "--num-cpus", "2", "--no-progress")
    assert moved.returncode == 0  # execution settings may change between a run and its resume
    same = run_cli("run", str(recipe), "-o", str(out), "--no-progress")
    assert same.returncode == 0 and "0 run now" in same.stdout  # complete shards are skipped


def test_the_console_script_says_everything_before_its_fast_exit(tmp_path: Path) -> None:
    """``entry`` ends with ``os._exit``: what was printed must still reach a pipe whole, and
    the exit code must be main()'s."""
    from importlib import metadata

    (script,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "build-dataset"]  # fmt: skip
    assert script.value == "geoweave.builders.cli:entry"
    res = run_cli("plan", str(REPO / "examples/sf-bay.yaml"), "--output", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "820 tiles in 13 shards of 64"
    bad = run_cli("plan", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr
