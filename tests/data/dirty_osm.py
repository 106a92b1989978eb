"""Write a small real OSM PBF whose tag values are hostile: newlines, carriage returns, ANSI
escape sequences, the U+202E right-to-left override, zero-width characters, markup and an
over-long value. XML 1.0 cannot carry an ESC byte, a PBF can, so this uses osmium's own writer.

Usage: ``python tests/data/dirty_osm.py OUT.osm.pbf``
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import osmium

# West Oakland, inside the SF Bay Landsat sample.
LON0, LAT0 = -122.3030, 37.8110
HALF = 0.0016  # a ~280 m square: several 30 m pixels of a 16 px tile
WHEN = datetime(2024, 5, 1, 12, tzinfo=UTC)

DIRTY = {
    # value -> what clean_label makes of it
    "ware\nhouse\r\n": "ware house",
    "\x1b[31mred\x1b[0m barn": "red barn",
    "cafe\u202egnp.exe": "cafegnp.exe",
    "zero\u200bwidth\u00a0 space": "zerowidth space",
    "<b>bold</b> & co": "<b>bold</b> & co",
    "x" * 300: "x" * 255 + "…",
}


def write_dirty_pbf(path: Path) -> dict[str, str]:
    """One square building per hostile value, tagged ``building=VALUE``; returns value ->
    expected clean text."""
    path.unlink(missing_ok=True)
    writer = osmium.SimpleWriter(str(path))
    node_id = 1
    try:
        for i, value in enumerate(DIRTY):
            lon, lat = LON0 + (i % 3) * 3.2 * HALF, LAT0 + (i // 3) * 3.2 * HALF
            ring = [(lon - HALF, lat - HALF), (lon + HALF, lat - HALF)]
            ring += [(lon + HALF, lat + HALF), (lon - HALF, lat + HALF)]
            refs = []
            for x, y in ring:
                writer.add_node(
                    osmium.osm.mutable.Node(id=node_id, location=(x, y), version=1, timestamp=WHEN)
                )
                refs.append(node_id)
                node_id += 1
            tags = {"building": value, "name": f"\x1b]0;title\x07Name {i}\n"}
            writer.add_way(
                osmium.osm.mutable.Way(
                    id=100 + i, nodes=[*refs, refs[0]], tags=tags, version=1, timestamp=WHEN
                )
            )
    finally:
        writer.close()
    return dict(DIRTY)


if __name__ == "__main__":
    write_dirty_pbf(Path(sys.argv[1]))
