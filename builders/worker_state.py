"""What a worker process keeps between the shards it runs: its open sources, and a frozen heap.

Sources (imagery, label indexes and files, land cover) are opened once per worker process and
reused by every shard it runs; the caches are keyed by the recipe sections' JSON (pydantic
models with lists do not hash). After its first shard a worker freezes what it holds out of
the cyclic garbage collector's sight (``settle_process``), and its C heap keeps the memory a
shard frees for the next one (``keep_freed_memory``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import NamedTuple

from geoweave.builders.recipe import ImageryConfig, LabelsConfig, LandCoverConfig, Recipe
from geoweave.protocols import ClassRaster, ImagerySource
from geoweave.registry import IMAGERY_SOURCES, LABEL_SOURCES, load_plugins
from geoweave.sources.labels import LabelSource
from geoweave.sources.rasters import streaming_block_cache


def open_imagery(cfg: ImageryConfig) -> ImagerySource:
    return _imagery(cfg.model_dump_json())


@cache
def _imagery(cfg_json: str) -> ImagerySource:
    import geoweave.builders.components  # noqa: F401  (registers the built-ins)

    cfg = ImageryConfig.model_validate_json(cfg_json)
    source: ImagerySource = IMAGERY_SOURCES.build(
        cfg.type, cfg.options, cfg.name, cfg.license, cfg.acquired
    )
    return source


def open_label_sources(index_dirs: tuple[str, ...], labels: LabelsConfig) -> list[LabelSource]:
    return _label_sources(index_dirs, labels.model_dump_json())


@cache
def _label_sources(index_dirs: tuple[str, ...], labels_json: str) -> list[LabelSource]:
    labels = LabelsConfig.model_validate_json(labels_json)
    out: list[LabelSource] = []
    if index_dirs:
        from geoweave.sources.osm import OsmIndex

        out += [OsmIndex(Path(d)) for d in index_dirs]
    if labels.vector:
        from geoweave.sources.vector import VectorLabelSource

        out += [VectorLabelSource(v.path, v.name, v.tag_columns) for v in labels.vector]
    if labels.sources:
        import geoweave.builders.components  # noqa: F401  (registers the built-ins)

        out += [LABEL_SOURCES.build(c.type, c.options, c.name) for c in labels.sources]
    return out


def label_licenses(labels: LabelsConfig, sources: Sequence[LabelSource]) -> dict[str, str]:
    """Source name -> licence, for the label sources whose recipe entry gives one (the sources
    are in recipe order after the OSM indexes: vector files, then ``labels.sources``)."""
    configs = [*labels.vector, *labels.sources]
    extra = sources[len(sources) - len(configs) :] if configs else []
    return {s.name: c.license for c, s in zip(configs, extra, strict=True) if c.license}


def open_landcover(cfg: LandCoverConfig) -> ClassRaster:
    return _landcover(cfg.model_dump_json())


def open_landcover_by_date(cfg: LandCoverConfig) -> dict[str, ClassRaster]:
    """The rasters of ``cfg.by_date``, by date: each opened as the main one (same legend)."""
    return {
        day: open_landcover(cfg.model_copy(update={"path": path, "by_date": {}}))
        for day, path in cfg.by_date.items()
    }


@cache
def _landcover(cfg_json: str) -> ClassRaster:
    from geoweave.sources.landcover import LandCoverSource

    cfg = LandCoverConfig.model_validate_json(cfg_json)
    return LandCoverSource(cfg.path, cfg.legend, cfg.name)


_SETTLED_PID: int | None = None


def settle_process() -> None:
    """Once per worker process, after its first shard: collect the young objects, then freeze
    what the process holds (modules, open sources, caches) out of the cyclic garbage
    collector's sight. A shard makes many small objects (captions, label dicts, rows), so full
    collections run often, and each rescanned every long-lived object: about 20 us a 128 px
    tile, measured. Only the young generations are collected first: a full collection took
    50-110 ms (a Ray worker holds more) and, after the young ones, found nothing more."""
    global _SETTLED_PID
    if os.getpid() != _SETTLED_PID:  # a forked early worker settles on its own
        gc.collect(1)
        gc.freeze()
        _SETTLED_PID = os.getpid()


# glibc's mallopt parameters, and the values a worker sets: freed memory stays in the heap up
# to 256 MB above its top (M_TRIM_THRESHOLD), and arrays under 4 MB come from the heap, not
# from a fresh mmap each (M_MMAP_THRESHOLD); larger ones (a shard's blocks) are still mapped,
# where numpy asks for huge pages (from 4 MB): served from the heap they made the joins slower.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES, HEAP_BLOCK_MAX = 256 << 20, 4 << 20
_HEAP_PID: int | None = None


def keep_freed_memory() -> None:
    """Once per worker process (glibc only): keep the memory a shard frees for the next shard.

    A shard allocates about 50 MB of arrays per 256 tiles of 128 px (tile copies, planes, grey
    sums, JPEG buffers) and frees them at its end. By default glibc hands the freed top of its
    heap, and every block above its dynamic mmap threshold, back to the kernel, so the next
    shard's arrays fault their pages in again: about half the time of a tile copy on the
    benchmark's VM. Kept, the next shard reuses faulted pages: the read stage 30% faster, a
    128 px shard about 8% (in-process A/B on the benchmark mosaic). A worker's RSS stays at
    its largest shard's.
    Left alone when the environment tunes malloc itself (``MALLOC_*_``, ``GLIBC_TUNABLES``).
    """
    global _HEAP_PID
    if os.getpid() == _HEAP_PID or not sys.platform.startswith("linux"):
        return
    _HEAP_PID = os.getpid()
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to tune
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_MAX)


class WorkerSources(NamedTuple):
    """What a shard reads from, as this process keeps it open: each imagery source with its
    recipe entry by name, the label sources, the land cover and its rasters by date."""

    imagery: dict[str, tuple[ImageryConfig, ImagerySource]]
    labels: list[LabelSource]
    landcover: ClassRaster | None
    landcover_by_date: dict[str, ClassRaster]


def open_sources(recipe: Recipe, index_dirs: tuple[str, ...]) -> WorkerSources:
    """The recipe's plugins and the built-in components loaded, and every source open (once
    per process: the ``open_*`` functions cache)."""
    streaming_block_cache()  # a worker on another node: before its first block read
    keep_freed_memory()
    import geoweave.builders.components  # noqa: F401  (declares the built-ins)

    load_plugins(recipe.plugins)  # a worker process starts without the recipe's plugins

    lc = recipe.labels.landcover
    return WorkerSources(
        {c.name: (c, open_imagery(c)) for c in recipe.imagery},
        open_label_sources(index_dirs, recipe.labels),
        open_landcover(lc) if lc else None,
        open_landcover_by_date(lc) if lc else {},
    )


def warm_up(recipe: Recipe, index_dirs: tuple[str, ...]) -> None:
    """What a worker's first shard would otherwise pay, done before it: ``open_sources`` and
    pyarrow's first conversion of Python lists (it imports pandas, 0.25-0.3 s). The first Ray
    task of a local build is empty and runs this while the early workers still run shards. A
    failure is left for the shards to meet and report."""
    from geoweave.record import SIDECAR_SCHEMA, to_table

    with contextlib.suppress(Exception):
        open_sources(recipe, index_dirs)
        to_table([], SIDECAR_SCHEMA)
