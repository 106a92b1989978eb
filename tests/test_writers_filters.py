"""Shard writers (write, read back, completion marker, abort) and per-sample filters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from geoweave.builders.encode import encode_jpeg
from geoweave.builders.outdir import remove_temporaries
from geoweave.builders.recipe_files import load_recipe
from geoweave.builders.shard import apply_filters
from geoweave.builders.writers import ShardWriter, is_complete
from geoweave.qa.filters import LowVarianceFilter, MinLabelsFilter, NodataFilter
from geoweave.qa.pixels import grey_std, grey_sum
from geoweave.record import Sample
from geoweave.tile import Tile


def _sample(i: int, kept: bool = True) -> Sample:
    s = Sample(Tile(f"img_10m_32610_{i}_0", "img", "EPSG:32610", 10.0, 8, i, 0, shard=3))
    s.rgb = np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    s.jpeg = encode_jpeg(s.rgb, 90)
    s.osm = [
        {"id": f"w{i}", "source": "osm", "tags": {"building": "yes"}, "geom_type": "polygon"}
        | {"coverage_px": 5.0, "coverage_frac": 0.1, "area_m2": 500.0, "length_m": 0.0}
        | {"position": "centre", "clipped": False}
    ]
    s.captions = [
        {"text": f"cap {i}", "style": "template", "captioner": "x", "prompt_version": "1"}
    ]
    s.scores = {"nodata_fraction": 0.0}
    if not kept:
        s.reject("too_few_labels", by="min_labels_v1")
    return s


def test_shard_round_trip_and_completion_marker(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, "ds", 3, ["webdataset", "parquet"])
    for i in range(4):
        w.write(_sample(i, kept=i != 2))
    assert not is_complete(tmp_path, "ds", 3)
    stats = w.finish(["plan", "read", "min_labels_v1", "encode"], {"seconds": 1.0})
    assert is_complete(tmp_path, "ds", 3)
    assert stats.tiles == 4 and stats.kept == 3 and stats.reject_reasons == {"too_few_labels": 1}
    assert stats.funnel == {"plan": 0, "read": 0, "min_labels_v1": 1, "encode": 0}
    assert stats.seconds == 1.0
    assert json.loads((tmp_path / "ds-000003.stats.json").read_text())["funnel"] == stats.funnel
    assert sorted(stats.files) == [
        "ds-000003.parquet",
        "ds-000003.samples.parquet",
        "ds-000003.tar",
    ]
    tar = list(wds.WebDataset(str(tmp_path / "ds-000003.tar"), shardshuffle=False))
    assert [s["__key__"] for s in tar] == [
        "img_10m_32610_0_0",
        "img_10m_32610_1_0",
        "img_10m_32610_3_0",
    ]
    assert tar[0]["txt"] == b"cap 0" and json.loads(tar[0]["json"])["osm"][0]["id"] == "w0"
    side = pq.read_table(tmp_path / "ds-000003.samples.parquet").to_pylist()
    assert [r["status"] for r in side] == ["kept", "kept", "rejected", "kept"]
    assert side[0]["osm"][0]["tags"] == [("building", "yes")]
    assert side[3]["transform"] == list(_sample(3).tile.transform)[:6]  # the Affine's six
    par = pq.read_table(tmp_path / "ds-000003.parquet")
    assert par.num_rows == 3 and par.column("jpg")[0].as_py()[:2] == b"\xff\xd8"
    assert not list(tmp_path.glob("*.tmp-*"))
    (tmp_path / "ds-000003.tar").write_bytes(b"truncated")  # a damaged file is not complete
    assert not is_complete(tmp_path, "ds", 3)


def test_the_parquet_shard_equals_its_kept_rows_converted_afresh(tmp_path: Path) -> None:
    """The Parquet shard's table is made from the sidecar's (its kept rows, maps as JSON
    text): equal to converting the kept rows with their images from scratch, including a
    GeoTIFF column, land cover, scores with NaN and labels with several tags."""
    from geoweave.record import PARQUET_SCHEMA, to_table

    w = ShardWriter(tmp_path, "ds", 3, ["parquet"])
    samples = [_sample(i, kept=i % 3 != 1) for i in range(7)]
    for i, s in enumerate(samples):
        s.landcover = {"tree_cover": 0.25 * (i % 4), "built_up": 1 - 0.25 * (i % 4)}
        s.scores |= {"grey_std": float("nan") if i == 5 else 3.5 + i}
        s.osm[0]["tags"] = {"highway": "primary", "name": f'Rue "{i}" ü'}
        s.bands_tif = b"II*\x00" + bytes([i]) if i % 2 else None
        w.write(s)
    w.finish(["plan"], {})
    got = pq.read_table(tmp_path / "ds-000003.parquet")
    kept = [s for s in samples if s.kept]
    want = to_table(
        [s.metadata() | {"jpg": s.jpeg, "tif": s.bands_tif} for s in kept], PARQUET_SCHEMA
    )
    assert got.num_rows == len(kept) == 5 and got.schema == PARQUET_SCHEMA
    assert got.to_pylist() == want.to_pylist()
    row = got.to_pylist()[2]  # the fourth sample: kept, with a GeoTIFF
    assert json.loads(row["landcover"]) == {"built_up": 0.25, "tree_cover": 0.75}
    assert json.loads(row["osm"][0]["tags"])["name"] == 'Rue "3" ü' and row["tif"] is not None
    assert json.loads(got.to_pylist()[3]["scores"])["grey_std"] is None  # NaN: null in JSON


def test_abort_and_leftovers_leave_nothing(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, "ds", 0, ["webdataset", "parquet"])
    w.write(_sample(0))
    assert list(tmp_path.glob("*.tmp-*"))
    w.abort()
    assert not list(tmp_path.iterdir())
    (tmp_path / "ds-000001.tar.tmp-deadbeef").write_bytes(b"x")
    (tmp_path / "report.html.tmp-0badf00d").write_bytes(b"x")  # a report killed mid-write
    theirs = ["other-000001.tar.tmp-deadbeef", "notes.tmp-1", "ds-000001.tar.tmp-x", "a.tmp-ab"]
    for name in theirs:  # not temporaries of this build: kept
        (tmp_path / name).write_bytes(b"x")
    assert remove_temporaries(tmp_path, "ds") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


@pytest.mark.parametrize(
    ("nodata", "std", "n_labels", "reason"),
    [
        (0.0, 40.0, 2, None),
        (0.5, 40.0, 2, "too_much_nodata"),
        (1.0, 40.0, 2, "no_imagery_data"),
        (0.0, 0.0, 2, "blank_or_low_variance"),
        (0.0, 40.0, 0, "too_few_labels"),
    ],
)
def test_filters_reject_with_reason_and_record_scores(
    nodata: float, std: float, n_labels: int, reason: str | None
) -> None:
    s = _sample(0)
    rng = np.random.default_rng(0)
    s.rgb = np.clip(128 + rng.normal(0, std, (8, 8, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    s.nodata_fraction = nodata
    s.osm = s.osm * n_labels
    filters = [
        NodataFilter(NodataFilter.Options(max_fraction=0.2)),
        LowVarianceFilter(LowVarianceFilter.Options(min_std=2.0)),
        MinLabelsFilter(MinLabelsFilter.Options(min_labels=1)),
    ]
    apply_filters([s], filters)
    assert s.reject_reason == reason
    assert (
        s.rejected_by
        == {
            None: None,
            "too_much_nodata": "nodata_v1",
            "no_imagery_data": "nodata_v1",
            "blank_or_low_variance": "low_variance_v1",
            "too_few_labels": "min_labels_v1",
        }[reason]
    )
    assert s.status == ("kept" if reason is None else "rejected")
    assert set(s.scores) == {"nodata_fraction", "grey_std", "n_labels"}
    assert s.scores["n_labels"] == n_labels


def test_grey_std_equals_the_float_grey_image_std() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert grey_std(grey_sum(rgb)) == pytest.approx(float(np.std(rgb.mean(axis=2))), rel=1e-12)


def test_recipe_filters_merge_over_the_defaults_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: t\nimagery: [{name: i, path: x.tif}]\n"
        "filters: {low_variance_v1: false, min_labels_v1: {min_labels: 3}}\n"
    )
    r = load_recipe(path)
    assert list(r.filters) == [
        "nodata_v1", "min_labels_v1", "cloud_v1", "saturation_v1", "faithfulness_v1",
        "qa_check_v1", "caption_length_v1", "repetition_v1", "garbage_text_v1",
    ]  # fmt: skip
    assert r.filters["min_labels_v1"] == {"min_labels": 3}
    assert r.filters["nodata_v1"] == {"max_fraction": 0.2}  # defaults filled in


def test_tar_shard_is_a_plain_tar_for_tarfile_and_webdataset(tmp_path: Path) -> None:
    import tarfile

    from geoweave.builders.tar import TarShard

    long_key = "a" * 120  # over ustar's 100-byte name field: a PAX path record
    members = {"k1.jpg": b"\xff\xd8jpeg", "k1.txt": "café".encode(), f"{long_key}.json": b"{}"}
    members["k2.txt"] = b""
    path = tmp_path / "t.tar"
    tar = TarShard(path, mtime=1_700_000_000)
    for name, data in members.items():
        tar.add(name, data)
    tar.close()
    assert path.stat().st_size % 512 == 0
    with tarfile.open(path) as tf:
        got = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
        assert {m.mtime for m in tf.getmembers()} == {1_700_000_000}
    assert got == members
    samples = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["k1", long_key, "k2"]
    assert samples[0]["txt"] == "café".encode()


def test_tar_header_is_byte_for_byte_what_tarfile_writes() -> None:
    import tarfile

    from geoweave.builders.tar import _header

    for name, size, kind in ((b"k1.jpg", 4257, b"0"), (b"x" * 100, 0, b"0"), (b"./@P", 77, b"x")):
        info = tarfile.TarInfo(name.decode())
        info.size, info.mtime, info.mode, info.type = size, 1_700_000_000, 0o644, kind
        info.uname = info.gname = ""
        assert _header(name, size, 1_700_000_000, kind) == info.tobuf(tarfile.USTAR_FORMAT)
    with pytest.raises(ValueError, match="ustar limit"):
        _header(b"big.tif", 8**11, 0)
