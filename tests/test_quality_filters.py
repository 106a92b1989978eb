"""Image and text quality filters (qa/image_quality.py, qa/text_quality.py), the plan's
clipping warning and the shared-captions pass (manifests/shared_captions.py), on samples and
sidecars whose answer is known, and once through a shard and the manifest."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from geoweave.builders.plan import plan_tiles
from geoweave.builders.prepare import prepare
from geoweave.builders.recipe import DEFAULT_FILTERS, DEFAULT_PASSES, Recipe
from geoweave.builders.shard import apply_filters, run_shard
from geoweave.errors import FatalError
from geoweave.manifests.manifest_builder import write_manifest
from geoweave.manifests.passes import run_passes
from geoweave.manifests.shared_captions import SharedCaptionsOptions, SharedCaptionsPass
from geoweave.protocols import PassInput
from geoweave.qa.image_quality import (
    CloudFilter,
    CloudOptions,
    SaturationFilter,
    SaturationOptions,
    edge_fraction,
)
from geoweave.qa.pixels import grey_std, grey_sum, smooth
from geoweave.qa.text_quality import (
    CaptionLengthFilter,
    CaptionLengthOptions,
    GarbageOptions,
    GarbageTextFilter,
    RepetitionFilter,
    RepetitionOptions,
    repeated_share,
)
from geoweave.record import Caption, Sample
from geoweave.sources.imagery import GeoTiffSource, stretch_rgb8
from geoweave.sources.rasters import clipped_share
from geoweave.tile import Tile
from tests.data.labels_fixture import write_cover
from tests.data.raster_fixture import _write, write_rgb, write_uint16

SIZE = 64


def saturated_fraction(rgb: np.ndarray, valid: np.ndarray | None) -> float:
    """``edge_fraction`` of an interleaved (H, W, 3) fixture."""
    return edge_fraction(np.moveaxis(rgb, 2, 0), valid)


def _sample(rgb: np.ndarray, valid: np.ndarray | None = None, data: Any = None) -> Sample:
    s = Sample(Tile("img_10m_32610_0_0", "img", "EPSG:32610", 10.0, rgb.shape[0], 0, 0))
    s.rgb, s.data = rgb, data
    s.valid = np.ones(rgb.shape[:2], bool) if valid is None else valid
    return s


def _city(seed: int = 0) -> np.ndarray:
    """A bright grey city: every pixel bright and colourless, but textured (sd 25)."""
    rng = np.random.default_rng(seed)
    grey = np.clip(rng.normal(228, 25, (SIZE, SIZE)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _clouded(
    city: np.ndarray, cols: int, colour: tuple[int, int, int] = (236, 238, 240)
) -> np.ndarray:
    """``city`` under a smooth patch of ``colour`` (noise of 1 DN) over its left ``cols``."""
    out = city.copy()
    noise = np.random.default_rng(1).integers(-1, 2, (SIZE, cols, 3))
    out[:, :cols] = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    return out


# ---- cloud_v1 --------------------------------------------------------------------------------


def test_a_white_smooth_patch_over_70_percent_is_cloudy_and_a_bright_city_is_not() -> None:
    heuristic = CloudFilter(CloudOptions())
    city = _sample(_city())
    assert heuristic.check(city) is None
    assert city.scores["cloud_fraction"] < 0.05  # bright and white, but textured
    cloudy = _sample(_clouded(_city(), cols=45))  # 45 / 64 = 70% of the tile
    assert heuristic.check(cloudy) == "cloudy"
    # the column beside the city is not smooth; a few city pixels happen to be
    assert 44 / 64 - 0.01 <= cloudy.scores["cloud_fraction"] <= 45 / 64 + 0.05
    thin = _sample(_clouded(_city(), cols=19))  # 30%: scored, kept
    assert heuristic.check(thin) is None and 0.25 < thin.scores["cloud_fraction"] < 0.35


def test_smooth_bright_colour_is_not_cloud_and_only_valid_pixels_count() -> None:
    sand = _sample(_clouded(_city(), cols=SIZE, colour=(240, 225, 150)))  # smooth, yellow
    assert CloudFilter(CloudOptions()).check(sand) is None and sand.scores["cloud_fraction"] == 0
    valid = np.zeros((SIZE, SIZE), bool)
    valid[:, :32] = True  # the cloud covers 45 of 64 columns: all 32 valid ones
    half = _sample(_clouded(_city(), cols=45), valid)
    assert CloudFilter(CloudOptions()).check(half) == "cloudy"
    assert half.scores["cloud_fraction"] == 1.0
    empty = _sample(_city(), np.zeros((SIZE, SIZE), bool))
    assert CloudFilter(CloudOptions()).check(empty) is None
    assert empty.scores["cloud_fraction"] == 0.0


def _texture_reference(rgb: np.ndarray, max_texture: float) -> np.ndarray:
    """Float64 std of every 3 x 3 neighbourhood (edges repeated) of the grey level < limit."""
    padded = np.pad(rgb.astype(np.float64).mean(axis=2), 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    return windows.std(axis=(2, 3)) < max_texture


def test_smooth_is_the_exact_3x3_grey_std_test() -> None:
    """The integer texture test agrees with a float64 reference at every pixel that is not an
    exact tie (std exactly the limit, where float64 rounding says 11.999...), and at the ties
    it says "not below", which is right."""
    rng = np.random.default_rng(2)
    ties = 0
    for limit, side in ((0.5, 40), (5.0, 40), (12.0, 600), (40.0, 40)):
        rgb = rng.integers(150, 256, (side, side, 3), dtype=np.uint8)
        got = smooth(grey_sum(rgb), limit)
        want = _texture_reference(rgb, limit)
        padded = np.pad(grey_sum(rgb).astype(np.int64), 1, mode="edge")
        w = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
        exact = 9 * (w * w).sum(axis=(2, 3)) - w.sum(axis=(2, 3)) ** 2  # 729 var
        tie = exact == 729 * limit * limit
        assert (got[~tie] == want[~tie]).all()
        assert not got[tie].any()
        ties += int(tie.sum())
    flat = np.full((9, 9, 3), 200, np.uint8)
    assert smooth(grey_sum(flat), 0.1).all() and not smooth(grey_sum(flat), 0.0).any()
    assert ties > 0  # ties are rare (~1 in 100,000 pixels at 12): the seeded data has some


def test_a_mask_band_decides_cloudy_pixels_nonzero_or_by_code() -> None:
    rgb = _city()  # the heuristic would call none of it cloudy: the mask decides
    data = np.zeros((4, SIZE, SIZE), np.uint16)
    data[3, :, :40] = 9  # SCL-like codes: 9 high-probability cloud on 40 columns
    data[3, :, 40:48] = 4  # 4 vegetation on 8 more
    nonzero = _sample(rgb, data=data)
    assert CloudFilter(CloudOptions(mask_band=4)).check(nonzero) == "cloudy"
    assert nonzero.scores["cloud_fraction"] == 48 / 64
    coded = _sample(rgb, data=data)
    opts = CloudOptions(mask_band=4, mask_values=[8, 9, 10], max_fraction=0.7)
    assert CloudFilter(opts).check(coded) is None
    assert coded.scores["cloud_fraction"] == 40 / 64
    with pytest.raises(ValueError, match="mask_band 5"):
        CloudFilter(CloudOptions(mask_band=5)).check(_sample(rgb, data=data))


def test_a_mask_band_the_source_lacks_fails_the_build_before_work(tmp_path: Path) -> None:
    image = write_uint16(tmp_path / "s2.tif")  # 4 bands
    recipe = Recipe.model_validate(
        {
            "name": "t",
            "imagery": [{"name": "s2", "path": str(image), "bands": [3, 2, 1]}],
            "tiles": {"size_px": 16, "gsd_m": [10]},
            "filters": {"cloud_v1": {"mask_band": 5}},
        }
    ).check_components()
    with pytest.raises(FatalError, match=r"filters\.cloud_v1\.mask_band: 5 .* s2 \(4 bands\)"):
        prepare(recipe, tmp_path / "out")
    ok = recipe.model_copy(update={"filters": {**recipe.filters, "cloud_v1": {"mask_band": 4}}})
    _, plan, _ = prepare(ok, tmp_path / "out")
    assert plan.num_tiles


# ---- saturation_v1 and the plan's clipping warning -----------------------------------------


def test_saturated_fraction_is_the_worst_band_of_valid_pixels() -> None:
    rgb = np.full((10, 10, 3), 120, np.uint8)
    rgb[:3, :, 0] = 255  # band 0: 30% at 255
    rgb[:4, 5:, 1] = 0  # band 1: 20% at 0 ...
    rgb[8:, :, 1] = 255  # ... and 20% at 255
    rgb[:, :, 2] = 254  # band 2: near white, not clipped
    assert saturated_fraction(rgb, None) == pytest.approx(0.4)
    valid = np.ones((10, 10), bool)
    valid[:, 5:] = False  # of the 50 valid pixels, band 0 has 15 at 255, band 1 has 10
    assert saturated_fraction(rgb, valid) == pytest.approx(15 / 50)
    assert saturated_fraction(rgb, np.zeros((10, 10), bool)) == 0.0
    s = _sample(rgb)
    assert SaturationFilter(SaturationOptions(max_fraction=0.3)).check(s) == "saturated"
    assert s.scores["saturated_fraction"] == 0.4


def test_a_uint16_source_stretched_with_scale_none_is_saturated() -> None:
    data = np.random.default_rng(1).integers(200, 3000, (4, 32, 32), dtype=np.uint16)
    valid = np.ones((32, 32), bool)
    none = stretch_rgb8(data, valid, [3, 2, 1], np.zeros(3), np.full(3, 255.0))
    clipped = _sample(none, valid)
    assert SaturationFilter(SaturationOptions()).check(clipped) == "saturated"
    assert clipped.scores["saturated_fraction"] > 0.95  # every value over 255 is white
    sane = stretch_rgb8(data, valid, [3, 2, 1], np.full(3, 200.0), np.full(3, 3000.0))
    kept = _sample(sane, valid)
    assert SaturationFilter(SaturationOptions()).check(kept) is None
    assert kept.scores["saturated_fraction"] < 0.01


def _plan(path: Path, scale: object, caplog: pytest.LogCaptureFixture) -> list[str]:
    recipe = Recipe.model_validate(
        {"name": "t", "imagery": [{"name": "s2", "path": str(path), "scale": scale}],
         "tiles": {"size_px": 16, "gsd_m": [10]}}
    )  # fmt: skip
    src = GeoTiffSource("s2", path, [3, 2, 1], scale)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoweave"):
        plan_tiles(recipe, [src])
    return [r.getMessage() for r in caplog.records if "stretch" in r.getMessage()]


def test_the_plan_warns_when_the_stretch_clips_most_pixels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    u16 = write_uint16(tmp_path / "s2.tif")  # values 200..3000
    (warning,) = _plan(u16, "none", caplog)
    share = (3000 - 256) / (3000 - 200)
    assert warning.startswith("imagery s2:") and f"clips {100 * share:.0f}%" in warning
    assert _plan(u16, "auto", caplog) == []  # 2-98th percentile: about 2% at each end
    assert _plan(u16, (200, 3000), caplog) == []
    assert _plan(write_rgb(tmp_path / "rgb.tif"), "none", caplog) == []  # 8-bit as it is


class _CountingReads:
    """A dataset that counts the pixels read from it."""

    def __init__(self, ds: Any) -> None:
        self.ds, self.pixels = ds, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ds, name)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        arr = self.ds.read(*args, **kwargs)
        self.pixels += arr.size
        return arr


def test_the_clipping_check_reads_a_bounded_sample(tmp_path: Path) -> None:
    values = np.full((3, 1024, 1024), 300, np.uint16)  # 4096 blocks of 16 x 16, no overview
    values[:, :, :256] = 100  # a quarter within the identity stretch
    path = _write(tmp_path / "big.tif", values, 10.0, tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path) as ds:
        counting = _CountingReads(ds)
        share = clipped_share(counting, [1, 2, 3], np.zeros(3), np.full(3, 255.0), None)
    assert counting.pixels == 64 * 16 * 16 * 3  # 64 sampled blocks of the 4096
    assert share is not None and 0.5 < share <= 1.0  # about 3/4 (a seeded draw of blocks)


# ---- text filters ----------------------------------------------------------------------------


def _cap(text: Any, captioner: str = "llm_v1") -> Caption:
    return {"text": text, "style": "short", "captioner": captioner, "prompt_version": "1"}


def _texts(*captions: Caption) -> Sample:
    s = _sample(_city())
    s.captions = list(captions)
    return s


GOOD = "A residential road crosses a small park beside two houses and a parking lot."


def test_caption_length_flags_or_rejects_captions_out_of_bounds() -> None:
    short = _texts(_cap(GOOD), _cap("Two roads."))
    assert CaptionLengthFilter(CaptionLengthOptions()).check(short) is None  # flag: score only
    assert short.scores["caption_length_ok"] == 0.5
    reject = CaptionLengthFilter(CaptionLengthOptions(action="reject"))
    assert reject.check(_texts(_cap(GOOD), _cap("Two roads."))) == "caption_length"
    assert reject.check(_texts(_cap(" ".join(["road"] * 121)))) == "caption_length"
    good = _texts(_cap(GOOD))
    assert reject.check(good) is None and good.scores["caption_length_ok"] == 1.0
    template = _texts(_cap("Two roads.", captioner="template_v1"))
    assert reject.check(template) is None and "caption_length_ok" not in template.scores
    every = CaptionLengthFilter(CaptionLengthOptions(action="reject", captions="all"))
    assert every.check(template) == "caption_length"


def test_repetition_rejects_looping_text() -> None:
    loop = "a single-storyland building, with a single-storyland building"
    assert repeated_share(loop) == pytest.approx(2 / 5)
    assert repeated_share("a road a road a road a road") == 1.0
    assert repeated_share("two words") == 0.0
    f = RepetitionFilter(RepetitionOptions())
    bad = _texts(_cap(GOOD), _cap(loop))
    assert f.check(bad) == "repetitive_text" and bad.scores["repetition"] == 0.4
    good = _texts(_cap(GOOD))
    assert f.check(good) is None and good.scores["repetition"] == 0.0


def test_garbage_text_rejects_control_characters_and_symbol_runs() -> None:
    f = GarbageTextFilter(GarbageOptions())
    clean = _texts(_cap("Houses, a road (30 m) near 37° N — a “quiet” café; Деревья и дома.\n"))
    assert f.check(clean) is None and clean.scores["garbage"] == 0.0
    bell = _texts(_cap("Houses and a road\x07 by the bay."))
    assert f.check(bell) == "garbage_text"  # one control character is enough
    assert bell.scores["garbage"] == pytest.approx(1 / 30, abs=1e-4)
    mojibake = "Houses ���� ▓▓▓ 🏠🏠 and roads"
    junk = _texts(_cap(mojibake, captioner="template_v1"))  # templates are judged too
    assert f.check(junk) == "garbage_text"
    assert junk.scores["garbage"] == pytest.approx(9 / len(mojibake), abs=1e-4)
    assert GarbageTextFilter(GarbageOptions(max_share=0.5)).check(junk) is None


def test_text_filters_never_fail_on_empty_or_missing_fields() -> None:
    odd: list[Any] = [{}, {"text": None, "captioner": "llm_v1"}, _cap(""), _cap(42), _cap("   ")]
    filters = [
        CaptionLengthFilter(CaptionLengthOptions(action="reject")),
        RepetitionFilter(RepetitionOptions()),
        GarbageTextFilter(GarbageOptions()),
    ]
    for captions in ([], odd):
        s = _texts(*captions)
        apply_filters([s], filters)
        assert s.error is None
    assert s.reject_reason == "caption_length"  # empty texts have 0 words
    assert s.scores["repetition"] == 0.0 and s.scores["garbage"] == 0.0


# ---- shared_captions_v1 ----------------------------------------------------------------------


def _run(tmp_path: Path, rows: list[tuple[str, str, list[str]]], **opts: Any) -> pa.Table:
    cap = pa.struct([("text", pa.string()), ("captioner", pa.string())])
    table = pa.Table.from_pylist(
        [{"key": k, "status": st, "captions": [{"text": t, "captioner": "template_v1"} for t in ts]}
         for k, st, ts in rows],
        schema=pa.schema([("key", pa.string()), ("status", pa.string()),
                          ("captions", pa.list_(cap))]),
    )  # fmt: skip
    pq.write_table(table, tmp_path / "t-000000.samples.parquet")
    inputs = PassInput(tmp_path, "t", (str(tmp_path / "t-000000.samples.parquet"),))
    return SharedCaptionsPass(SharedCaptionsOptions(**opts)).run(inputs)


A, B = "Overhead view of a residential road.", "Satellite image of a house."
ROWS = [
    ("k0", "kept", [A, B]),
    ("k1", "kept", ["  overhead VIEW of a\nresidential road. ", B]),  # the same text as A
    ("k2", "kept", [A, A]),  # counts once
    ("k3", "kept", [A, "k3 only"]),
    ("k4", "kept", [B]),
    ("r0", "rejected", [A, B]),  # only kept samples count
    ("k5", "kept", []),
]


def test_the_pass_flags_exactly_the_captions_over_the_count(tmp_path: Path) -> None:
    flagged = _run(tmp_path, ROWS, max_tiles=3).to_pylist()
    assert [r["key"] for r in flagged] == ["k0", "k1", "k2", "k3"]  # A: 4 tiles, B: 3
    assert {r["caption"] for r in flagged} == {A.lower()}
    assert all(r["count"] == 4 and r["shared"] == 1 for r in flagged)
    assert all(r["reject_reason"] is None for r in flagged)  # flag: report only
    both = {r["key"]: r for r in _run(tmp_path, ROWS, max_tiles=2).to_pylist()}
    assert sorted(both) == ["k0", "k1", "k2", "k3", "k4"]  # one row per sample
    assert both["k0"]["shared"] == 2 and both["k0"]["caption"] == A.lower()  # its most shared
    assert both["k4"]["caption"] == B.lower() and both["k4"]["count"] == 3
    rejected = _run(tmp_path, ROWS, max_tiles=3, action="reject")
    assert set(rejected["reject_reason"].to_pylist()) == {"shared_caption"}
    assert _run(tmp_path, ROWS, max_tiles=4).num_rows == 0


# ---- options, defaults, and one shard through the manifest ---------------------------------


@pytest.mark.parametrize(
    ("section", "name", "options", "field"),
    [
        ("filters", "cloud_v1", {"max_fraction": 2}, "max_fraction"),
        ("filters", "cloud_v1", {"mask_band": 0}, "mask_band"),
        ("filters", "cloud_v1", {"mask_values": [8]}, "(options)"),
        ("filters", "saturation_v1", {"max_fraction": -0.1}, "max_fraction"),
        ("filters", "caption_length_v1", {"min_words": 10, "max_words": 5}, "(options)"),
        ("filters", "caption_length_v1", {"action": "drop"}, "action"),
        ("filters", "repetition_v1", {"max_repeat": 0.2}, "max_repeat"),
        ("filters", "garbage_text_v1", {"captions": "some"}, "captions"),
        ("passes", "shared_captions_v1", {"max_tiles": 0}, "max_tiles"),
    ],
)
def test_bad_options_fail_naming_the_field(
    section: str, name: str, options: dict[str, Any], field: str
) -> None:
    recipe = Recipe.model_validate(
        {"name": "t", "imagery": [{"name": "i", "path": "x.tif"}], section: {name: options}}
    )
    with pytest.raises(FatalError, match=re.escape(f"{section}.{name}.{field}")):
        recipe.check_components()


def test_the_defaults_hold_every_filter_and_the_pass_flags() -> None:
    r = Recipe.model_validate({"name": "t", "imagery": [{"name": "i", "path": "x.tif"}]})
    r = r.check_components()
    new = ["cloud_v1", "saturation_v1", "caption_length_v1", "repetition_v1", "garbage_text_v1"]
    assert [n for n in r.filters if n in new] == new and set(new) <= set(DEFAULT_FILTERS)
    assert r.filters["caption_length_v1"]["action"] == "flag"
    assert "shared_captions_v1" in DEFAULT_PASSES
    assert r.passes["shared_captions_v1"] == {"max_tiles": 50, "action": "flag"}


def _scene(path: Path) -> Path:
    """A 128 px uint8 scene: the top half a white cloud, smooth but not blank (brightness
    215 to 245 in soft waves), the bottom half colourful texture."""
    rng = np.random.default_rng(5)
    data = rng.integers(40, 220, size=(3, 128, 128), dtype=np.uint8)
    y, x = np.mgrid[0:64, 0:128]
    waves = 230 + 15 * np.sin(2 * np.pi * x / 32) * np.cos(2 * np.pi * y / 32)
    data[:, :64] = np.round(waves).astype(np.uint8)
    return _write(path, data, 10.0)


def test_a_shard_rejects_cloudy_tiles_and_the_funnel_and_manifest_say_so(tmp_path: Path) -> None:
    recipe = Recipe.model_validate(
        {
            "name": "q",
            "imagery": [{"name": "img", "path": str(_scene(tmp_path / "s.tif")), "scale": "none"}],
            "tiles": {"size_px": 32, "gsd_m": [10], "grid_crs": "EPSG:32610"},
            "labels": {"vector": [{"path": str(write_cover(tmp_path / "c.geojson", 1280))}]},
            "questions": {"enabled": False},
            "output": {"samples_per_shard": 1000},
        }
    ).check_components()
    out = tmp_path / "out"
    ctx, plan, _ = prepare(recipe, out)
    out.mkdir()
    stats = run_shard(ctx, 0, plan.shard_tiles(0))
    rows = pq.read_table(out / "q-000000.samples.parquet").to_pylist()
    cloudy = [r for r in rows if r["reject_reason"] == "cloudy"]  # 3 whole columns x 2 rows
    assert len(cloudy) == 6 and all(r["rejected_by"] == "cloud_v1" for r in cloudy)
    kept = [r for r in rows if r["status"] == "kept"]
    assert kept and all(dict(r["scores"])["cloud_fraction"] <= 0.5 for r in kept)
    for score in ("saturated_fraction", "garbage"):
        assert all(score in dict(r["scores"]) for r in kept)
    steps = list(stats.funnel)
    assert stats.funnel["cloud_v1"] == len(cloudy)
    assert steps.index("min_labels_v1") < steps.index("cloud_v1") < steps.index("template_v1")
    assert steps.index("faithfulness_v1") < steps.index("garbage_text_v1") < steps.index("encode")
    # every kept tile has the same land-cover-free template text: shared by them all
    run_passes(out, "q", [("shared_captions_v1", {"max_tiles": 1, "action": "reject"})])
    write_manifest(out, "q")
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    try:
        shared = con.execute("SELECT count(*) FROM shared_captions_v1").fetchone()
        funnel = con.execute(
            "SELECT step, rejected FROM funnel WHERE step IN ('cloud_v1', 'shared_captions_v1')"
        ).fetchall()
        reasons = dict(
            con.execute("SELECT reject_reason, count(*) FROM samples GROUP BY 1").fetchall()
        )
    finally:
        con.close()
    assert shared is not None and shared[0] > 0
    assert dict(funnel) == {
        "cloud_v1": len(cloudy),
        "shared_captions_v1": reasons["shared_caption"],
    }


def test_garbage_share_of_ascii_text_is_the_per_character_rule() -> None:
    """The ASCII fast path (byte deletion) counts exactly what the per-character rule does."""
    import random

    from geoweave.qa import text_quality as tq

    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(chr(rng.randrange(128)) for _ in range(rng.randrange(1, 40)))
        slow = (sum(map(tq.is_garbage, text)) / len(text), any(map(tq.is_control, text)))
        assert tq.garbage_share(text) == slow
    assert tq.garbage_share("a small road | near ~water") == (1 / 26, False)
    assert tq.garbage_share("roof\x1b[31m") == (1 / 9, True)
    assert tq.garbage_share("café ☃") == (1 / 6, False)  # not ASCII: the per-character rule


def test_cloud_texture_over_the_candidates_box_equals_the_whole_tile() -> None:
    """``smooth_where`` computes the 3 x 3 texture only at the bright, white pixels (gathered
    when they are few, over their box when many): at every candidate it says what the
    whole-tile texture says (edges included); the filter ANDs it with the candidates."""
    from geoweave.qa.image_quality import SPARSE_BASE, SPARSE_PER_BOX_PX, smooth_where
    from geoweave.qa.pixels import smooth_at

    rng = np.random.default_rng(0)
    paths = {"gathered": 0, "box": 0}
    for _ in range(2000):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        total = grey_sum(rng.integers(150, 256, (h, w, 3), dtype=np.uint8))
        candidates = rng.random((h, w)) < rng.choice([0.005, 0.05, 0.5])
        candidates[rng.integers(h), rng.integers(w)] = True
        whole = smooth(total, 12)
        fast = smooth_where(total, candidates, 12)
        assert (fast[candidates] == whole[candidates]).all()
        assert not fast[~candidates & ~whole].any()
        ys, xs = np.nonzero(candidates)
        box = (ys.max() - ys.min() + 3) * (xs.max() - xs.min() + 3)
        paths["gathered" if ys.size <= SPARSE_BASE + box // SPARSE_PER_BOX_PX else "box"] += 1
        every = np.nonzero(np.ones((h, w), dtype=bool))
        assert (smooth_at(total, *every, 12) == whole.ravel()).all()
    assert min(paths.values()) > 200, paths  # both ways of computing it were exercised
    assert 0 < int(smooth(total, 12).sum()) < total.size  # the data has smooth and rough pixels


def test_saturated_fraction_fast_path_for_tiles_without_0_or_255() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(1, 255, (64, 64, 3), dtype=np.uint8)
    assert saturated_fraction(rgb, None) == 0.0
    rgb[:16, :, 1] = 255  # a quarter of the green band clipped
    valid = np.ones((64, 64), dtype=bool)
    valid[:, 32:] = False
    assert saturated_fraction(rgb, None) == 0.25
    assert saturated_fraction(rgb, valid) == 0.25
    assert saturated_fraction(rgb[::2, ::2], None) == 0.25  # a strided preview view


def test_image_statistics_of_a_large_tile_come_from_its_preview_computed_once() -> None:
    """Over 128 px every image statistic is taken on every k-th pixel: the grey std of a
    256 px tile is that of its even rows and columns, and the planes and grey sum the filters
    share are computed once and agree with the interleaved definitions."""
    from geoweave.qa.filters import LowVarianceFilter
    from geoweave.qa.pixels import grey_sum_of, planes_of, preview

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    rgb[1::2] = 0  # odd rows black: invisible to the preview
    s = _sample(rgb)
    assert LowVarianceFilter(LowVarianceFilter.Options()).check(s) is None
    assert s.scores["grey_std"] == round(grey_std(grey_sum(rgb[::2, ::2])), 3)
    assert s.scores["grey_std"] != round(grey_std(grey_sum(rgb)), 3)
    planes = planes_of(s)
    assert planes.shape == (3, 128, 128) and planes.flags.c_contiguous
    assert planes_of(s) is planes and grey_sum_of(s) is grey_sum_of(s)
    assert (grey_sum_of(s) == grey_sum(preview(rgb))).all()
    assert SaturationFilter(SaturationOptions()).check(s) is None
    assert s.scores["saturated_fraction"] == round(saturated_fraction(preview(rgb), None), 4)
    s.drop_pixels()
    assert s.pixel_cache == {}


def test_the_validity_preview_is_none_when_all_valid_and_filters_count_only_valid_pixels() -> None:
    """``valid_of``: None for a fully valid tile (the filters skip the mask), else the mask's
    every k-th pixel, contiguous; the cloud and saturation shares of a 256 px tile with a
    nodata half count the valid pixels of its preview only."""
    from geoweave.qa.pixels import valid_of

    assert valid_of(_sample(_city())) is None
    rgb = np.full((256, 256, 3), 120, dtype=np.uint8)
    rgb[:, :64] = (236, 238, 240)  # smooth white cloud over the left quarter
    rgb[:64, 64:, 0] = 255  # the red band clipped over the top quarter, right of the cloud
    valid = np.ones((256, 256), bool)
    valid[:, 128:] = False  # the right half is nodata
    s = _sample(rgb, valid)
    mask = valid_of(s)
    assert mask is not None and mask.shape == (128, 128) and mask.flags.c_contiguous
    assert (mask == valid[::2, ::2]).all() and valid_of(s) is mask
    assert CloudFilter(CloudOptions()).check(s) is None
    # of the 64 valid preview columns, the cloud's 32, less the one beside the grey (textured)
    assert s.scores["cloud_fraction"] == round(31 / 64, 4)
    assert SaturationFilter(SaturationOptions()).check(s) is None
    assert s.scores["saturated_fraction"] == 0.125  # 32 x 32 of the 64 x 128 valid pixels


def test_grey_std_has_no_overflow_or_rounding_error() -> None:
    """Against Python's integers, the largest grey sums included (their squares overflow
    uint32 summed; past 5.6M pixels so does the plain sum)."""
    rng = np.random.default_rng(3)
    for total in (
        rng.integers(0, 766, (128, 128)).astype(np.uint16),
        np.full((128, 128), 765, np.uint16),
        np.tile(np.array([0, 765], np.uint16), (128, 64)),
        np.tile(np.array([765, 764], np.uint16), (2400, 1200)),
        np.array([[7]], np.uint16),
    ):
        xs = total.ravel().tolist()
        n = len(xs)
        exact = math.sqrt(n * sum(x * x for x in xs) - sum(xs) ** 2) / n / 3.0
        assert grey_std(total) == pytest.approx(exact, rel=1e-12, abs=1e-12)
