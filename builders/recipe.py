"""The recipe: one YAML file, typed and validated before any work starts.

Relative paths in a recipe are resolved against the recipe file's folder, so a recipe can be
run from anywhere. Unknown fields are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from geoweave.builders.errors import FatalError
from geoweave.sources.labels import DEFAULT_TAG_KEYS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AreaConfig(_Strict):
    """Where to tile. Give at most one of ``bbox`` and ``geojson``; neither means the
    footprint of the imagery."""

    bbox: tuple[float, float, float, float] | None = Field(
        None, description="west, south, east, north in degrees (EPSG:4326)"
    )
    geojson: Path | None = Field(None, description="a GeoJSON file whose union is the area")

    @model_validator(mode="after")
    def _one_of(self) -> AreaConfig:
        if self.bbox is not None and self.geojson is not None:
            raise ValueError("give either area.bbox or area.geojson, not both")
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ValueError(
                    f"area.bbox must be west < east, south < north in degrees: {self.bbox}"
                )
        return self


class ImageryConfig(_Strict):
    """A local GeoTIFF/COG imagery source."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    path: Path
    bands: list[int] = Field(default=[1, 2, 3], description="1-based bands mapped to R, G, B")
    scale: Literal["auto", "none"] | tuple[float, float] = Field(
        "auto", description="'auto' (2-98th percentile of the source), 'none', or [min, max]"
    )
    keep_bands: bool = Field(False, description="also store all bands as GeoTIFF")
    nodata: float | None = Field(None, description="nodata value when the file declares none")
    acquired: str | None = Field(None, description="acquisition date or time, ISO 8601")
    license: str = "see source"

    @field_validator("bands")
    @classmethod
    def _three_bands(cls, v: list[int]) -> list[int]:
        if len(v) not in (1, 3) or min(v) < 1:
            raise ValueError("bands must list 1 or 3 band numbers, counted from 1")
        return v


class TilesConfig(_Strict):
    size_px: int = Field(64, ge=8, le=4096)
    gsd_m: list[float] = Field(default=[10.0], min_length=1, description="metres per pixel")
    grid_crs: str = Field("utm", description="'utm' (the UTM zone of the area) or an EPSG code")

    @field_validator("gsd_m")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(g <= 0 for g in v):
            raise ValueError("every gsd_m must be > 0")
        return sorted(set(v))


class LandCoverConfig(_Strict):
    path: Path
    legend: str = Field("esa_worldcover", description="a shipped legend name or a CSV path")
    name: str = "landcover"


class VectorConfig(_Strict):
    path: Path
    name: str | None = None
    tag_columns: list[str] | None = None
    license: str | None = Field(None, description="carried by samples that use these labels")


class LabelsConfig(_Strict):
    osm: list[Path] = Field(default_factory=list)
    tag_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_TAG_KEYS))
    min_pixels: float = Field(4.0, ge=0, description="smaller elements are not visible")
    keep_points: bool = Field(False, description="keep point features (no visible extent)")
    landcover: LandCoverConfig | None = None
    vector: list[VectorConfig] = Field(default_factory=list)


class CaptionsConfig(_Strict):
    captioner: Literal["template_v1"] = "template_v1"
    per_sample: int = Field(2, ge=1, le=10)


class QAConfig(_Strict):
    enabled: bool = True
    generator: Literal["template_qa_v1"] = "template_qa_v1"
    per_sample: int = Field(4, ge=0, le=20)


class FiltersConfig(_Strict):
    max_nodata_fraction: float = Field(0.2, ge=0, le=1)
    min_std: float = Field(2.0, ge=0, description="minimum grey-level standard deviation")
    min_labels: int = Field(1, ge=0, description="minimum number of visible labels")


class OutputConfig(_Strict):
    dir: Path = Path("out")
    formats: list[Literal["webdataset", "parquet"]] = Field(
        default=["webdataset", "parquet"], min_length=1
    )
    samples_per_shard: int = Field(64, ge=1)
    jpeg_quality: int = Field(90, ge=1, le=100)


class ExecutionConfig(_Strict):
    ray_address: str | None = Field(None, description="None starts a local Ray")
    num_cpus: int | None = Field(None, ge=1)
    retries: int = Field(2, ge=0)
    node_ip_address: str | None = Field(None, description="local Ray bind address")
    cache_dir: Path | None = Field(
        None, description="label index cache; default $GEOWEAVE_CACHE or ~/.cache/geoweave"
    )


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    area: AreaConfig = AreaConfig()
    imagery: list[ImageryConfig] = Field(min_length=1)
    tiles: TilesConfig = TilesConfig()
    labels: LabelsConfig = LabelsConfig()
    captions: CaptionsConfig = CaptionsConfig()
    qa: QAConfig = QAConfig()
    filters: FiltersConfig = FiltersConfig()
    output: OutputConfig = OutputConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> Recipe:
        names = [i.name for i in self.imagery]
        if len(set(names)) != len(names):
            raise ValueError(f"imagery names must be unique: {names}")
        return self


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
        return str((base / p).resolve()) if isinstance(p, str) and p else p

    for img in data.get("imagery") or []:
        if isinstance(img, dict):
            img["path"] = fix(img.get("path"))
    for section, key in (("output", "dir"), ("execution", "cache_dir")):
        sec = data.get(section)
        if isinstance(sec, dict) and sec.get(key):
            sec[key] = fix(sec[key])
    area = data.get("area") or {}
    if isinstance(area, dict) and area.get("geojson"):
        area["geojson"] = fix(area["geojson"])
    labels = data.get("labels") or {}
    if isinstance(labels, dict):
        labels["osm"] = [fix(p) for p in labels.get("osm") or []]
        lc = labels.get("landcover")
        if isinstance(lc, dict):
            lc["path"] = fix(lc.get("path"))
            if str(lc.get("legend", "")).endswith(".csv"):
                lc["legend"] = fix(lc["legend"])
        for v in labels.get("vector") or []:
            if isinstance(v, dict):
                v["path"] = fix(v.get("path"))


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
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FatalError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise FatalError(f"{path}: a recipe is a YAML mapping of fields")
    _resolve_paths(data, path.resolve().parent)
    for dotted, value in (overrides or {}).items():
        _set_path(data, dotted, value)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise FatalError(_format_error(path, e)) from None
