"""A filter that only takes time (a recipe plugin file): shards last long enough for the
node-loss tests to end a node or the driver while work is in flight."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from geoweave.record import Sample
from geoweave.registry import FILTERS


@FILTERS.add("slow_test")
class SlowFilter:
    """Sleeps ``seconds`` when a shard sets it up (once per shard) and keeps every sample."""

    name = "slow_test"
    stage: ClassVar[Literal["image", "text"]] = "image"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        seconds: float = 1.0
        starts_file: Path | None = None  # gets the node IP of every shard set-up

    def __init__(self, opts: Options) -> None:
        if opts.starts_file is not None:
            import ray

            ip = ray.util.get_node_ip_address() if ray.is_initialized() else "local"
            with open(opts.starts_file, "a") as f:
                f.write(f"{ip}\n")
        time.sleep(opts.seconds)

    def check(self, sample: Sample) -> str | None:
        return None
