"""The recipe: one YAML file, typed and validated before any work starts.

Relative paths in a recipe are resolved against the recipe file's folder, so a recipe can be
run from anywhere. Unknown fields are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from geoweave.registry import (
    CAPTIONERS,
    CORPUS_PASSES,
    FILTERS,
    IMAGERY_SOURCES,
    LABEL_SOURCES,
    QUESTION_GENERATORS,
    Registry,
    load_plugins,
)
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
            if not (-180 <= w <= 180 and -180 <= e <= 180 and w != e and -90 <= s < n <= 90):
                raise ValueError(
                    "area.bbox must be west, south, east, north in degrees with south < north "
                    f"(west > east crosses the antimeridian): {self.bbox}"
                )
        return self


class _Component(_Strict):
    """A recipe section that names a registered component; every field the section does not
    declare is an option of that component, validated by the component's own model
    (``Recipe.check_components``)."""

    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" not in data:
            own = set(cls.model_fields)
            data = {k: v for k, v in data.items() if k in own} | {
                "options": {k: v for k, v in data.items() if k not in own}
            }
        return data


class ImageryConfig(_Component):
    """An imagery source: ``type`` names the component (``geotiff``: a local GeoTIFF/COG, with
    options path, bands, scale, nodata)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: str = "geotiff"
    keep_bands: bool = Field(False, description="also store all bands as GeoTIFF")
    acquired: str | None = Field(None, description="acquisition date or time, ISO 8601")
    license: str = "see source"

    @property
    def path(self) -> Path | None:
        """The local file of a file-based source (its checksum goes into the run record)."""
        p = self.options.get("path")
        return Path(p) if p else None


class TilesConfig(_Strict):
    size_px: int = Field(64, ge=8, le=4096)
    gsd_m: list[float] = Field(default=[10.0], min_length=1, description="metres per pixel")
    grid_crs: str = Field("utm", description="'utm' (the UTM zone of the area) or an EPSG code")

    @field_validator("grid_crs")
    @classmethod
    def _metric_crs(cls, v: str) -> str:
        if v.lower() == "utm":
            return "utm"
        try:
            crs = CRS.from_user_input(v)
        except CRSError:
            raise ValueError(
                f"unknown CRS {v!r}: give 'utm' or a projected EPSG code such as EPSG:32610"
            ) from None
        if not crs.is_projected:
            raise ValueError(
                f"{v} is not a projected (metric) CRS: tiles need metres; give 'utm' or a "
                "projected EPSG code such as EPSG:32610"
            )
        return v

    @field_validator("gsd_m")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(g <= 0 for g in v):
            raise ValueError("every gsd_m must be > 0")
        return sorted(set(v))


SPLIT_NAMES = ("train", "val", "test")


class SplitsConfig(_Strict):
    """Spatially disjoint train / val / test splits, assigned at plan time by blocks of a
    coarse grid (``geoweave.builders.splits``)."""

    enabled: bool = Field(False, description="assign every planned tile a split")
    fractions: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1},
        description="split name (train, val, test) -> share of the blocks; sums to 1",
    )
    block_m: float = Field(
        5000.0, gt=0, description="side of a square block of the grid CRS, in metres"
    )
    buffer_m: float | None = Field(
        None,
        ge=0,
        description="tiles this near a tile of a higher-priority split are in none "
        "('buffer'); default: the largest tile ground size (size_px * max gsd_m)",
    )

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(SPLIT_NAMES))
        if unknown:
            raise ValueError(f"unknown split {unknown}: the names are {', '.join(SPLIT_NAMES)}")
        if any(f <= 0 for f in v.values()):
            raise ValueError(f"every fraction must be > 0: {v}")
        if abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError(f"the fractions must sum to 1, not {sum(v.values()):g}: {v}")
        return v


