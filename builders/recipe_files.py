"""Reading a recipe file: YAML, command-line overrides, paths relative to the recipe, then the
typed validation of ``geoweave.builders.recipe`` and each component's own options.

A bad field stops the run here, before any work, with the file and the field named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from geoweave.builders.recipe import Recipe
from geoweave.errors import FatalError


def _format_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid recipe"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `build-dataset run --help`)"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise FatalError(f"override {dotted}: {p} is not a section")
    node[leaf] = value


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make recipe paths absolute, relative to the recipe's folder."""

    def fix(p: Any) -> Any:
        return str((base / Path(p).expanduser()).resolve()) if isinstance(p, str) and p else p

    for img in data.get("imagery") or []:
        if isinstance(img, dict) and "path" in img:
            img["path"] = fix(img["path"])
    for section, key in (("output", "dir"), ("execution", "cache_dir")):
        sec = data.get(section)
        if isinstance(sec, dict) and sec.get(key):
            sec[key] = fix(sec[key])
    for section in ("captions", "questions"):  # component options that name files
        sec = data.get(section)
        if not isinstance(sec, dict):
            continue
        for key in ("model_path", "cache_dir"):
            if sec.get(key):
                sec[key] = fix(sec[key])
        if str(sec.get("prompt", "")).endswith((".yaml", ".yml")):
            sec["prompt"] = fix(sec["prompt"])
        if isinstance(sec.get("prompts"), dict):
            sec["prompts"] = {t: fix(v) if str(v).endswith((".yaml", ".yml")) else v
                              for t, v in sec["prompts"].items()}  # fmt: skip
    plugins = data.get("plugins")
    if isinstance(plugins, list):
        data["plugins"] = [fix(p) if str(p).endswith(".py") else p for p in plugins]
    area = data.get("area") or {}
    if isinstance(area, dict) and area.get("geojson"):
        area["geojson"] = fix(area["geojson"])
    labels = data.get("labels") or {}
    if isinstance(labels, dict):
        labels["osm"] = [fix(p) for p in labels.get("osm") or []]
        lc = labels.get("landcover")
        if isinstance(lc, dict):
            lc["path"] = fix(lc.get("path"))
            if isinstance(lc.get("by_date"), dict):
                lc["by_date"] = {d: fix(v) for d, v in lc["by_date"].items()}
            if str(lc.get("legend", "")).endswith(".csv"):
                lc["legend"] = fix(lc["legend"])
        for v in labels.get("vector") or []:
            if isinstance(v, dict):
                v["path"] = fix(v.get("path"))
        for v in labels.get("sources") or []:
            if isinstance(v, dict) and "path" in v:
                v["path"] = fix(v["path"])


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (YAML says keys are
    unique; PyYAML keeps the last one, so a second ``tiles:`` block silently replaced the
    first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice, on lines {seen[key]} and {line}: keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read, override and validate a recipe; raise FatalError naming the bad field.

    Args:
        path: the YAML file.
        overrides: dotted field -> value (CLI flags), applied before validation. Path values
            given on the command line are taken relative to the current directory.
    """
    path = Path(path)
    if not path.is_file():
        raise FatalError(f"recipe not found: {path}")
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.load(f, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        raise FatalError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise FatalError(f"{path}: a recipe is a YAML mapping of fields")
    _resolve_paths(data, path.resolve().parent)
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted, value)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise FatalError(_format_error(path, e)) from None
    try:
        return recipe.check_components()
    except FatalError as e:
        raise FatalError(f"{path}: invalid recipe\n  {e}") from None
