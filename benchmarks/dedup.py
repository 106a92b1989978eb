"""The near-duplicate pass on synthetic hashes: N random 64-bit pHash/dHash values plus planted
near-duplicates (a copy of a random one with up to 7 pHash bits and up to 10 dHash bits
flipped). Reports the pass's time, the pairs it verified per second and an all-pairs
comparison would need, and the recall of the planted pairs.

Usage: ``.venv/bin/python benchmarks/dedup.py [N]`` (default 100,000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.manifests.dedup import NearDuplicatesPass
from geoweave.protocols import PassInput


def _flip(rng: np.random.Generator, values: np.ndarray, most: int) -> np.ndarray:
    out = values.copy()
    for i in range(len(out)):
        for bit in rng.choice(64, size=int(rng.integers(0, most + 1)), replace=False).tolist():
            out[i] ^= np.int64(1 << bit) if bit < 63 else np.int64(-(2**63))
    return out


def hashes(n: int, planted: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ph = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    dh = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)
    src = rng.choice(n, size=planted, replace=False)
    ph = np.concatenate([ph, _flip(rng, ph[src], 7)])
    dh = np.concatenate([dh, _flip(rng, dh[src], 10)])
    keys = [f"k{i:07d}" for i in range(n + planted)]
    twin = [f"k{int(s):07d}" for s in src]
    return pa.table({"key": keys, "status": ["kept"] * len(keys), "phash": ph, "dhash": dh,
                     "osm": pa.array([[]] * len(keys), pa.list_(pa.string())),
                     "twin": [None] * n + twin})  # fmt: skip


def main(n: int) -> None:
    planted = n // 10
    table = hashes(n, planted)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b-000000.samples.parquet"
        pq.write_table(table, path)
        t = time.perf_counter()
        out = NearDuplicatesPass().run(PassInput(Path(tmp), "b", (str(path),)))
        seconds = time.perf_counter() - t
    marked = {r["key"]: r["duplicate_of"] for r in out.to_pylist()}
    twins = table.slice(n).to_pylist()
    found = sum(
        marked.get(r["key"]) == r["twin"] or marked.get(r["twin"]) == r["key"] for r in twins
    )
    total = len(table)
    print(f"{total:,} hashes ({planted:,} planted near-duplicates), 2 CPUs")
    print("| figure | value |")
    print("|---|---|")
    print(f"| pass time | {seconds:.2f} s |")
    print(f"| all-pairs equivalent | {total * (total - 1) / 2 / seconds:,.0f} pairs/s |")
    print(f"| planted pairs found | {found:,} of {planted:,} ({found / planted:.3f}) |")
    print(f"| samples marked | {len(marked):,} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
