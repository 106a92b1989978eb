"""One shard, start to finish, as a staged pipeline over the shard's batch of tiles:

read pixels -> join labels and land cover -> image filters -> captions -> questions -> text
filters -> encode -> write.

Each stage sees the whole batch (a captioner can send its requests concurrently, an imagery
source can read and warp the shard's patch once). An exception in one tile's stage rejects
that tile with reason ``error`` and the exception recorded; the shard goes on. Plain functions
with no Ray in them; the executor runs ``run_shard`` as a Ray task, tests and benchmarks call it
directly.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from geoweave.builders.encode import encode_geotiff, encode_jpeg
from geoweave.builders.join import ShardLabels
from geoweave.builders.plan_file import Plan
from geoweave.builders.recipe import Recipe
from geoweave.builders.worker_state import label_licenses, open_sources, settle_process
from geoweave.builders.writers import ShardWriter
from geoweave.errors import ShardError
from geoweave.protocols import Filter, TileDescription
from geoweave.qa.image_hash import hashes_of_grey, hashes_of_greys
from geoweave.qa.pixels import grey_sum_of
from geoweave.record import Sample, is_upsampled
from geoweave.registry import CAPTIONERS, FILTERS, QUESTION_GENERATORS
from geoweave.sources.landcover import nearest_date
from geoweave.stats import ShardStats
from geoweave.tile import Tile


@dataclass(frozen=True)
class BuildContext:
    """What every shard task needs; small and picklable (sources reopen in each worker)."""

    recipe: Recipe
    out_dir: Path
    osm_index_dirs: tuple[str, ...] = ()
    osm_snapshot: str | None = None  # newest timestamp of the OSM data, when it has one


def _each(stage: str, samples: Sequence[Sample], work: Callable[[Sample], None]) -> None:
    """Run one tile's step of a stage; an exception rejects only that tile."""
    for s in samples:
        if s.kept:
            try:
                work(s)
            except Exception as e:
                s.fail(stage, e)


def _apply(stage: str, samples: Sequence[Sample], results: Sequence[Any], put: Callable) -> None:
    """Hand each live sample its result of a batched call; an Exception result fails it."""
    live = [s for s in samples if s.kept]
    if len(results) != len(live):
        raise RuntimeError(f"{stage} returned {len(results)} results for {len(live)} tiles")
    for s, r in zip(live, results, strict=True):
        if isinstance(r, Exception):
            s.fail(stage, r)
        else:
            put(s, r)


def apply_filters(samples: Sequence[Sample], filters: Sequence[Filter]) -> None:
    """Every filter scores every sample live at the start of the stage (so all scores are
    recorded); the first reason rejects the sample, by that filter."""
    live = [s for s in samples if s.kept]
    for f in filters:
        for s in live:
            try:
                reason = f.check(s)
            except Exception as e:
                if s.kept:
                    s.fail(f.name, e)
                continue
            if reason and s.kept:
                s.reject(reason, by=f.name)