class LandCoverConfig(_Strict):
    path: Path
    legend: str = Field("esa_worldcover", description="a shipped legend name or a CSV path")
    name: str = "landcover"
    by_date: dict[str, Path] = Field(
        default_factory=dict,
        description="land cover of other dates (same legend), date (YYYY or YYYY-MM-DD) -> "
        "raster: a sample takes the one nearest its acquisition date (``path``: no date)",
    )

    @field_validator("by_date")
    @classmethod
    def _dates(cls, v: dict[str, Path]) -> dict[str, Path]:
        for day in v:
            if not re.fullmatch(r"\d{4}(-\d{2}-\d{2})?", day):
                raise ValueError(f"by_date: {day!r} is not a date (YYYY or YYYY-MM-DD)")
        return v


class VectorConfig(_Strict):
    path: Path
    name: str | None = None
    tag_columns: list[str] | None = None
    license: str | None = Field(None, description="carried by samples that use these labels")


class LabelSourceConfig(_Component):
    """A label source component (``vector``: options path, tag_columns; or a plugin's)."""

    type: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    license: str | None = Field(None, description="carried by samples that use these labels")


class LabelsConfig(_Strict):
    osm: list[Path] = Field(default_factory=list)
    tag_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_TAG_KEYS))
    min_pixels: float = Field(4.0, ge=0, description="smaller elements are not visible")
    keep_points: bool = Field(False, description="keep point features (no visible extent)")
    landcover: LandCoverConfig | None = None
    vector: list[VectorConfig] = Field(default_factory=list)
    sources: list[LabelSourceConfig] = Field(
        default_factory=list, description="label source components, by type"
    )


class CaptionsConfig(_Component):
    """The captioner (``template_v1``: options ``per_sample``)."""

    name: str = "template_v1"


class QuestionsConfig(_Component):
    """The question-answer generator (``template_qa_v1``: options ``per_sample``)."""

    enabled: bool = True
    name: str = "template_qa_v1"


# Quality filters run in this order unless a recipe disables one (``false``) or adds its own.
DEFAULT_FILTERS = (
    "nodata_v1",
    "low_variance_v1",
    "min_labels_v1",
    "cloud_v1",
    "saturation_v1",
    "faithfulness_v1",
    "qa_check_v1",
    "caption_length_v1",
    "repetition_v1",
    "garbage_text_v1",
)
# Corpus passes after the shards; the summary reads statistics_v1, so it is always on.
DEFAULT_PASSES = ("statistics_v1", "near_duplicates_v1", "same_ground_v1", "shared_captions_v1")
REQUIRED_PASSES = ("statistics_v1",)


