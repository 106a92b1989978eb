"""Components that fail on purpose, for the shard-level fault tests (a recipe plugin file).

Each records its attempts in a file named by its options, so a test can count the retries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from geoweave.record import Sample
from geoweave.registry import FILTERS, IMAGERY_SOURCES
from geoweave.sources.imagery import GeoTiffSource


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts_file: Path
    shard: int = 0


@IMAGERY_SOURCES.add("crashing_geotiff_test")
class CrashingSource(GeoTiffSource):
    """A GeoTIFF source whose worker process dies while reading one shard (a lost worker)."""

    class Options(GeoTiffSource.Options):
        attempts_file: Path
        shard: int = 0
        runs_file: Path | None = None  # gets the shard number of every read

    @classmethod
    def from_options(cls, opts, name, license="see source", acquired=None):  # type: ignore[no-untyped-def, override]
        base = GeoTiffSource.Options(path=opts.path, bands=opts.bands, scale=opts.scale)
        src = super().from_options(base, name, license, acquired)
        src.crash = (opts.attempts_file, opts.shard)  # type: ignore[attr-defined]
        src.runs_file = opts.runs_file  # type: ignore[attr-defined]
        return src

    def read(self, tiles):  # type: ignore[no-untyped-def]
        attempts_file, shard = self.crash  # type: ignore[attr-defined]
        if tiles and self.runs_file is not None:  # type: ignore[attr-defined]
            with open(self.runs_file, "a") as f:  # type: ignore[attr-defined]
                f.write(f"{tiles[0].shard}\n")
        if tiles and tiles[0].shard == shard:
            with open(attempts_file, "a") as f:
                f.write("x\n")
            os._exit(1)  # the worker process is lost mid-shard
        return super().read(tiles)


@FILTERS.add("broken_setup_test")
class BrokenSetupFilter:
    """A filter whose set-up fails the same way every time: a deterministic shard fault."""

    name = "broken_setup_test"
    stage: ClassVar[Literal["image", "text"]] = "image"
    Options = _Options

    def __init__(self, opts: _Options) -> None:
        with open(opts.attempts_file, "a") as f:
            f.write("x\n")
        raise ValueError("this filter cannot be set up")

    def check(self, sample: Sample) -> str | None:
        return None