class ShardPipeline:
    """The stages of one shard, built once per shard from the recipe."""

    def __init__(self, ctx: BuildContext, tiles: Sequence[Tile]) -> None:
        r = ctx.recipe
        self.recipe = r
        self.osm_snapshot = ctx.osm_snapshot
        sources = open_sources(r, ctx.osm_index_dirs)
        self.imagery, self.labels_sources = sources.imagery, sources.labels
        self.labels = ShardLabels(self.labels_sources, tiles)
        self.landcover, self.landcover_by_date = sources.landcover, sources.landcover_by_date
        self.captioner = CAPTIONERS.build(r.captions.name, r.captions.options, r.seed)
        q = r.questions
        self.questions = QUESTION_GENERATORS.build(q.name, q.options, r.seed) if q.enabled else None
        filters: list[Filter] = [FILTERS.build(n, o) for n, o in r.filters.items()]
        self.image_filters = [f for f in filters if f.stage == "image"]
        self.text_filters = [f for f in filters if f.stage == "text"]
        self.seconds: dict[str, float] = {}
        self.label_licenses = label_licenses(r.labels, self.labels_sources)

    def stages(self) -> list[str]:
        """Stage and filter names in the order they run: the order of the funnel."""
        names = ["plan", "read", "join", *(f.name for f in self.image_filters)]
        names.append(self.captioner.name)
        if self.questions is not None:
            names.append(self.questions.name)
        return [*names, *(f.name for f in self.text_filters), "encode"]

    def run(self, tiles: Sequence[Tile]) -> list[Sample]:
        """All stages over the batch; ``self.seconds`` gets each stage's time (shard stats)."""
        samples = [self._new(t) for t in tiles]
        stages: list[tuple[str, Callable[[], None]]] = [
            ("read", lambda: self.read(samples)),
            ("join", lambda: self.join(samples)),
            ("image_filters", lambda: apply_filters(samples, self.image_filters)),
            ("text", lambda: self.text(samples)),
            ("text_filters", lambda: apply_filters(samples, self.text_filters)),
            ("encode", lambda: self.encode(samples)),
        ]
        for name, stage in stages:
            t = time.perf_counter()
            stage()
            self.seconds[name] = round(time.perf_counter() - t, 4)
        return samples

    def _new(self, tile: Tile) -> Sample:
        cfg = self.imagery[tile.source][0]
        s = Sample(tile, cfg.license, self.label_licenses, acquired=cfg.acquired)
        s.osm_snapshot = self.osm_snapshot
        s.item_id = tile.item
        s.native_gsd_m = round(self.imagery[tile.source][1].res_m, 4)
        s.upsampled = is_upsampled(tile.gsd_m, s.native_gsd_m)
        if tile.plan_reject:
            s.reject(tile.plan_reject, by="plan")
        return s

    def read(self, samples: Sequence[Sample]) -> None:
        """One ``read`` call per imagery source and GSD: the source reads its patch once."""
        live = sorted((s for s in samples if s.kept), key=lambda s: (s.tile.source, s.tile.gsd_m))
        for (source, _gsd), group in groupby(live, key=lambda s: (s.tile.source, s.tile.gsd_m)):
            batch = list(group)
            try:
                images = self.imagery[source][1].read([s.tile for s in batch])
            except Exception as e:
                images = [e] * len(batch)
            _apply("read", batch, images, self._put_image)

    def _put_image(self, s: Sample, image: Any) -> None:
        s.data, s.valid, s.rgb = image.data, image.valid, image.rgb
        s.nodata_fraction = image.nodata_fraction
        s.item_id = image.item_id or s.item_id
        s.acquired = image.acquired or s.acquired
        s.collection, s.asset_href = image.collection, image.href

    def join(self, samples: Sequence[Sample]) -> None:
        labels = self.recipe.labels
        live = [s for s in samples if s.kept]
        try:  # the batch in one query
            found = self.labels.for_tiles(
                [s.tile for s in live], labels.min_pixels, labels.keep_points
            )
        except Exception:  # tile by tile: an error rejects only its own tile
            _each("join", live, self._join_one)
        else:
            _apply("join", live, found, _put_labels)
        if self.landcover is None:
            return
        groups: dict[str | None, list[Sample]] = {}
        for s in samples:  # by the land cover of the date nearest each sample's acquisition
            if s.kept:
                groups.setdefault(
                    nearest_date(s.acquired, list(self.landcover_by_date)), []
                ).append(s)
        for day, live in groups.items():
            source = self.landcover if day is None else self.landcover_by_date[day]
            try:
                results = source.fractions([s.tile for s in live])
            except Exception as e:
                results = [e] * len(live)
            _apply("join", live, results, lambda s, r, day=day: _put_landcover(s, r, day))

    def _join_one(self, s: Sample) -> None:
        labels = self.recipe.labels
        s.osm = self.labels.for_tile(s.tile, labels.min_pixels, labels.keep_points)

    def text(self, samples: Sequence[Sample]) -> None:
        """Captions, then questions, each one batched call over the live samples."""
        live = [s for s in samples if s.kept]
        batch = [TileDescription.of(s) for s in live]
        name = self.captioner.name
        captions = self._call(self.captioner.caption, batch)
        _apply(name, live, captions, lambda s, c: _put_captions(s, c, name))
        if self.questions is None:
            return
        live = [s for s in live if s.kept]
        batch = [TileDescription.of(s) for s in live]
        _apply(self.questions.name, live, self._call(self.questions.questions, batch), _put_qa)

    @staticmethod
    def _call(fn: Callable[[Any], list[Any]], batch: list[Any]) -> list[Any]:
        """A batched text call; its exception fails each tile, except a ``ShardError`` (a
        server that is down), which fails the shard so that it is retried later."""
        try:
            return fn(batch)
        except ShardError:
            raise
        except Exception as e:
            return [e] * len(batch)

    def encode(self, samples: Sequence[Sample]) -> None:
        """The perceptual hashes of the live tiles in one batch (for the near-duplicate
        pass, from the grey the image filters computed), then each tile's JPEG."""
        live = [s for s in samples if s.kept]
        try:
            hashes = hashes_of_greys([grey_sum_of(s) for s in live])
        except Exception:  # hashed tile by tile in ``_encode``: an error rejects only its tile
            pass
        else:
            for s, (phash, dhash) in zip(live, hashes, strict=True):
                s.phash, s.dhash = phash, dhash
        _each("encode", live, self._encode)

    def _encode(self, s: Sample) -> None:
        cfg, _ = self.imagery[s.tile.source]
        s.jpeg = encode_jpeg(s.rgb, self.recipe.output.jpeg_quality)
        if s.phash is None:
            s.phash, s.dhash = hashes_of_grey(grey_sum_of(s))  # of the preview
        if cfg.keep_bands:
            s.bands_tif = encode_geotiff(s.data, s.tile)
        s.drop_pixels()


