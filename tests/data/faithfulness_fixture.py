"""Hand-labelled captions for measuring the faithfulness scorer itself (qa/faithfulness.py).

Eight tiles described by their labels (OSM-style tags and land-cover fractions), and captions of
them, each with the mentions a careful human reader marks as unsupported by those labels. Some
captions are right, some have known errors of the kinds a small captioning model makes: a wrong
road class, an object that is not there, a land cover that is not there, a more specific kind
than the labels say. All are hand-written (none comes from a model yet). The expected mentions
are written as the scorer's vocabulary phrases, singular.
"""

from __future__ import annotations

from typing import Any

TILES: dict[str, dict[str, Any]] = {
    "suburb": {
        "tags": [("highway", "residential"), ("building", "house"), ("building", "house"),
                 ("amenity", "parking")],
        "landcover": {"Built-up": 0.7, "Tree cover": 0.2, "Grassland": 0.1},
    },
    "industry": {
        "tags": [("highway", "primary"), ("railway", "rail"), ("landuse", "industrial")],
        "landcover": {"Built-up": 0.8, "Bare / sparse vegetation": 0.2},
    },
    "park": {
        "tags": [("natural", "water"), ("leisure", "park"), ("highway", "footway")],
        "landcover": {"Tree cover": 0.4, "Grassland": 0.35, "Permanent water bodies": 0.25},
    },
    "farm": {
        "tags": [("landuse", "farmland"), ("waterway", "stream")],
        "landcover": {"Cropland": 0.85, "Tree cover": 0.15},
    },
    "downtown": {
        "tags": [("building", "yes")] * 5 + [("highway", "service")],
        "landcover": {"Built-up": 0.95},
    },
    "woods": {"tags": [], "landcover": {"Tree cover": 0.62, "Shrubland": 0.2, "Grassland": 0.18}},
    "airport": {
        "tags": [("aeroway", "runway"), ("aeroway", "apron"), ("aeroway", "taxiway")],
        "landcover": {"Bare / sparse vegetation": 0.5, "Built-up": 0.3, "Grassland": 0.2},
    },
    "river": {
        "tags": [("waterway", "river"), ("man_made", "bridge"), ("highway", "secondary")],
        "landcover": {"Permanent water bodies": 0.3, "Tree cover": 0.4, "Cropland": 0.3},
    },
}  # fmt: skip

# (tile, caption, the unsupported mentions)
CAPTIONS: list[tuple[str, str, list[str]]] = [
    ("suburb", "A residential road with two houses and a parking lot.", []),
    ("suburb", "Houses line a residential road next to a parking lot.", []),
    ("suburb", "A satellite view of buildings along a street and a car park.", []),
    ("suburb", "A primary road passes two houses and a parking lot.", ["primary road"]),
    (
        "suburb",
        "A residential road, two houses, a swimming pool and a parking lot.",
        ["swimming pool"],
    ),
    ("suburb", "Houses among trees beside a residential road.", []),
    ("suburb", "A parking lot next to a school and a residential road.", ["school"]),
    ("suburb", "Two houses and a garage by a residential road.", ["garage"]),
    ("suburb", "Houses surrounded by farmland.", ["farmland"]),
    ("suburb", "A river flows past a parking lot and some houses.", ["river"]),
    ("industry", "An industrial area crossed by a primary road and a railway line.", []),
    ("industry", "A railway runs beside a primary road through an industrial area.", []),
    ("industry", "A motorway and a railway line cross an industrial area.", ["motorway"]),
    (
        "industry",
        "An industrial area with a secondary road and a railway line.",
        ["secondary road"],
    ),
    ("industry", "A primary road, a railway line and a large parking lot.", ["parking lot"]),
    ("industry", "Warehouses of an industrial area along a railway line.", ["warehouse"]),
    ("park", "A park with a body of water and a footpath.", []),
    ("park", "A footpath winds through a park around a pond.", ["pond"]),
    ("park", "Trees and grassland around a body of water in a park.", []),
    ("park", "A park with a playground, a footpath and a body of water.", ["playground"]),
    ("park", "A park beside a river, with a cycle path.", ["river", "cycle path"]),
    ("park", "Water, trees and a footpath in a park.", []),
    ("farm", "Farmland crossed by a stream.", []),
    ("farm", "Cropland with a stream and a few trees.", []),
    ("farm", "Fields of cropland beside a river.", ["river"]),
    ("farm", "Farmland with an orchard and a stream.", ["orchard"]),
    ("farm", "A stream runs through farmland next to a residential area.", ["residential area"]),
    ("farm", "Cropland around a farm building and a stream.", ["farm building"]),
    ("downtown", "Five buildings and a service road in a built-up area.", []),
    ("downtown", "Buildings along a service road.", []),
    ("downtown", "Apartment buildings along a service road.", ["apartment building"]),
    ("downtown", "Buildings and a service road next to a park.", ["park"]),
    ("downtown", "A dense urban area with buildings and a residential road.", ["residential road"]),
    ("woods", "Land that is mostly tree cover with some shrubland.", []),
    ("woods", "A forest with patches of grassland and shrubs.", []),
    ("woods", "A forest with a lake in the middle.", ["lake"]),
    ("woods", "Woodland beside cropland.", ["cropland"]),
    ("woods", "Trees and shrubland crossed by a path.", ["path"]),
    ("airport", "A runway, a taxiway and an apron.", []),
    ("airport", "An apron next to a runway and a taxiway on bare land.", []),
    ("airport", "A runway and a taxiway beside a helipad.", ["helipad"]),
    ("airport", "A runway next to a parking lot and grassland.", ["parking lot"]),
    ("river", "A river crossed by a bridge carrying a secondary road.", []),
    ("river", "A bridge over a river, with trees and cropland on its banks.", []),
    ("river", "A bridge carries a primary road over a river.", ["primary road"]),
    ("river", "A river and a canal meet under a bridge.", ["canal"]),
    ("river", "A secondary road crosses a river next to a pier.", ["pier"]),
]


