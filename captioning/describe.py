"""The tile description an LLM is given: typed, deterministic, rendered from the joined labels.

Each visible feature is its phrase from the same tag -> phrase table the templates use, its
pixel coverage as a word (ChatEarthNet style), its place in a 3x3 grid, whether the tile edge
clips it, and its OSM name where it has one; then the land-cover fractions and the resolution.
It is rendered as JSON, so label text (untrusted: anyone can write an OSM name) reaches a
model only as quoted data inside a JSON string, never as words of the prompt itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from geoweave.protocols import TileDescription
from geoweave.sources.phrases import element_phrase

MAX_FEATURES = 12  # the most visible ones; a prompt stays short and the order is stable

# Share of the tile a feature covers -> the word a description uses (upper bounds).
COVERAGE_WORDS = ((0.01, "tiny"), (0.05, "small"), (0.2, "medium"), (0.5, "large"))


def coverage_word(fraction: float) -> str:
    for bound, word in COVERAGE_WORDS:
        if fraction < bound:
            return word
    return "dominant"


@dataclass(frozen=True)
class Feature:
    kind: str
    size: str
    position: str
    clipped: bool
    name: str | None = None


@dataclass(frozen=True)
class Description:
    resolution_m: float
    ground_size_m: float
    features: list[Feature] = field(default_factory=list)
    land_cover: dict[str, int] = field(default_factory=dict)  # class -> percent of the tile
    more_features: int = 0  # visible features beyond MAX_FEATURES, not listed

    def to_json(self) -> str:
        """Deterministic JSON (sorted keys, no ASCII escaping of names)."""
        data = asdict(self)
        data["features"] = [{k: v for k, v in f.items() if v is not None} for f in data["features"]]
        return json.dumps(data, sort_keys=True, ensure_ascii=False)


def describe(tile: TileDescription) -> Description:
    """The description of one tile: features by coverage (largest first, then by kind, name
    and position, so the same labels always give the same text)."""
    features = []
    for el in tile.elements:
        kind = element_phrase(el["tags"])
        if kind:
            name = el["tags"].get("name") or None
            features.append(
                (el["coverage_frac"], Feature(kind, coverage_word(el["coverage_frac"]),
                                              el["position"], bool(el["clipped"]), name))
            )  # fmt: skip
    features.sort(key=lambda f: (-f[0], f[1].kind, f[1].name or "", f[1].position))
    land = {k: round(100 * v) for k, v in sorted(tile.landcover.items(), key=lambda kv: -kv[1])}
    return Description(
        resolution_m=round(tile.resolution_m, 2),
        ground_size_m=round(tile.gsd_m * tile.size_px, 1),
        features=[f for _, f in features[:MAX_FEATURES]],
        land_cover={k: v for k, v in land.items() if v >= 1},
        more_features=max(0, len(features) - MAX_FEATURES),
    )
