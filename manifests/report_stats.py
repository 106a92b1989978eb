"""The report's histograms, binned in DuckDB over the kept samples (caption length, labels
per tile, and every score the filters wrote), so only the bin counts reach Python."""

from __future__ import annotations

import math
from dataclasses import dataclass

import duckdb
import pyarrow as pa

BINS = 20

# (title, x-axis unit, SQL yielding one column ``v`` per value, over the kept samples)
SERIES = (
    ("caption length", "words per caption",
     "SELECT len(string_split(trim(t), ' '))::DOUBLE v FROM (SELECT "
     "unnest(list_transform(captions, c -> c.text)) t FROM samples WHERE status = 'kept')"),
    ("labels per tile", "visible label elements",
     "SELECT len(osm)::DOUBLE v FROM samples WHERE status = 'kept'"),
    ("QA pairs per tile", "pairs", "SELECT len(qa)::DOUBLE v FROM samples WHERE status = 'kept'"),
)  # fmt: skip
SCORES = (
    "SELECT k, v FROM (SELECT unnest(map_keys(scores)) k, unnest(map_values(scores)) v "
    "FROM samples WHERE status = 'kept')"
)


@dataclass
class Histogram:
    """Counts of values in ``len(counts)`` bins between ``edges``; ``integer`` bins hold one
    whole number each (a bin's label is that number)."""

    title: str
    unit: str
    edges: list[float]
    counts: list[int]
    integer: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts)


def histograms(con: duckdb.DuckDBPyConnection) -> list[Histogram]:
    """The fixed series, then one histogram per score key (``score: NAME``)."""
    series = [(f"{i:02d} {title}", unit, sql) for i, (title, unit, sql) in enumerate(SERIES)]
    scores = SCORES.replace("SELECT k, v", f"SELECT '{len(SERIES):02d} score: ' || k g, v")
    parts = [f"SELECT {g!r} g, v FROM ({sql})" for g, _unit, sql in series] + [scores]
    units = {g: unit for g, unit, _sql in series}
    return [
        Histogram(g[3:], units.get(g, "score"), edges, counts, integer)
        for g, (edges, counts, integer) in binned(con, " UNION ALL ".join(parts)).items()
    ]


FINITE = "v IS NOT NULL AND isfinite(v)"
Bins = tuple[list[float], list[int], bool]  # edges, counts, whether one whole number per bin


def binned(con: duckdb.DuckDBPyConnection, values: str) -> dict[str, Bins]:
    """The bins of ``values`` (SQL with columns ``g``, ``v``), one set per ``g`` in the order
    of ``g``, in two queries: whole numbers spanning at most ``BINS`` get one bin each,
    anything else ``BINS`` equal bins (one bin when every value is equal). NaN and infinite
    values are left out."""
    # Read once (the captions' words take most of the time), binned twice; the finite values
    # are picked there: that filter over the union took as long as the union (0.1 s, 36k tiles).
    con.execute(f"CREATE OR REPLACE TEMP TABLE histogram_values AS SELECT g, v FROM ({values})")
    try:
        return _bin(con)
    finally:
        con.execute("DROP TABLE histogram_values")


def _bin(con: duckdb.DuckDBPyConnection) -> dict[str, Bins]:
    ranges = con.execute(
        f"SELECT g, min(v), max(v), bool_and(v = floor(v)) FROM histogram_values WHERE {FINITE} "
        "GROUP BY g ORDER BY g"
    ).fetchall()
    if not ranges:
        return {}
    edges = {g: _edges(float(lo), float(hi), bool(whole)) for g, lo, hi, whole in ranges}
    bins = pa.table({
        "g": list(edges),
        "lo": [e[0] for e, _ in edges.values()],
        "width": [e[1] - e[0] for e, _ in edges.values()],
        "top": [len(e) - 2 for e, _ in edges.values()],
    })  # fmt: skip
    con.register("histogram_bins", bins)
    try:
        counts = con.execute(
            "SELECT g, least(floor((v - lo) / width)::BIGINT, top) b, count(*) "
            f"FROM histogram_values JOIN histogram_bins USING (g) WHERE {FINITE} GROUP BY ALL"
        ).fetchall()
    finally:
        con.unregister("histogram_bins")
    found = {(g, b): int(n) for g, b, n in counts}
    return {
        g: (e, [found.get((g, i), 0) for i in range(len(e) - 1)], integer)
        for g, (e, integer) in edges.items()
    }


def _edges(lo: float, hi: float, whole: bool) -> tuple[list[float], bool]:
    if whole and hi - lo + 1 <= BINS:
        return [lo - 0.5 + i for i in range(int(hi - lo) + 2)], True
    if hi == lo:
        return [lo - 0.5, lo + 0.5], False
    width = (hi - lo) / BINS
    edges = [lo + i * width for i in range(BINS)] + [hi]
    return [e if math.isfinite(e) else hi for e in edges], False
