"""Third-party components: the README's filter example, loaded from a recipe, runs in a shard
with its versioned name in the funnel; bad plugins and bad options fail before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from geoweave.builders.prepare import prepare
from geoweave.builders.recipe_files import load_recipe
from geoweave.builders.shard import run_shard
from geoweave.errors import FatalError
from tests.conftest import REPO
from tests.data.labels_fixture import write_cover
from tests.data.raster_fixture import _write

EXAMPLE = REPO / "examples" / "plugins" / "dark_fraction_filter.py"


def _scene(path: Path) -> Path:
    """Left half dark (values 0-9, no nodata declared), right half bright texture."""
    rng = np.random.default_rng(4)
    data = rng.integers(60, 220, size=(3, 128, 128), dtype=np.uint8)
    data[:, :, :64] = rng.integers(1, 10, size=(3, 128, 64), dtype=np.uint8)
    return _write(path, data, 10.0)


def _recipe(tmp_path: Path, **filters: object) -> Path:
    recipe = {
        "labels": {"vector": [{"path": str(write_cover(tmp_path / "fields.geojson", 1280))}]},
        "name": "plug",
        "plugins": [str(EXAMPLE)],
        "imagery": [{"name": "img", "path": str(_scene(tmp_path / "scene.tif")), "scale": "none"}],
        "tiles": {"size_px": 32, "gsd_m": [10], "grid_crs": "EPSG:32610"},
        "filters": {"min_labels_v1": False, "nodata_v1": {"max_fraction": 1.0}, **filters},
        "output": {"samples_per_shard": 1000},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_example_filter_runs_from_a_recipe_with_its_name_in_the_funnel(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, max_dark_fraction_v1={"max_fraction": 0.5}))
    assert list(recipe.filters) == [
        "nodata_v1", "low_variance_v1", "cloud_v1", "saturation_v1", "faithfulness_v1",
        "qa_check_v1", "caption_length_v1", "repetition_v1", "garbage_text_v1",
        "max_dark_fraction_v1",
    ]  # fmt: skip
    ctx, plan, _ = prepare(recipe, tmp_path / "out")
    (tmp_path / "out").mkdir()
    stats = run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(tmp_path / "out" / "plug-000000.samples.parquet").to_pylist()
    dark = [r for r in rows if r["reject_reason"] == "too_dark"]
    assert dark and all(r["rejected_by"] == "max_dark_fraction_v1" for r in dark)
    assert all(dict(r["scores"])["dark_fraction"] > 0.5 for r in dark)
    scored = [r for r in rows if r["status"] == "kept"]
    assert scored and all(dict(r["scores"])["dark_fraction"] <= 0.5 for r in scored)
    assert stats.funnel["max_dark_fraction_v1"] == len(dark)
    assert list(stats.funnel).index("max_dark_fraction_v1") > list(stats.funnel).index(
        "low_variance_v1"
    )


def test_bad_option_of_a_plugin_component_is_named(tmp_path: Path) -> None:
    path = _recipe(tmp_path, max_dark_fraction_v1={"max_fraction": 3})
    with pytest.raises(FatalError, match=r"filters\.max_dark_fraction_v1\.max_fraction"):
        load_recipe(path)


def test_missing_plugin_file_fails_before_work(tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["plugins"] = ["no_such_plugin.py"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FatalError, match=r"plugins: cannot import .*no_such_plugin\.py"):
        load_recipe(path)


def test_label_sources_by_type_builtin_and_plugin(tmp_path: Path) -> None:
    cover = write_cover(tmp_path / "fields.geojson", 1280, {"landuse": "farmland"})
    data = yaml.safe_load(_recipe(tmp_path).read_text())
    data["plugins"].append(str(REPO / "tests" / "data" / "plugins" / "box_labels.py"))
    data["labels"] = {
        "sources": [
            {"type": "vector", "name": "fields", "path": str(cover), "license": "CC0 fields"},
            {"type": "box_test", "name": "box", "value": "meadow"},
        ]
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    recipe = load_recipe(tmp_path / "recipe.yaml")
    ctx, plan, inputs = prepare(recipe, tmp_path / "out")
    assert str(cover) in inputs
    (tmp_path / "out").mkdir()
    run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(tmp_path / "out" / "plug-000000.samples.parquet").to_pylist()
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept
    for r in kept:
        assert {e["source"] for e in r["osm"]} == {"fields", "box"}
        assert "CC0 fields" in r["license"]
        text = " ".join(c["text"] for c in r["captions"])
        assert "meadow" in text or "farmland" in text


def test_unknown_label_source_type_is_named(tmp_path: Path) -> None:
    data = yaml.safe_load(_recipe(tmp_path).read_text())
    data["labels"] = {"sources": [{"type": "nope"}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(FatalError, match=r"labels\.sources\.0: unknown label source 'nope'"):
        load_recipe(tmp_path / "recipe.yaml")


def test_every_built_in_is_declared_by_the_module_that_registers_it() -> None:
    """A built-in's module is imported on first use (``Registry.declare``): each declared name
    resolves to a class its own module registered, and no registration is left undeclared."""
    import importlib

    from geoweave.builders.components import BUILT_IN

    for module, (registry, names) in BUILT_IN.items():
        for name in names:
            cls = registry.get(name)
            assert cls.__module__ == module, (name, cls.__module__)
        importlib.import_module(module)
    declared = {(r.kind, n) for r, names in BUILT_IN.values() for n in names}
    registries = {r for r, _ in BUILT_IN.values()}
    registered = {  # geoweave's own (plugins and tests register under other module names)
        (r.kind, n) for r in registries for n, c in r._items.items()
        if c.__module__.startswith("geoweave.")
    }  # fmt: skip
    assert registered == declared


def test_a_template_recipe_leaves_the_llm_and_remote_sources_unimported(tmp_path: Path) -> None:
    """Checking a template recipe imports only the components it names."""
    import subprocess
    import sys

    code = (
        "import sys; from geoweave.builders.recipe_files import load_recipe; "
        f"load_recipe({str(_recipe(tmp_path))!r}); "
        "print(sorted(m for m in ('geoweave.captioning.llm', 'geoweave.sources.earthengine', "
        "'geoweave.sources.stac', 'geoweave.captioning.templates') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "['geoweave.captioning.templates']"


def test_a_plugin_cannot_take_a_built_in_name_before_the_built_in_is_imported() -> None:
    """A built-in's module is imported on first use; a plugin registering that name first
    would shadow it unnoticed, so the registry refuses it (and once the built-in is imported,
    the name is taken)."""
    import geoweave.builders.components  # noqa: F401  (declares the built-ins)
    from geoweave.registry import FILTERS, Registry

    class Impostor:
        pass

    fresh = Registry("filter")
    fresh.declare("cloud_v1", "geoweave.qa.image_quality")
    with pytest.raises(
        ValueError, match=r"'cloud_v1' is a built-in \(of geoweave.qa.image_quality\)"
    ):
        fresh.add("cloud_v1")(Impostor)
    with pytest.raises(ValueError, match=r"'cloud_v1' (is a built-in|registered twice)"):
        FILTERS.add("cloud_v1")(Impostor)
    assert FILTERS.get("cloud_v1").__module__ == "geoweave.qa.image_quality"
