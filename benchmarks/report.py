"""The benchmark's table: every figure with its target and PASS / FAIL, as markdown.

Targets (from the issue): inside shard tasks >= 0.6x the floor at 128 and 256 px; wall >= 0.5x
the floor on a build whose floor takes >= 10 s; 2 workers >= 1.8x one; at most 10% of the
wall time outside shard work on a build of a few thousand tiles; join >= 50x a naive sjoin;
OSM index <= 5x a bare osmium pass.
"""

from __future__ import annotations

from typing import Any

from benchmarks.builds import TIMING_KEYS

MIN_INSIDE, MIN_WALL, MIN_WALL_FLOOR_S, MIN_SPEEDUP = 0.6, 0.5, 10.0, 1.8
MAX_OUTSIDE_SHARE, MIN_OUTSIDE_TILES = 0.10, 2000
MIN_JOIN_SPEEDUP, MAX_OSM_RATIO = 50.0, 5.0
TIMING_ROWS = (
    "cli_start_s",
    "prepare_s",
    "ray_start_s",
    "shards_s",
    "ray_stop_s",
    "passes_s",
    "manifest_s",
    "tail_s",
)
Row = tuple[str, str, str, str]


def check(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def size_rows(r: dict[str, Any]) -> list[Row]:
    """The rows of one tile size (128 or 256 px)."""
    s, fl, one, two = f"{r['size_px']} px", r["floor"], r["one"], r["two"]
    after = r.get("floor_after", fl)
    wall_applies = r["floor_s"] >= MIN_WALL_FLOOR_S
    share_applies = one["tiles"] >= MIN_OUTSIDE_TILES
    rows: list[Row] = [
        (f"{s}: tiles (planned / kept, 1 worker)", f"{r['planned_tiles']} / {one['kept']}", "all kept", check(r["every_tile_kept"])),
        (f"{s}: floor, tiles/s ({r['floor_s']:.1f} s; before / after the builds)",
         f"{r['floor_tiles_per_s']:.1f} ({fl['tiles_per_s']:.0f} / {after['tiles_per_s']:.0f})", "", "info"),
        (f"{s}: wall, 1 worker, tiles/s", f"{one['tiles_per_s']:.1f}", "", "info"),
        (f"{s}: inside shard tasks, tiles/s", f"{one['inside_tiles_per_s']:.1f}", "", "info"),
        (f"{s}: inside tasks / floor", f"{r['inside_vs_floor']:.2f}", f">= {MIN_INSIDE}", check(r["inside_vs_floor"] >= MIN_INSIDE)),
        (f"{s}: inside tasks, no early worker, tiles/s (/ floor)",
         f"{r['alone']['inside_tiles_per_s']:.1f} ({r['inside_alone_vs_floor']:.2f})", f">= {MIN_INSIDE}",
         check(r["inside_alone_vs_floor"] >= MIN_INSIDE)),
        (f"{s}: wall, 1 worker, no early worker, tiles/s", f"{r['alone']['tiles_per_s']:.1f}", "", "info"),
        (f"{s}: wall / floor", f"{r['wall_vs_floor']:.2f}", f">= {MIN_WALL} (floor >= {MIN_WALL_FLOOR_S:g} s)",
         check(r["wall_vs_floor"] >= MIN_WALL) if wall_applies else "n/a (floor < 10 s)"),
        (f"{s}: outside shard work, s (share of wall)", f"{one['outside_s']:.1f} ({one['outside_share']:.0%})",
         f"<= {MAX_OUTSIDE_SHARE:.0%}", check(one["outside_share"] <= MAX_OUTSIDE_SHARE) if share_applies else "n/a (< 2000 tiles)"),
        (f"{s}: wall, 2 workers, tiles/s", f"{two['tiles_per_s']:.1f}", "", "info"),
        (f"{s}: 2 workers / 1 worker", f"{r['speedup_2w']:.2f}x", f">= {MIN_SPEEDUP}x", check(r["speedup_2w"] >= MIN_SPEEDUP)),
        (f"{s}:   the machine's ceiling: floor in 2 processes / floor", f"{r['speedup_2_floors']:.2f}x" if "speedup_2_floors" in r else "n/a", "", "info"),
    ]  # fmt: skip
    return rows + timing_rows(s, one["timings"])


def timing_rows(label: str, t: dict[str, Any]) -> list[Row]:
    """Ray start, plan, manifest and per-task overhead of the 1-worker build."""

    def source(k: str) -> str:
        return t["source"] if k in TIMING_KEYS else "wall minus the record's span"

    rows = [
        (f"{label}:   {k} ({source(k)})", f"{t[k]:.2f}", "", "info") for k in TIMING_ROWS if k in t
    ]
    bound = " (upper bound)" if t["per_task_overhead_is_bound"] else ""
    rows.append(
        (f"{label}:   per-task overhead, ms{bound}", f"{t['per_task_overhead_ms']:.1f}", "", "info")
    )
    return rows


def missing(name: str, r: dict[str, Any]) -> list[Row] | None:
    """One row saying why a figure is absent, or None when it is there."""
    why = r.get("unavailable") or r.get("failed")
    if why is None:
        return None
    state = "figure unavailable" if "unavailable" in r else "figure failed"
    return [(name, f"{state}: {why}", "", "n/a")]


def small_tile_rows(e2e: dict[str, Any], join: dict[str, Any], osm: dict[str, Any]) -> list[Row]:
    """8 px per-tile overhead, join and OSM index."""
    rows = missing("8 px per-tile overhead", e2e) or [
        (f"8 px (sf-bay, {e2e['tiles']} tiles): wall, 1 worker, tiles/s", f"{e2e['tiles_per_s']:.1f}", "", "info"),
        ("8 px: inside shard tasks, ms/tile", f"{e2e['ms_per_tile_inside']:.3f}", "", "info"),
        ("8 px: outside shard work, s (share of wall)", f"{e2e['outside_s']:.1f} ({e2e['outside_share']:.0%})", "", "info"),
    ]  # fmt: skip
    rows += missing("join", join) or [
        ("join, ms/tile (ShardLabels + for_tiles)", f"{join['ms_per_tile']:.3f}", "", "info"),
        ("join, ms/tile (naive sjoin, whole OSM)", f"{join['naive_ms_per_tile']:.3f}", "", "info"),
        ("join speed-up", f"{join['speedup']:.1f}x", f">= {MIN_JOIN_SPEEDUP:g}x", check(join["speedup"] >= MIN_JOIN_SPEEDUP)),
    ]  # fmt: skip
    rows += missing("OSM index", osm) or [
        ("OSM index build / bare osmium pass, s", f"{osm['index_s']:.3f} / {osm['bare_osmium_s']:.3f}", "", "info"),
        ("OSM index / osmium pass", f"{osm['ratio']:.2f}x", f"<= {MAX_OSM_RATIO:g}x", check(osm["ratio"] <= MAX_OSM_RATIO)),
    ]  # fmt: skip
    return rows


def markdown(rows: list[Row]) -> str:
    header: Row = ("figure", "measured", "target", "result")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in lines
    )
