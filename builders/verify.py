"""``build-dataset verify OUT``: check every shard file against the checksum its stats file
recorded, and name each damaged shard (a rerun rebuilds exactly those)."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from geoweave.builders.writers import damage
from geoweave.errors import FatalError
from geoweave.stats import COMPLETE, ShardStats

_STATS = re.compile(r"^(?P<name>.+)-(?P<shard>\d{6,})\.stats\.json$")


@dataclass
class Verification:
    shards: int = 0
    files: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)  # shards recorded as failed
    damaged: dict[str, list[str]] = field(default_factory=dict)  # shard stem -> problems


def verify(out_dir: Path) -> Verification:
    """Check every complete shard's files (size and full checksum) in a build folder."""
    if not out_dir.is_dir() or not (out_dir / "plan.parquet").exists():
        raise FatalError(f"{out_dir} is not a geoweave build folder (no plan.parquet)")
    result = Verification()
    for path in sorted(out_dir.glob("*.stats.json")):
        match = _STATS.match(path.name)
        if not match:
            continue
        stem = path.name.removesuffix(".stats.json")
        try:
            stats = ShardStats.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            result.damaged[stem] = [f"{path.name}: unreadable ({e})"]
            continue
        result.shards += 1
        if stats.status != COMPLETE:
            result.failed.append(stem)
            continue
        for name, size in stats.files.items():
            result.files += 1
            result.bytes += size
            why = damage(out_dir / name, size, stats.checksums.get(name), None, verify=True)
            if why:
                result.damaged.setdefault(stem, []).append(f"{name}: {why}")
            elif name not in stats.checksums:
                result.damaged.setdefault(stem, []).append(
                    f"{name}: no checksum recorded (written by an older geoweave); size checked only"
                )
    return result


def report(result: Verification, seconds: float, out: TextIO | None = None) -> int:
    """Print the outcome; returns the exit code (1 when a shard is damaged)."""
    out = out or sys.stdout
    for stem, problems in sorted(result.damaged.items()):
        for p in problems:
            print(f"damaged  {stem}: {p}", file=out)
    for stem in result.failed:
        print(f"failed   {stem}: recorded as failed by its run (rerun to retry it)", file=out)
    gb = result.bytes / 1e9
    print(
        f"{result.shards} shards, {result.files} files, {gb:.2f} GB checked in {seconds:.1f} s: "
        f"{len(result.damaged)} damaged, {len(result.failed)} failed",
        file=out,
    )
    if result.damaged:
        print("rerun `build-dataset run` on this folder to rebuild the damaged shards", file=out)
    return 1 if result.damaged else 0


def verify_command(out_dir: Path) -> int:
    t = time.time()
    result = verify(out_dir)
    return report(result, time.time() - t)
