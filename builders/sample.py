"""The one sample record that flows from join to captions to filters to writers (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoweave.sources.grid import Tile

OSM_LICENSE = "© OpenStreetMap contributors, ODbL 1.0"


@dataclass(slots=True)
class Sample:
    """A tile on its way through the pipeline; stages fill in fields, none invents another."""

    tile: Tile
    source_license: str = ""
    label_licenses: dict[str, str] = field(default_factory=dict)  # vector source -> licence
    acquired: str | None = None
    osm_snapshot: str | None = None
    rgb: np.ndarray | None = None  # (H, W, 3) uint8
    bands_tif: bytes | None = None
    jpeg: bytes | None = None
    nodata_fraction: float = 0.0
    osm: list[dict[str, Any]] = field(default_factory=list)
    landcover: dict[str, float] = field(default_factory=dict)
    captions: list[dict[str, Any]] = field(default_factory=list)
    qa: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    status: str = "kept"
    reject_reason: str | None = None

    @property
    def key(self) -> str:
        return self.tile.key

    def reject(self, reason: str) -> None:
        self.status, self.reject_reason = "rejected", reason

    @property
    def license(self) -> str:
        """The imagery licence plus the licence of each label source the sample uses."""
        parts = [self.source_license] if self.source_license else []
        for source in dict.fromkeys(e["source"] for e in self.osm):
            lic = OSM_LICENSE if source == "osm" else self.label_licenses.get(source)
            if lic and lic not in parts:
                parts.append(lic)
        return "; ".join(parts)

    def metadata(self) -> dict[str, Any]:
        """Everything but pixels: the JSON of a WebDataset sample and the sidecar row."""
        t = self.tile
        w, s, e, n = t.bbox_lonlat()
        osm_ids = [el["id"] for el in self.osm if el["source"] == "osm"]
        return {
            "key": t.key,
            "shard": t.shard,
            "status": self.status,
            "reject_reason": self.reject_reason,
            "source": t.source,
            "acquired": self.acquired,
            "crs": t.crs,
            "transform": list(t.transform)[:6],
            "gsd_m": t.gsd_m,
            "size_px": t.size_px,
            "bbox": {"west": w, "south": s, "east": e, "north": n},
            "osm_ids": osm_ids,
            "osm_snapshot": self.osm_snapshot if osm_ids else None,
            "osm": self.osm,
            "landcover": self.landcover,
            "captions": self.captions,
            "qa": self.qa,
            "scores": self.scores,
            "license": self.license,
        }
