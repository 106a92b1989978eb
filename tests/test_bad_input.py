"""Bad input stops ``build-dataset`` with exit code 2, a message that names the culprit and says
what to do, and nothing written: no output folder, no partial OSM index in the label cache.

Every case fails while the recipe and inputs are checked, before Ray starts, so each runs
in-process (``run_main``) and is fast.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import SF_BAY, run_main

HERE = Path(__file__).resolve().parent
PBF = SF_BAY / "sf_bay_osm_overpass_20171020.osm.pbf"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HERE / "data" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rasters = _load("raster_fixture")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A label cache of this test only (``run_cli`` passes the environment on)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("GEOWEAVE_CACHE", str(path))
    return path


def write_recipe(tmp_path: Path, imagery: Path, **sections: Any) -> Path:
    """A small recipe over ``imagery`` with absolute paths; ``sections`` replace its fields."""
    recipe: dict[str, Any] = {
        "name": "bad",
        "imagery": [{"name": "img", "path": str(imagery)}],
        "tiles": {"size_px": 16, "gsd_m": [10]},
        "filters": {"min_labels_v1": {"min_labels": 0}},
        **sections,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def partial_indexes(cache: Path) -> list[Path]:
    """Anything in the label cache whose name says it is a temporary (unfinished) build."""
    return [p for p in cache.rglob("*") if "tmp" in p.name] if cache.exists() else []


def assert_rejected(tmp_path: Path, cache: Path, recipe: Path, *expected: str) -> str:
    """Run the recipe; check exit code 2, the message, and that nothing was written."""
    out = tmp_path / "out"
    result = run_main("run", str(recipe), "--output", str(out), "--no-progress")
    assert result.returncode == 2, result.stderr
    stderr = result.stderr
    assert "build-dataset: error:" in stderr
    assert "Traceback" not in stderr, stderr
    for text in expected:
        assert text in stderr, f"{text!r} not in stderr:\n{stderr}"
    assert not out.exists(), f"{out} was written: {sorted(out.rglob('*'))}"
    assert partial_indexes(cache) == []
    return stderr


def test_corrupt_geotiff(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_corrupt(tmp_path / "broken_scene.tif")
    stderr = assert_rejected(tmp_path, cache, write_recipe(tmp_path, image), "broken_scene.tif")
    assert "re-export or re-download" in stderr


def test_raster_without_crs(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_no_crs(tmp_path / "nocrs_scene.tif")
    stderr = assert_rejected(tmp_path, cache, write_recipe(tmp_path, image), "nocrs_scene.tif")
    assert "no CRS" in stderr
    assert "--crs" in stderr  # how to assign one


@pytest.mark.skipif(not PBF.exists(), reason="shared SF Bay sample not present")
def test_truncated_pbf(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    data = PBF.read_bytes()
    truncated = tmp_path / "cut_short.osm.pbf"
    truncated.write_bytes(data[: len(data) // 2])
    recipe = write_recipe(tmp_path, image, labels={"osm": [str(truncated)]})
    stderr = assert_rejected(tmp_path, cache, recipe, "cut_short.osm.pbf")
    assert "corrupt or truncated" in stderr
    assert "download it again" in stderr
    # The cache may hold the folder indexes go in, but no index, whole or partial.
    assert not cache.exists() or list(cache.rglob("meta.json")) == []


def test_misspelt_field(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    recipe = write_recipe(tmp_path, image, tiles={"size_pxx": 32})
    stderr = assert_rejected(tmp_path, cache, recipe, "recipe.yaml", "tiles.size_pxx")
    assert "unknown field" in stderr
    assert "check the spelling" in stderr


def test_value_not_allowed(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    recipe = write_recipe(tmp_path, image, output={"formats": ["zip"]})
    stderr = assert_rejected(tmp_path, cache, recipe, "output.formats")
    assert "'webdataset'" in stderr and "'parquet'" in stderr  # the allowed values


def test_value_out_of_range(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    recipe = write_recipe(tmp_path, image, tiles={"size_px": 2})
    stderr = assert_rejected(tmp_path, cache, recipe, "tiles.size_px")
    assert "greater than or equal to 8" in stderr


def test_missing_imagery(tmp_path: Path, cache: Path) -> None:
    recipe = write_recipe(tmp_path, tmp_path / "not_downloaded.tif")
    stderr = assert_rejected(tmp_path, cache, recipe, "not_downloaded.tif")
    assert "not found" in stderr
    assert "imagery.path" in stderr


def test_missing_recipe(tmp_path: Path, cache: Path) -> None:
    assert_rejected(tmp_path, cache, tmp_path / "no_such_recipe.yaml", "no_such_recipe.yaml")


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("tiles.size_px", "FIELD=VALUE"), ("tiles.size_pxx=32", "tiles.size_pxx")],
    ids=["no_equals", "unknown_field"],
)
def test_bad_set_override(tmp_path: Path, cache: Path, flag: str, expected: str) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    recipe = write_recipe(tmp_path, image)
    out = tmp_path / "out"
    result = run_main("run", str(recipe), "--output", str(out), "--set", flag)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert partial_indexes(cache) == []


def test_set_without_equals_gives_an_example(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    result = run_main("run", str(write_recipe(tmp_path, image)), "--set", "tiles.size_px")
    assert result.returncode == 2
    assert "--set 'tiles.size_px'" in result.stderr
    assert "e.g. --set tiles.size_px=32" in result.stderr


def test_query_without_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "never_built"
    folder.mkdir()
    result = run_main("query", str(folder), "SELECT count(*) FROM samples")
    assert result.returncode == 2, result.stderr
    assert "no manifest" in result.stderr
    assert str(folder) in result.stderr
    assert "build-dataset run" in result.stderr and "first" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(folder.iterdir()) == []  # query must not create a manifest


@pytest.mark.parametrize(
    ("crs", "expected"),
    [
        ("EPSG:4326", "not a projected (metric) CRS"),
        ("EPSG:99999", "unknown CRS 'EPSG:99999'"),
        ("banana", "unknown CRS 'banana'"),
    ],
)
def test_bad_grid_crs(tmp_path: Path, cache: Path, crs: str, expected: str) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    recipe = write_recipe(tmp_path, image, tiles={"size_px": 16, "grid_crs": crs})
    assert_rejected(tmp_path, cache, recipe, "tiles.grid_crs", expected)


def test_unexpected_error_while_checking_inputs_is_bad_input(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoweave.builders.prepare as prepare_module

    def broken(*_args: object) -> None:
        raise KeyError("band_names")

    monkeypatch.setattr(prepare_module, "plan_tiles", broken)
    image = rasters.write_rgb(tmp_path / "scene.tif")
    stderr = assert_rejected(tmp_path, cache, write_recipe(tmp_path, image), "KeyError")
    assert "checking the inputs failed" in stderr


def test_unexpected_error_in_the_build_exits_1_with_the_traceback_only_under_debug(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import geoweave.builders.build as build_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(build_module, "build", broken)
    recipe = str(write_recipe(tmp_path, rasters.write_rgb(tmp_path / "scene.tif")))
    plain = run_main("run", recipe, "-o", str(tmp_path / "out"))
    assert plain.returncode == 1
    assert "the build failed: RuntimeError: disk on fire" in plain.stderr
    assert "--debug" in plain.stderr and "Traceback" not in plain.stderr
    debug = run_main("run", recipe, "-o", str(tmp_path / "out"), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "disk on fire" in debug.stderr


def _run_into(tmp_path: Path, out: Path) -> Any:
    recipe = write_recipe(tmp_path, rasters.write_rgb(tmp_path / "scene.tif"))
    return run_main("run", str(recipe), "--output", str(out), "--no-progress")


def test_output_path_that_is_a_file(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("mine")
    res = _run_into(tmp_path, out)
    assert res.returncode == 2 and f"the output path {out} is a file" in res.stderr
    assert "Traceback" not in res.stderr and out.read_text() == "mine"


def test_output_folder_that_cannot_be_created(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "afile").write_text("x")
    res = _run_into(tmp_path, tmp_path / "afile" / "out")
    assert res.returncode == 2 and "cannot write to the output folder" in res.stderr
    assert "Traceback" not in res.stderr


def test_foreign_non_empty_folder_is_refused_and_left_alone(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"jpeg")
    (out / "draft.tmp-1234").write_bytes(b"mine too")
    res = _run_into(tmp_path, out)
    assert res.returncode == 2, res.stderr
    assert "is not empty and is not a geoweave build" in res.stderr and "holiday.jpg" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["draft.tmp-1234", "holiday.jpg"]


def test_second_run_into_a_locked_folder_exits_at_once(tmp_path: Path, cache: Path) -> None:
    import os

    from geoweave.builders.outdir import OutputLock

    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):  # another run holds the folder
        res = _run_into(tmp_path, out)
    assert res.returncode == 2, res.stderr
    assert f"is being built by pid {os.getpid()}" in res.stderr
    assert "wait for that run" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [".geoweave.lock"]  # nothing else written


def test_stale_lock_of_a_killed_run_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    from geoweave.builders.outdir import OutputLock

    lock = tmp_path / ".geoweave.lock"
    lock.write_text(json.dumps({"host": "gone", "pid": 4_000_000, "since": 0}))  # not locked
    with caplog.at_level(logging.INFO, logger="geoweave"), OutputLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] != 4_000_000
    assert "took over the lock" in caplog.text and "pid 4000000 on gone" in caplog.text


def test_duplicate_yaml_keys_are_refused_naming_both_lines(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: dup\ntiles:\n  size_px: 16\nimagery: [{{name: img, path: {image}}}]\n"
        "tiles:\n  size_px: 64\n"
    )
    assert_rejected(tmp_path, cache, recipe, "the key 'tiles' is given twice, on lines 2 and 5")
    nested = tmp_path / "nested.yaml"
    nested.write_text(f"name: d\nimagery: [{{name: img, path: {image}, name: x}}]\n")
    assert_rejected(tmp_path, cache, nested, "the key 'name' is given twice")


def test_cache_dir_that_cannot_be_created(tmp_path: Path, cache: Path) -> None:
    image = rasters.write_rgb(tmp_path / "scene.tif")
    (tmp_path / "afile").write_text("x")
    bad = tmp_path / "afile" / "cache"
    recipe = write_recipe(
        tmp_path, image, labels={"osm": [str(PBF)]}, execution={"cache_dir": str(bad)}
    )
    assert_rejected(tmp_path, cache, recipe, "execution.cache_dir", str(bad))
