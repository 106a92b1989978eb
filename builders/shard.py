"""One shard, start to finish: read pixels, join labels, caption, ask, filter, write.

Plain functions with no Ray in them; the executor runs ``run_shard`` as a Ray task, tests and
benchmarks call it directly.
"""

from __future__ import annotations

import io
import os
import socket
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image

from geoweave.builders.join import ShardLabels
from geoweave.builders.recipe import ImageryConfig, LabelsConfig, LandCoverConfig, Recipe
from geoweave.builders.sample import Sample
from geoweave.builders.writers import ShardWriter
from geoweave.captioning import qa as _qa  # noqa: F401  (registers template_qa_v1)
from geoweave.captioning import templates as _templates  # noqa: F401  (registers template_v1)
from geoweave.captioning.registry import CAPTIONERS, QA_GENERATORS
from geoweave.qa.filters import apply_filters, build_filters
from geoweave.sources.grid import Tile
from geoweave.sources.imagery import GeoTiffSource
from geoweave.sources.labels import LabelSource


@dataclass(frozen=True)
class BuildContext:
    """What every shard task needs; small and picklable (sources reopen in each worker)."""

    recipe: Recipe
    out_dir: Path
    osm_index_dirs: tuple[str, ...] = ()
    osm_snapshot: str | None = None  # newest timestamp of the OSM data, when it has one


# Sources are opened once per worker process and reused by every shard it runs; the caches are
# keyed by the recipe fields' JSON (pydantic models with lists do not hash).


def open_imagery(cfg: ImageryConfig) -> GeoTiffSource:
    return _imagery(cfg.model_dump_json())


@cache
def _imagery(cfg_json: str) -> GeoTiffSource:
    cfg = ImageryConfig.model_validate_json(cfg_json)
    return GeoTiffSource(cfg.name, cfg.path, cfg.bands, cfg.scale, cfg.nodata)


def open_label_sources(index_dirs: tuple[str, ...], labels: LabelsConfig) -> list[LabelSource]:
    return _label_sources(index_dirs, labels.model_dump_json())


@cache
def _label_sources(index_dirs: tuple[str, ...], labels_json: str) -> list[LabelSource]:
    from geoweave.sources.osm import OsmIndex

    labels = LabelsConfig.model_validate_json(labels_json)
    out: list[LabelSource] = [OsmIndex(Path(d)) for d in index_dirs]
    if labels.vector:
        from geoweave.sources.vector import VectorLabelSource

        out += [VectorLabelSource(v.path, v.name, v.tag_columns) for v in labels.vector]
    return out


def open_landcover(cfg: LandCoverConfig) -> Any:
    return _landcover(cfg.model_dump_json())


@cache
def _landcover(cfg_json: str) -> Any:
    from geoweave.sources.landcover import LandCoverSource

    cfg = LandCoverConfig.model_validate_json(cfg_json)
    return LandCoverSource(cfg.path, cfg.legend, cfg.name)


def encode_jpeg(rgb: Any, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_geotiff(data: Any, tile: Tile) -> bytes:
    from rasterio.io import MemoryFile

    count, h, w = data.shape
    with MemoryFile() as mem:
        profile = {"driver": "GTiff", "count": count, "height": h, "width": w, "dtype": data.dtype}
        profile["nodata"] = 0  # read_tile zeroes nodata pixels
        with mem.open(**profile, crs=tile.crs, transform=tile.transform, compress="deflate") as ds:
            ds.write(data)
        return bytes(mem.read())


class ShardPipeline:
    """The per-tile stages of one shard, built once per shard from the recipe."""

    def __init__(self, ctx: BuildContext, tiles: list[Tile]) -> None:
        r = ctx.recipe
        self.recipe = r
        self.osm_snapshot = ctx.osm_snapshot
        self.imagery = {c.name: (c, open_imagery(c)) for c in r.imagery}
        self.labels = ShardLabels(open_label_sources(ctx.osm_index_dirs, r.labels), tiles)
        self.landcover = open_landcover(r.labels.landcover) if r.labels.landcover else None
        self.captioner = CAPTIONERS.get(r.captions.captioner)(r.seed, r.captions.per_sample)
        self.qa = (
            QA_GENERATORS.get(r.qa.generator)(r.seed, r.qa.per_sample) if r.qa.enabled else None
        )
        self.filters = build_filters(r.filters)
        self.label_licenses = {
            v.name or v.path.stem: v.license for v in r.labels.vector if v.license
        }

    def process(self, tile: Tile) -> Sample:
        cfg, src = self.imagery[tile.source]
        sample = Sample(tile, cfg.license, self.label_licenses, acquired=cfg.acquired)
        sample.osm_snapshot = self.osm_snapshot
        if tile.plan_reject:
            sample.reject(tile.plan_reject)
            return sample
        pixels = src.read_tile(tile)
        sample.nodata_fraction = pixels.nodata_fraction
        sample.rgb = src.to_rgb8(pixels)
        if cfg.keep_bands:
            sample.bands_tif = encode_geotiff(pixels.data, tile)
        labels = self.recipe.labels
        sample.osm = self.labels.for_tile(tile, labels.min_pixels, labels.keep_points)
        if self.landcover is not None:
            sample.landcover, valid = self.landcover.coverage(
                tile.crs, tile.transform, tile.size_px, tile.size_px
            )
            sample.scores["landcover_valid_fraction"] = round(valid, 4)
        apply_filters(sample, self.filters)
        if sample.status == "kept":
            sample.captions = self.captioner.caption(sample)
            if not sample.captions:  # nothing describable: no text, no sample
                sample.reject("no_caption")
                return sample
            sample.qa = self.qa.questions(sample) if self.qa else []
            sample.jpeg = encode_jpeg(sample.rgb, self.recipe.output.jpeg_quality)
        return sample


def run_shard(
    ctx: BuildContext, shard: int, tiles: list[Tile], node: str | None = None
) -> dict[str, Any]:
    """Build one shard and return its stats (also written as ``{shard}.stats.json``).

    ``node`` names the machine for the shards table (the executor passes the Ray node's IP);
    it defaults to the host name.
    """
    start = time.time()
    pipeline = ShardPipeline(ctx, tiles)
    writer = ShardWriter(ctx.out_dir, ctx.recipe.name, shard, list(ctx.recipe.output.formats))
    try:
        for tile in tiles:
            writer.write(pipeline.process(tile))
        extra = {
            "seconds": round(time.time() - start, 3),
            "started": start,
            "worker": f"{node or socket.gethostname()}:{os.getpid()}",
            "labels_loaded": len(pipeline.labels),
        }
        return writer.finish(extra)
    except BaseException:
        writer.abort()
        raise