def merge_components(
    value: Any, defaults: tuple[str, ...], section: str, required: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """A recipe's ``name: options`` mapping over the defaults: ``name: {options}`` adds or
    configures one, ``name: false`` turns it off; order is the defaults', then the recipe's."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(
            f"{section} is a mapping of component names to options, e.g. {{NAME: {{}}}}"
        )
    out: dict[str, dict[str, Any]] = {name: {} for name in defaults}
    for name, opts in value.items():
        if opts is False and name in required:
            raise ValueError(f"{section}.{name} cannot be turned off (the build summary reads it)")
        if opts is False:
            out.pop(name, None)
        elif opts is None or opts is True:
            out.setdefault(name, {})
        elif isinstance(opts, dict):
            out[name] = {**out.get(name, {}), **opts}
        else:
            raise ValueError(
                f"{section}.{name}: give options as a mapping, or false to turn it off"
            )
    return out


class OutputConfig(_Strict):
    dir: Path = Path("out")
    formats: list[Literal["webdataset", "parquet"]] = Field(
        default=["webdataset", "parquet"], min_length=1
    )
    # 256: a shard's fixed cost (its pipeline, 3 files, the stats marker: ~9 ms) is 4% of a
    # 128 px shard, not 15% as at 64; still small enough for many tasks on a city.
    samples_per_shard: int = Field(256, ge=1)
    jpeg_quality: int = Field(90, ge=1, le=100)


class ExecutionConfig(_Strict):
    ray_address: str | None = Field(None, description="None starts a local Ray")
    num_cpus: int | None = Field(None, ge=1)
    retries: int = Field(2, ge=0)
    shards_per_task: int | None = Field(
        None, ge=1, le=64, description="shards per Ray task; default: 1 to 8 by build size"
    )
    early_start: bool = Field(
        True,
        description="run shards in forked processes, one per CPU, while a local Ray starts (Linux)",
    )
    node_ip_address: str | None = Field(None, description="local Ray bind address")
    cache_dir: Path | None = Field(
        None, description="label index cache; default $GEOWEAVE_CACHE or ~/.cache/geoweave"
    )
    verify_inputs: bool = Field(
        False,
        description="hash every OSM file whole to check its cached index (default: size, "
        "mtime and sampled blocks)",
    )


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    area: AreaConfig = AreaConfig()
    imagery: list[ImageryConfig] = Field(min_length=1)
    tiles: TilesConfig = TilesConfig()
    splits: SplitsConfig = SplitsConfig()
    labels: LabelsConfig = LabelsConfig()
    captions: CaptionsConfig = CaptionsConfig()
    questions: QuestionsConfig = QuestionsConfig()
    filters: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: merge_components({}, DEFAULT_FILTERS, "filters"),
        description="filter name -> options, over the defaults; false turns one off",
    )
    passes: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: merge_components({}, DEFAULT_PASSES, "passes"),
        description="corpus pass name -> options, over the defaults (statistics_v1)",
    )
    plugins: list[str] = Field(
        default_factory=list, description="modules or .py files that register components"
    )
    output: OutputConfig = OutputConfig()
    execution: ExecutionConfig = ExecutionConfig()

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, v: Any) -> dict[str, dict[str, Any]]:
        return merge_components(v, DEFAULT_FILTERS, "filters")

    @field_validator("passes", mode="before")
    @classmethod
    def _passes(cls, v: Any) -> dict[str, dict[str, Any]]:
        return merge_components(v, DEFAULT_PASSES, "passes", REQUIRED_PASSES)

    @model_validator(mode="after")
    def _unique_names(self) -> Recipe:
        names = [i.name for i in self.imagery]
        if len(set(names)) != len(names):
            raise ValueError(f"imagery names must be unique: {names}")
        return self

    def _with_area(self, c: ImageryConfig) -> dict[str, Any]:
        """The source's options, with the recipe's ``area.bbox`` as ``area_bbox`` for a source
        that declares that option (STAC: the search box) and was not given one."""
        options = dict(c.options)
        if c.type not in IMAGERY_SOURCES.names():
            return options  # ``norm`` names the unknown type
        model = getattr(IMAGERY_SOURCES.get(c.type), "Options", None)
        fields = getattr(model, "model_fields", {})
        if "area_bbox" in fields and options.get("area_bbox") is None and self.area.bbox:
            options["area_bbox"] = list(self.area.bbox)
        return options

    def check_components(self) -> Recipe:
        """Load the plugins, then validate every component's name and options (FatalError
        naming the field); returns the recipe with options normalised (defaults filled in)."""
        import geoweave.builders.components  # noqa: F401  (declares the built-ins)

        load_plugins(self.plugins)  # after: a plugin may not take a built-in's name

        def norm(registry: Registry, name: str, options: dict[str, Any], where: str) -> Any:
            return registry.options(name, options, where).model_dump()

        imagery = [
            c.model_copy(
                update={
                    "options": norm(IMAGERY_SOURCES, c.type, self._with_area(c), f"imagery.{i}")
                }
            )
            for i, c in enumerate(self.imagery)
        ]
        captions = self.captions.model_copy(
            update={
                "options": norm(CAPTIONERS, self.captions.name, self.captions.options, "captions")
            }
        )
        q = self.questions
        questions = q.model_copy(
            update={"options": norm(QUESTION_GENERATORS, q.name, q.options, "questions")}
        )
        filters = {n: norm(FILTERS, n, o, f"filters.{n}") for n, o in self.filters.items()}
        passes = {n: norm(CORPUS_PASSES, n, o, f"passes.{n}") for n, o in self.passes.items()}
        label_sources = [
            c.model_copy(
                update={"options": norm(LABEL_SOURCES, c.type, c.options, f"labels.sources.{i}")}
            )
            for i, c in enumerate(self.labels.sources)
        ]
        labels = self.labels.model_copy(update={"sources": label_sources})
        return self.model_copy(
            update={
                "imagery": imagery,
                "captions": captions,
                "questions": questions,
                "filters": filters,
                "passes": passes,
                "labels": labels,
            }
        )