def _put_landcover(s: Sample, result: tuple[dict[str, float], float], day: str | None) -> None:
    s.landcover, valid = result
    s.landcover_date = day
    s.scores["landcover_valid_fraction"] = round(valid, 4)


def _put_captions(s: Sample, captions: list[Any], captioner: str) -> None:
    if not captions:  # nothing describable: no text, no sample
        s.reject("no_caption", by=captioner)
    s.captions = captions


def _put_labels(s: Sample, elements: list[Any]) -> None:
    s.osm = elements


def _put_qa(s: Sample, pairs: list[Any]) -> None:
    s.qa = pairs


def run_shard(
    ctx: BuildContext,
    shard: int,
    tiles: list[Tile],
    node: str | None = None,
    started: float | None = None,
) -> ShardStats:
    """Build one shard and return its stats (also written as ``{shard}.stats.json``).

    ``node`` names the machine for the shards table (the executor passes the Ray node's IP);
    it defaults to the host name. ``started``: the ``time.time()`` at which the caller began
    the shard (``run_planned_shard``: before reading its tiles from the plan); else now.
    """
    start = time.time() if started is None else started
    pipeline = ShardPipeline(ctx, tiles)
    writer = ShardWriter(ctx.out_dir, ctx.recipe.name, shard, list(ctx.recipe.output.formats))
    try:
        samples = pipeline.run(tiles)
        t = time.perf_counter()
        for sample in samples:
            writer.write(sample)
        pipeline.seconds["write"] = round(time.perf_counter() - t, 4)
        del samples  # freed in the shard's own time
        extra = {
            "stage_seconds": pipeline.seconds,
            "started": start,
            "worker": f"{node or socket.gethostname()}:{os.getpid()}",
            "labels_loaded": len(pipeline.labels),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        return writer.finish(pipeline.stages(), extra, started=start)
    except BaseException:
        writer.abort()
        raise


def run_planned_shard(ctx: BuildContext, plan: Plan, shard: int, node: str) -> ShardStats:
    """``run_shard`` of a shard of ``plan`` in a worker (a Ray task's or an early worker's):
    its seconds start before its tiles are read from the plan (0.6 ms for 256); the process
    settles after its first shard (``settle_process``)."""
    started = time.time()
    stats = run_shard(ctx, shard, plan.shard_tiles(shard), node, started)
    settle_process()
    return stats
