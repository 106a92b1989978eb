"""The one-screen summary printed at the end of a build, read back from the manifest."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from geoweave.manifests.query import open_manifest


def summarise(out_dir: str) -> dict[str, Any]:
    """Counts for the summary: from the samples, funnel and shards tables."""
    con = open_manifest(out_dir)
    try:
        # From the samples table: corpus passes (near-duplicates) may have rejected more.
        status = dict(con.execute("SELECT status, count(*) FROM samples GROUP BY 1").fetchall())
        reasons = con.execute(
            "SELECT reject_reason, count(*) n FROM samples WHERE status <> 'kept' GROUP BY 1 ORDER BY n DESC"
        ).fetchall()
        funnel = con.execute(
            "SELECT step, rejected FROM funnel WHERE rejected > 0 ORDER BY position"
        ).fetchall()
        shards = con.execute(
            "SELECT count(*), count(*) FILTER (status = 'complete'), coalesce(sum(bytes), 0) FROM shards"
        ).fetchone()
        by_gsd = con.execute(
            "SELECT gsd_m, count(*) FILTER (status = 'kept') FROM samples GROUP BY 1 ORDER BY 1"
        ).fetchall()
        splits = con.execute(
            "SELECT split, count(*) FROM samples WHERE status = 'kept' AND split IS NOT NULL "
            "GROUP BY 1 ORDER BY array_position(['train', 'val', 'test', 'buffer'], split)"
        ).fetchall()
        reviewed = None
        has = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'reviews'")
        if (has.fetchone() or (0,))[0]:
            reviewed = con.execute(
                "SELECT count(*), count(*) FILTER (verdict = 'accept') FROM reviews"
            ).fetchone()
    finally:
        con.close()
    assert shards is not None
    by_gsd = [(g, int(n or 0)) for g, n in by_gsd]
    status = {k: int(v) for k, v in status.items()}
    return {"status": status, "reasons": reasons, "funnel": funnel, "shards": shards} | {
        "by_gsd": by_gsd,
        "splits": splits,
        "reviewed": reviewed,
    }


def print_summary(summary: dict[str, Any], out: TextIO = sys.stdout) -> None:
    s = summarise(summary["out_dir"])
    planned = sum(s["status"].values())
    n_shards, complete, nbytes = s["shards"]
    out.write(f"\nbuilt {summary['name']} in {summary['seconds']:.1f} s -> {summary['out_dir']}\n")
    out.write(f"  tiles planned   {planned}\n")
    out.write(f"  kept            {s['status'].get('kept', 0)}  (by GSD: ")
    out.write(", ".join(f"{g:g} m: {n}" for g, n in s["by_gsd"]) + ")\n")
    out.write(f"  rejected        {planned - s['status'].get('kept', 0)}\n")
    for reason, n in s["reasons"]:
        out.write(f"    {reason:28s}{n}\n")
    if s["splits"]:
        out.write("  splits          " + ", ".join(f"{n} {c}" for n, c in s["splits"]) + "\n")
    if s["reviewed"]:
        n, accepted = s["reviewed"]
        out.write(
            f"  reviewed        {n}: {accepted} accepted (table reviews, view review_stats)\n"
        )
    if s["funnel"]:
        out.write("  funnel          " + ", ".join(f"{st} -{n}" for st, n in s["funnel"]) + "\n")
    out.write(
        f"  shards          {complete}/{n_shards} complete, {summary['shards_run']} run now\n"
    )
    if complete < n_shards:
        out.write(
            f"  FAILED shards   {n_shards - complete}: see the shards table; rerun to retry\n"
        )
    out.write(f"  bytes           {nbytes:,}\n")
    out.write(f"  manifest        {summary['manifest']}\n")
    out.write(
        f'  query it:       build-dataset query {summary["out_dir"]} "SELECT * FROM samples LIMIT 5"\n'
    )
