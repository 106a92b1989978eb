"""Recipe validation: bad fields fail before any work, with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geoweave.builders.recipe_files import load_recipe
from geoweave.errors import FatalError


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {"name": "t", "imagery": [{"name": "img", "path": "img.tif"}]}


def test_paths_resolve_against_the_recipe_folder_and_defaults_apply(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, {**BASE, "labels": {"osm": ["a.osm.pbf"]}}))
    assert r.imagery[0].path == tmp_path / "img.tif"
    assert r.labels.osm == [tmp_path / "a.osm.pbf"]
    assert r.output.dir == Path("out")  # the default is in the current folder
    assert r.tiles.size_px == 64 and r.output.formats == ["webdataset", "parquet"]


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    r = load_recipe(_write(tmp_path, BASE), {"tiles.size_px": 32, "output.samples_per_shard": 7})
    assert r.tiles.size_px == 32 and r.output.samples_per_shard == 7


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"tiles": {"size_pxx": 32}}, "tiles.size_pxx: unknown field"),
        ({"output": {"formats": ["zip"]}}, "'webdataset' or 'parquet'"),
        ({"tiles": {"gsd_m": [0]}}, "gsd_m must be > 0"),
        ({"area": {"bbox": [10, 6, 12, 5]}}, "south < north"),
        ({"area": {"bbox": [10, 5, 200, 6]}}, "west > east crosses the antimeridian"),
        ({"imagery": [{"name": "a b", "path": "x.tif"}]}, "imagery.0.name"),
        ({"captions": {"name": "gpt"}}, "unknown captioner 'gpt'"),
        ({"captions": {"captioner": "x"}}, "captions.captioner: unknown option"),
        ({"filters": {"nodata_v1": {"max_fraction": 2}}}, "filters.nodata_v1.max_fraction"),
        ({"filters": {"nope_v1": {}}}, "unknown filter 'nope_v1'"),
        ({"tiles": {"grid_crs": "EPSG:4326"}}, "not a projected (metric) CRS"),
        ({"tiles": {"grid_crs": "EPSG:99999"}}, "unknown CRS 'EPSG:99999'"),
        ({"imagery": [{"name": "i", "type": "nope"}]}, "unknown imagery source 'nope'"),
        ({"imagery": [{"name": "i", "path": "x", "bands": [1, 2]}]}, "bands must list 1 or 3"),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, patch: dict, needle: str) -> None:
    with pytest.raises(FatalError) as e:
        load_recipe(_write(tmp_path, {**BASE, **patch}))
    assert needle in str(e.value)
    assert str(tmp_path / "r.yaml") in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(FatalError, match="not valid YAML"):
        load_recipe(bad)
