"""Hand-labelled captions for measuring the faithfulness scorer itself (qa/faithfulness.py).

Eight tiles described by their labels (OSM-style tags and land-cover fractions), and captions of
them, each with the mentions a careful human reader marks as unsupported by those labels. Some
captions are right, some have known errors of the kinds a small captioning model makes: a wrong
road class, an object that is not there, a land cover that is not there, a more specific kind
than the labels say. ``CAPTIONS`` and ``HELD_OUT`` are hand-written; ``MODEL_WRITTEN`` and
``FRESH`` were written by SmolLM2-135M, the test model. The expected mentions are written as
the scorer's vocabulary phrases, singular (compared as concepts: "car park" is "parking lot").
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


# Written by SmolLM2-135M-Instruct (the test model) with the shipped caption_short_v1 and
# caption_detailed_v1 prompts over these tiles' descriptions (temperature 0.7, seeds 1 and 2),
# then hand-labelled; three captions with no checkable mention were left out. ("Civic Center
# Garage" is copied from a few-shot example of the prompts.) Labelled before the scorer was
# measured on them.
MODEL_WRITTEN: list[tuple[str, str, list[str]]] = [
    ("suburb", "A residential road through a built-up area, with a house at the centre of the "
     "lane, and a tree at the top, with a 10x10 meter grass.", []),
    ("suburb", "A 10m resolution image of a residential road with some tree cover. A house "
     "stands at the centre of the image, a house with a building at the top of the image, and "
     "a street with a house at the top.", []),
    ("industry", "A residential road through a built-up area, with a rail track at the top of "
     "the hill, and a bush with a small barn at the bottom.",
     ["residential road", "hill", "bush", "barn"]),
    ("industry", "A 20.0 m resolution image of a sparse populated industrial area. The Civic "
     "Center Garage is the main feature, but on the edge is a rail line and a minor village. "
     "The land cover is 20% built-up vegetation, 20% built-up and", ["garage"]),
    ("park", "A tranquil oasis in a bustling city, a vibrant green oasis, with a park of native "
     "species.", ["city"]),
    ("park", "A 20m wide body of water, with a shore and a circular patch of the Civic Center "
     "Garage, providing a more vibrant view of the area's landscape. The left edge of the image "
     "is a body of water with a beach, which is a large body of water.", ["garage", "beach"]),
    ("farm", "A farmland in a town's agricultural landscape, with a field at centre.", ["town"]),
    ("farm", "A rural landscape with a cropland farm with an empty parking lot, and a main road "
     "that passes through the Civic Center Garage. The image shows a farm with a cropland farm "
     "and a main road with a small parking lot.", ["parking lot", "road", "garage"]),
    ("downtown", "A service road through a rebuilt building, with a house at the top left.",
     ["house"]),
    ("downtown", "A 10-meter resolution image of a built-up area with a service road and "
     "grassland in the centre. The Civic Center Garage lies to the south of the road, but the "
     "main road is constructed from grass. The grassland is filled with a mix of trees and "
     "other vegetation", ["grassland", "garage", "grass", "tree"]),
    ("woods", "A rural area with a single-storyland building, with a single-storyland building "
     "at the top left, and a single-storyland building with a single-storyland building at the "
     "top right.", ["building"]),
    ("woods", "The image in two to four sentences, with a grassland of 18% and shrubland of 20% "
     "of the Civic Center Garage. There is no information about the type of land cover.",
     ["garage"]),
    ("airport", "A 10 m resolution image of a build-up on a pedestrian's path. A criss-crossing "
     "street of grass with a patch of bare vegetation, a taxicab road, and a car on the "
     "taxiway, all with a grid of squares of green.", ["path", "street", "road"]),
    ("river", "A primary road through a primary waterway, with a 40x20m bridge at the centre "
     "and a 30x40m secondary road at the top left.", ["primary road"]),
    ("river", "A 10m resolution image of a cropland-covered area. A bridge runs along the "
     "centre of the image. A river flows through the center, and the Cropland-covered area is "
     "also a wooded area. A forest is visible at the top of the image.", []),
    ("suburb", "A residential road through a build-up of grass, with a parking lot at the top, "
     "including a few more, a residential road with a road with a housing estate, and a "
     "building of a hotel.", ["hotel"]),
    ("suburb", "This road cut through a built-up area, with some grassland left over. A house "
     "stands at the centre, a housing estate with a 70-meter radius of grass.", []),
    ("industry", "A industrial area with sparse vegetation, with a rail link, and a built-up "
     "housing, with a built-up housing unit that is 20 units in length.", ["housing"]),
    ("industry", "A 24.7 m image of a built-up area with sparse vegetation. A primary road runs "
     "along the centre, with a rail line in the centre, and a small parking lot. The Civic "
     "Center Garage is open.", ["parking lot", "garage"]),
    ("park", "A tranquil oasis in the heart of a bustling city.", ["city"]),
    ("park", "A 10 m resolution image of a lush tropical rainforest, with a footpath running "
     "along the centre of the image. A body of water, a footpath, and a park with a tree cover, "
     "a palm tree with a headland, and a tree with a tall palm trunk.", ["headland"]),
    ("farm", "A farmland with a small farmhouse at the top left, with a 128-acre waterfront.",
     ["farmhouse"]),
    ("farm", "A 640 m wide, 120 m tall, farm land that is mostly covered in trees. A stream "
     "runs through the center, and a small park is just to the left of the main road.",
     ["park", "road"]),
    ("downtown", "A residential road through a built-up area, with a house at the centre and a "
     "tree at the top.", ["residential road", "house", "tree"]),
    ("downtown", "A 10m wide, 21m deep parking lot. A primary road runs along the centre of the "
     "centre, and the Civic Center Garage. The parking lot has grass and a small grassy area. "
     "The road is built with a building.", ["parking lot", "primary road", "garage", "grass"]),
    ("woods", "The image of a village, with a single house at the top left, with a grassy "
     "hillside.", ["village", "house", "hillside"]),
    ("woods", "A 10m resolution image of a built-up area with some grassland. A primary road "
     "runs along the left edge, leaving the image. In the centre lies a small parking lot, the "
     "Civic Center Garage.", ["built-up area", "primary road", "parking lot", "garage"]),
    ("river", "A bridge across a primary water body, with a farmyard at the top, with a river "
     "and a sea of paddy land surrounding the bridge.", ["farmyard"]),
    ("river", "A 24 m wide bridge connecting a primary waterway and a secondary road that runs "
     "along the left edge, leaving a scene of cropland and a permanent water body.", []),
]  # fmt: skip


# A second draw of the same model (seeds 3 and 4), labelled after the vocabulary was widened
# for the sets above and before the scorer was run on it: the scorer's untuned figures.
FRESH: list[tuple[str, str, list[str]]] = [
    ("suburb", "A residential road through a built-up area, with a house at the centre of a grassed area, with a parking lot at the top left.", []),
    ("suburb", "An image of a house with a built-up area of 640 feet, with some grass and a small parking lot.", []),
    ("industry", "A suburban railway line, with a few sparse trees and a built-up landscape, as well as a bus in the middle.", ["tree"]),
    ("industry", "A 30°-degree section of a busy intersection with a built-up area. The primary road crosses the centre of a railline, the Civic Center Garage. In the centre lies a bare forest, but the built-up area lies in between the railline and the main road", ["garage", "forest"]),
    ("park", "A grassed park, with a king of palm trees at the top.", []),
    ("park", "A 6 m resolution image of a tranquil and natural oasis with a gentle breeze. A body of water lies along the centre, and a man-made park stretches out across the center. A pond, a pond of water, and a pond of water are scattered across the bottom of the image.", ["pond"]),
    ("farm", "A rural stream, with a cropland farm at the head of the scene, and a family's land covered in trees.", []),
    ("farm", "A rural landscape with a mix of cropland and tree cover, a farm with a farmland edge, and a school with a tree cover edge. The image shows a transition from farmland to a forest, a scene with a mix of both.", ["school"]),
    ("downtown", "A residential road through a built-up area, illuminated with a bright light, and a service road illuminated from the side.", ["residential road"]),
    ("downtown", "The Civic Center Garage is a building, not a service road.", ["garage"]),
    ("woods", "An image of a densely forested area, with a dense grass-like vegetation and a mix of trees growing in the center.", []),
    ("woods", "A 20 m resolution image of a forest with some woodland. The Civic Center Garage is on the right edge, and the image is cropped to 62% vegetation. The land cover is mostly grassland, with a small section of tree cover. The image is cropped to 18", ["garage"]),
    ("airport", "A taxiway road through a grassed area, with a cabbie at the top left.", []),
    ("airport", "A 10m resolution image of a built-up area with sparse vegetation and a few grass patches. Built-up foliage is sparse, with no discernible vegetation. The parking lot is a cabbie's taxiway.", ["parking lot"]),
    ("river", "The bridge and main road, a modern bridge of dedicated land, with a small village at the top, a scene of a modern green, a rural landscape.", ["village"]),
    ("river", "A 10m resolution image of a cropland area with a primary river. A bridge over a river and a small parking lot on the other side of the bridge. The Cropland area is covered in trees and the primary river is in the centre. The image shows a tree cover of", ["parking lot"]),
    ("suburb", "A residential road through a set of built-up roads, with a parking lot at the top of the hill, and a small town at the bottom.", ["hill"]),
    ("suburb", "A 24 m resolution image of a residential road with some tree cover. A primary house runs along the centre of the image. In the centre lies a small residential road with some car parking.", []),
    ("industry", "An industrial area, with a rail line, in a rural setting.", []),
    ("industry", "A 640 m-resolution image of a built-up area with some brusque vegetation. A primary road runs along the centre, leaving the image. In the centre lies a bus station, the Civic Center Garage.", ["bus station", "garage"]),
    ("park", "A body of water in a grassed park, with a palm tree in the centre.", []),
    ("park", "A 24.7 m square image of a mangrove forest in a coastal area. A body of water runs along the left edge, and a footpath runs along the centre. The National Museum of Singapore's Permatropolis and the Singapore Marine National Park are visible, with a green area on", ["mangroves", "museum"]),
    ("farm", "The farmland scene, with a large farmhouse on the top left corner, with a cropland farm with the image's ground cover and a tree cover scene on the bottom.", ["farmhouse"]),
    ("farm", "A 10m resolution image of a cropland area, with a green image of a single farmland field. A primary road runs along the centre, leaving the image. In the centre lies a small parking lot, the Civic Center Garage.", ["primary road", "parking lot", "garage"]),
    ("downtown", "A residential road through a built-up area, with a service road along the top left corner, with a building at the top.", ["residential road"]),
    ("downtown", "A modern service road with a mix of residential and commercial spaces. The Civic Center Garage is situated in a central location. The image is littered with a mix of residential and commercial spaces. The image also has a grassed parking lot, which the Civic Center Garage is located in.", ["garage", "parking lot"]),
    ("woods", "This is a map of a town with a lot of greenery, with a small house at the top left.", ["town", "house"]),
    ("woods", "A 10 m resolution image of a built-up area with some grassland. A primary road runs along the left edge of the image. In the centre lies a small parking lot, the Civic Center Garage, and a golf course.", ["built-up area", "primary road", "parking lot", "garage", "golf course"]),
    ("airport", "A taxiway on a bus, with a cabbie at the top left.", []),
    ("airport", "A 10 m resolution image of a rural area with a small paved road and a parking lot. A 50 m by 20 m area with built-up vegetation in the centre.", ["road", "parking lot"]),
    ("river", "A bridge across a river, with a secondary road at its top, connecting a cropland area to a sustainable forest.", []),
    ("river", "A 14.5 m image of a river with a bridge marking the approach to a shore, with a small pond and a lake at the back of the image. The bridges are all for Cropland, and the land cover is largely forest. The pond and lake are not a river but", ["pond", "lake"]),
]  # fmt: skip
