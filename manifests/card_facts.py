"""The figures of a build's dataset card, each read from its manifest (DuckDB), none typed in.

``card_facts`` returns plain Python values (counts, tables as lists of rows, the newest run's
provenance) that ``manifests/card.py`` renders; the same manifest gives the same facts, so the
card of an unchanged build is byte for byte the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from geoweave.manifests.query import open_manifest

KEPT = "status = 'kept'"
# The published split of a kept sample: a build without splits is one "train" split, the
# Hugging Face default; "buffer" tiles (kept, in no split) are a split of their own.
SPLIT = "coalesce(split, 'train')"
SPLIT_ORDER = ("train", "val", "test", "buffer")
WORDS = "len(string_split(trim(c.text), ' '))"

QUERIES: dict[str, str] = {
    "status": "SELECT status, count(*) FROM samples GROUP BY 1 ORDER BY 2 DESC, 1",
    "reasons": f"SELECT reject_reason, count(*) FROM samples WHERE NOT ({KEPT}) "
    "GROUP BY 1 ORDER BY 2 DESC, 1",
    "splits": f"SELECT {SPLIT}, count(*) FROM samples WHERE {KEPT} GROUP BY 1",
    "sources": f"SELECT source, count(*), min(acquired), max(acquired) FROM samples "
    f"WHERE {KEPT} GROUP BY 1 ORDER BY 1",
    "gsd": f"SELECT gsd_m, count(*), sum((size_px * gsd_m) ^ 2) / 1e6 FROM samples "
    f"WHERE {KEPT} GROUP BY 1 ORDER BY 1",
    "source_gsd": f"SELECT source, gsd_m, {SPLIT}, count(*) FROM samples WHERE {KEPT} "
    "GROUP BY ALL ORDER BY ALL",
    "region": f"SELECT min(bbox.west), min(bbox.south), max(bbox.east), max(bbox.north), "
    f"count(DISTINCT crs), max(osm_snapshot) FROM samples WHERE {KEPT}",
    "licences": f"SELECT license, count(*) FROM samples WHERE {KEPT} GROUP BY 1 ORDER BY 2 DESC, 1",
    "licence_parts": f"SELECT trim(part), count(*) FROM (SELECT unnest(string_split(license, "
    f"'; ')) AS part FROM samples WHERE {KEPT}) WHERE trim(part) <> '' GROUP BY 1 ORDER BY 2 DESC, 1",
    "captions": f"SELECT c.captioner, c.style, c.prompt_version, count(*), avg({WORDS}), "
    f"min({WORDS}), max({WORDS}), count(*) FILTER (c.faithful = false) "
    f"FROM (SELECT unnest(captions) AS c FROM samples WHERE {KEPT}) GROUP BY ALL ORDER BY ALL",
    "qa": f"SELECT q.kind, count(*), count(*) FILTER (q.verified) "
    f"FROM (SELECT unnest(qa) AS q FROM samples WHERE {KEPT}) GROUP BY 1 ORDER BY 1",
    "faithfulness": f"SELECT CASE WHEN f IS NULL THEN 'unscored' WHEN f >= 1 THEN '1.0' "
    "ELSE printf('[%.2f, %.2f)', floor(f * 4) / 4, floor(f * 4) / 4 + 0.25) END, count(*) "
    f"FROM (SELECT scores['faithfulness'] AS f FROM samples WHERE {KEPT}) GROUP BY 1 ORDER BY 1",
    "faithfulness_mean": f"SELECT avg(scores['faithfulness']), "
    f"count(scores['faithfulness']) FROM samples WHERE {KEPT}",
    "funnel": "SELECT step, rejected, remaining FROM funnel ORDER BY position",
    "shards": "SELECT count(*), count(*) FILTER (status = 'complete'), coalesce(sum(bytes), 0) "
    "FROM shards",
    "runs": "SELECT run_id, name, started, finished, recipe, versions, inputs, osm_snapshot "
    "FROM runs ORDER BY started",
}
REVIEWS = {
    "reviews": "SELECT count(*), count(*) FILTER (verdict = 'accept'), "
    "count(*) FILTER (verdict = 'reject') FROM reviews",
    "review_stats": "SELECT dimension, value, reviewed, acceptance FROM review_stats "
    "ORDER BY dimension, value",
}


def card_facts(out_dir: str | Path) -> dict[str, Any]:
    """Every figure the card shows, from the manifest of the build in ``out_dir``."""
    con = open_manifest(out_dir)
    try:
        facts = {name: con.execute(sql).fetchall() for name, sql in QUERIES.items()}
        if _has_table(con, "reviews"):
            facts |= {name: con.execute(sql).fetchall() for name, sql in REVIEWS.items()}
    finally:
        con.close()
    return _shape(facts)


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]
    ).fetchone()
    return bool(found and found[0])


def _shape(raw: dict[str, Any]) -> dict[str, Any]:
    """Rows into what the card reads: counts as ints, splits in their usual order, the newest
    run's JSON columns parsed."""
    facts = dict(raw)
    facts["status"] = {str(k): int(n) for k, n in raw["status"]}
    facts["planned"] = sum(facts["status"].values())
    facts["kept"] = facts["status"].get("kept", 0)
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    facts["splits"] = sorted(
        ((str(s), int(n)) for s, n in raw["splits"]), key=lambda r: (order.get(r[0], 9), r[0])
    )
    facts["region"] = raw["region"][0]
    facts["faithfulness_mean"] = raw["faithfulness_mean"][0]
    facts["shards"] = raw["shards"][0]
    facts["reviews"] = raw["reviews"][0] if "reviews" in raw else None
    facts["review_stats"] = raw.get("review_stats") or []
    facts["runs"] = len(raw["runs"])
    facts["run"] = _run(raw["runs"][-1]) if raw["runs"] else None
    return facts


def _run(row: tuple[Any, ...]) -> dict[str, Any]:
    run_id, name, started, finished, recipe, versions, inputs, snapshot = row
    return {
        "run_id": run_id,
        "name": name,
        "started": started,
        "finished": finished,
        "recipe": json.loads(recipe) if recipe else {},
        "versions": json.loads(versions) if versions else {},
        "inputs": json.loads(inputs) if inputs else {},
        "osm_snapshot": snapshot,
    }
