"""The faithfulness scorer (qa/faithfulness.py) and its filter, faithfulness_v1."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoweave.builders.recipe import Recipe
from geoweave.qa.faithfulness import concept, mentions, score
from tests.conftest import REPO, SF_BAY, shard_rows
from tests.data.faithfulness_fixture import CAPTIONS, FRESH, HELD_OUT, MODEL_WRITTEN, labels


def _el(key: str, value: str) -> dict[str, object]:
    return {"id": "w1", "source": "osm", "tags": {key: value}, "geom_type": "polygon",
            "coverage_px": 10.0, "coverage_frac": 0.1, "area_m2": 1.0, "length_m": 0.0,
            "position": "centre", "clipped": False}  # fmt: skip


def test_mentions_are_whole_phrases_longest_first_singular_or_plural() -> None:
    assert mentions("A parking lot near the park.") == ["parking lot", "park"]
    assert mentions("Two parking lots and three parks.") == ["parking lot", "park"]
    assert mentions("A residential road, a road and streets.") == [
        "residential road",
        "road",
        "street",
    ]
    assert mentions("Parkland and roadside.") == []  # no part of a word
    assert mentions("A fire station.", own=["fire station"]) == ["fire station"]


def test_broader_mentions_are_supported_narrower_ones_are_not() -> None:
    labels_ = [_el("highway", "residential"), _el("building", "house")]
    ok = score("A road with buildings and a house.", labels_, {})
    assert ok.precision == 1.0 and ok.unsupported == [] and ok.recall == 1.0
    wrong = score("A secondary road and a church.", labels_, {})
    assert wrong.unsupported == ["secondary road", "church"] and wrong.precision == 0.0
    generic = score("A house.", [_el("building", "yes")], {})
    assert generic.unsupported == ["house"]  # building=yes says nothing of houses


def test_land_cover_supports_its_class_above_five_percent() -> None:
    f = score("Forest and cropland.", [], {"Tree cover": 0.6, "Cropland": 0.04})
    assert f.unsupported == ["cropland"] and f.precision == 0.5 and f.recall == 1.0


def _measure(cases: list[tuple[str, str, list[str]]]) -> tuple[float, float]:
    """Micro precision and recall of the scorer at finding the labelled unsupported mentions."""
    tp = fp = fn = 0
    for tile, text, labelled in cases:
        found = {concept(m) for m in score(text, *labels(tile)).unsupported}
        expected = {concept(m) for m in labelled}
        tp, fp, fn = (
            tp + len(found & expected),
            fp + len(found - expected),
            fn + len(expected - found),
        )
    return tp / (tp + fp), tp / (tp + fn)


def test_scorer_finds_the_hand_labelled_unsupported_mentions() -> None:
    assert len(CAPTIONS) >= 40
    precision, recall = _measure(CAPTIONS)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_scorer_on_the_held_out_and_model_written_captions_does_not_regress() -> None:
    """Hand-written held-out captions (0.875 / 0.737 when first measured) and the test model's
    own captions (0.864 / 0.809 when first measured); both led to a wider vocabulary (OSM
    values such as tram lines, hangars, farmyards, hills), so they are tuned now."""
    assert len(MODEL_WRITTEN) >= 25
    for cases in (HELD_OUT, MODEL_WRITTEN):
        precision, recall = _measure(cases)
        assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_scorer_on_fresh_model_captions_labelled_before_it_ran_on_them() -> None:
    """The untuned figures (README): 0.939 precision, 0.912 recall on 32 captions of the test
    model. What it misses: a kind it lacks ("bus station" read as "station"), "museum",
    "mangrove forest"; a false alarm: the "road" of "taxiway road"."""
    assert len(FRESH) >= 30
    precision, recall = _measure(FRESH)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def _recipe(tmp_path: Path, **extra: object) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "faith",
            "area": {"bbox": (-122.3143, 37.8040, -122.2908, 37.8176)},
            "imagery": [
                {"name": "l7", "path": str(SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif")}
                | {"scale": "none"}
            ],
            "tiles": {"size_px": 16, "gsd_m": [30]},
            "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
            "output": {"samples_per_shard": 1000},
            **extra,
        }
    )


def test_template_captions_are_all_faithful(tmp_path: Path) -> None:
    kept = [r for r in shard_rows(_recipe(tmp_path), tmp_path) if r["status"] == "kept"]
    assert kept
    for r in kept:
        assert dict(r["scores"])["faithfulness"] == 1.0
        for cap in r["captions"]:
            assert cap["precision"] == 1.0 and cap["unsupported"] == [] and cap["faithful"]
            assert 0 < cap["recall"] <= 1


@pytest.mark.parametrize("action", ["flag", "reject"])
def test_unfaithful_captions_are_flagged_or_rejected(tmp_path: Path, action: str) -> None:
    recipe = _recipe(
        tmp_path,
        plugins=[str(REPO / "tests" / "data" / "plugins" / "fixed_captions.py")],
        captions={"name": "fixed_captions_test",
                  "texts": ["A helipad, a swimming pool and a lighthouse.", "Some buildings."]},
        filters={"faithfulness_v1": {"min_precision": 0.5, "action": action}},
    )  # fmt: skip
    rows = [r for r in shard_rows(recipe, tmp_path) if r["captions"]]
    assert rows
    for r in rows:
        first, second = r["captions"]
        assert first["unsupported"] == ["helipad", "swimming pool"] and not first["faithful"]
        buildings = any(k == "building" for e in r["osm"] for k, _ in e["tags"])
        assert second["faithful"] == buildings and second["precision"] == float(buildings)
        assert dict(r["scores"])["faithfulness"] == 0.0
        if action == "reject":
            assert r["status"] == "rejected" and r["rejected_by"] == "faithfulness_v1"
            assert r["reject_reason"] == "unfaithful_caption"
        else:
            assert r["status"] == "kept"


def test_the_vocabulary_trie_matches_what_a_longest_first_alternation_matches() -> None:
    """The scanner is a trie regex; at every place it must match what one alternation of all
    the forms, longest first, matches (random texts of words, prefixes and suffixes)."""
    import random
    import re

    from geoweave.qa import faithfulness as f

    forms = sorted(f._STATIC_FORMS, key=len, reverse=True)
    plain = re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(w) for w in forms) + r")(?![\w-])")
    rng = random.Random(0)
    for _ in range(1500):
        parts = []
        for _ in range(rng.randrange(1, 12)):
            w = rng.choice(forms)
            r = rng.random()
            if r < 0.3:
                w = w[: rng.randrange(1, len(w) + 1)] + rng.choice(["", "s", "-x", "ing", "x"])
            elif r < 0.5:
                w = rng.choice(["a", "the", "near", ",", ".", "and", "-", "(42%)"])
            parts.append(w)
        text = rng.choice([" ", "", "-", ", "]).join(parts)
        want = [(m.start(), m.end()) for m in plain.finditer(text)]
        assert [(m.start(), m.end()) for m in f._STATIC.finditer(text)] == want, text