def labels(tile: str) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The tile's label elements (as the join writes them) and land-cover fractions."""
    spec = TILES[tile]
    elements = [
        {"id": f"w{i}", "source": "osm", "tags": {k: v}, "geom_type": "polygon",
         "coverage_px": 10.0, "coverage_frac": 0.1, "area_m2": 100.0, "length_m": 0.0,
         "position": "centre", "clipped": False}
        for i, (k, v) in enumerate(spec["tags"])
    ]  # fmt: skip
    return elements, dict(spec["landcover"])


# Written after the scorer's vocabulary was settled and measured once, untuned: the held-out
# set (its figures are the scorer's honest ones).
HELD_OUT: list[tuple[str, str, list[str]]] = [
    ("suburb", "Two detached houses on a quiet residential street with a car park.", []),
    ("suburb", "A house with a swimming pool next to a parking lot.", ["swimming pool"]),
    (
        "suburb",
        "A residential road leads to a small parking lot beside a playground.",
        ["playground"],
    ),
    ("suburb", "Homes and trees along a road, with a gas station.", ["gas station"]),
    ("industry", "A primary road runs parallel to a railway through industrial land.", []),
    ("industry", "Factories and a railway station in an industrial area.", ["station"]),
    ("industry", "A railway line crosses a river near an industrial area.", ["river"]),
    ("park", "A body of water surrounded by a park and grassland.", []),
    ("park", "A footpath along a lake in a park with a parking lot.", ["lake", "parking lot"]),
    ("park", "Sports pitches next to a park with a pond.", ["sports pitch", "pond"]),
    ("farm", "A stream meanders through fields of cropland.", []),
    ("farm", "Farmland with a barn and a dirt track.", ["barn", "track road"]),
    ("farm", "A vineyard and farmland along a stream.", ["vineyard"]),
    ("downtown", "A built-up area of buildings served by a service road.", []),
    ("downtown", "Office buildings around a plaza and a service road.", ["office building"]),
    ("downtown", "Buildings along a service road and a tram line.", ["tram line"]),
    ("woods", "A dense forest with some shrubland and grassland.", []),
    ("woods", "A forest crossed by a power line.", ["power line"]),
    (
        "airport",
        "A runway with a taxiway and an apron near a terminal building.",
        ["terminal building"],
    ),
    ("airport", "An aerodrome with a runway and hangars.", ["aerodrome", "hangar"]),
    ("river", "A secondary road bridge over a river between trees and farmland.", []),
    ("river", "A river with a dam and a bridge.", ["dam"]),
]
