"""The near-duplicate pass (manifests/dedup.py) and the image hashes it reads, on images whose
answer is known (tests/data/dedup_fixture.py), on planted hashes, and through a real build."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geoweave.manifests.dedup import DedupOptions, NearDuplicatesPass, components, masks
from geoweave.protocols import PassInput
from geoweave.qa.image_hash import hamming, image_hashes
from tests.conftest import SF_BAY
from tests.data.dedup_fixture import VARIANTS, rows

IMAGE = SF_BAY / "sf_bay_landsat7_falsecolor_30m.tif"


def _run(tmp_path: Path, data: list[dict[str, Any]], **opts: Any) -> pa.Table:
    table = pa.Table.from_pylist(
        [{k: r[k] for k in ("key", "status", "phash", "dhash")} | {"osm": r.get("osm", [])}
         for r in data],
        schema=pa.schema([("key", pa.string()), ("status", pa.string()), ("phash", pa.int64()),
                          ("dhash", pa.int64()), ("osm", pa.list_(pa.string()))]),
    )  # fmt: skip
    pq.write_table(table, tmp_path / "t-000000.samples.parquet")
    inputs = PassInput(tmp_path, "t", (str(tmp_path / "t-000000.samples.parquet"),))
    return NearDuplicatesPass(DedupOptions(**opts)).run(inputs)


def _pairs_of(table: pa.Table, keys: list[str]) -> set[frozenset[str]]:
    """Every pair the pass put in one group (a marked sample and its kept one, and marked
    samples of one group with each other)."""
    groups: dict[str, set[str]] = {}
    for r in table.to_pylist():
        groups.setdefault(r["duplicate_of"], {r["duplicate_of"]}).add(r["key"])
    return {frozenset(p) for g in groups.values() for p in itertools.combinations(sorted(g), 2)}


def test_pass_finds_every_known_duplicate_and_nothing_else(tmp_path: Path) -> None:
    data = rows(IMAGE)
    assert len(data) == 30 * len(VARIANTS)
    table = _run(tmp_path, data)
    found = _pairs_of(table, [r["key"] for r in data])
    family = {r["key"]: r["family"] for r in data}
    truth = {frozenset(p) for p in itertools.combinations(family, 2)
             if family[min(p)] == family[max(p)]}  # fmt: skip
    precision = len(found & truth) / len(found)
    recall = len(found & truth) / len(truth)
    print(f"dedup fixture: precision {precision:.3f} recall {recall:.3f} of {len(truth)} pairs")
    assert precision == 1.0 and recall >= 0.95, (precision, recall)  # README: the figures
    # one kept per family, the others marked with their distance to it
    assert table.num_rows <= 30 * (len(VARIANTS) - 1)
    hashes = {r["key"]: (r["phash"], r["dhash"]) for r in data}
    for r in table.to_pylist():
        assert family[r["key"]] == family[r["duplicate_of"]]
        mine, kept = hashes[r["key"]], hashes[r["duplicate_of"]]  # a group is a chain of pairs
        assert r["phash_distance"] == hamming(mine[0], kept[0])
        assert r["dhash_distance"] == hamming(mine[1], kept[1])
        assert r["reject_reason"] == "near_duplicate"


def test_a_sidecar_without_label_lists_still_groups(tmp_path: Path) -> None:
    """Rows whose ``osm`` is null (a plugin's sidecar, an older one) count as no labels; the
    smallest key of a group is kept."""
    data = [{"key": k, "status": "kept", "phash": 7, "dhash": 9, "osm": None} for k in "ba"]
    table = _run(tmp_path, data)
    assert table.column("key").to_pylist() == ["b"]
    assert table.column("duplicate_of").to_pylist() == ["a"]


def test_identical_copies_have_distance_zero_and_other_ground_is_far() -> None:
    data = {r["key"]: r for r in rows(IMAGE, families=6)}
    for f in range(6):
        base, again = data[f"f{f:02d}-base"], data[f"f{f:02d}-again"]
        assert hamming(base["phash"], again["phash"]) == 0 == hamming(base["dhash"], again["dhash"])
        for g in range(f + 1, 6):
            other = data[f"f{g:02d}-base"]
            assert (
                hamming(base["phash"], other["phash"]) > 7
                or hamming(base["dhash"], other["dhash"]) > 10
            )


def test_the_kept_sample_of_a_group_is_the_one_with_most_labels(tmp_path: Path) -> None:
    ph, dh = image_hashes(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8))
    data = [{"key": "a", "status": "kept", "phash": ph, "dhash": dh, "osm": []},
            {"key": "b", "status": "kept", "phash": ph ^ 1, "dhash": dh, "osm": ["w1", "w2"]},
            {"key": "c", "status": "kept", "phash": ph ^ 3, "dhash": dh, "osm": ["w1"]},
            {"key": "d", "status": "rejected", "phash": ph, "dhash": dh, "osm": ["w1", "w2", "w3"]}]  # fmt: skip
    table = _run(tmp_path, data)
    assert sorted((r["key"], r["duplicate_of"], r["phash_distance"]) for r in table.to_pylist()) == [
        ("a", "b", 1), ("c", "b", 1)]  # fmt: skip
    flagged = _run(tmp_path, data, action="flag")
    assert flagged.num_rows == 2 and flagged["reject_reason"].null_count == 2


@pytest.mark.parametrize("radius", [0, 3, 5, 7, 11])
def test_multi_index_search_misses_no_pair_within_the_radius(tmp_path: Path, radius: int) -> None:
    """Planted pairs at every distance up to the radius are all found (the pigeonhole bound
    of 4 bands holds), and pairs one bit farther are not."""
    rng = np.random.default_rng(radius)
    data = []
    for i in range(60):
        base = int(rng.integers(-(2**63), 2**63 - 1))
        d = i % (radius + 2)  # 0 .. radius + 1
        flip = 0
        for bit in rng.choice(64, size=d, replace=False).tolist():
            flip |= 1 << bit
        other = ((base ^ flip) + 2**63) % 2**64 - 2**63
        data += [{"key": f"p{i}a", "status": "kept", "phash": base, "dhash": 0},
                 {"key": f"p{i}b", "status": "kept", "phash": other, "dhash": 0}]  # fmt: skip
    table = _run(tmp_path, data, max_phash_distance=radius)
    found = {r["key"][:-1] for r in table.to_pylist()}
    expected = {f"p{i}" for i in range(60) if i % (radius + 2) <= radius}
    assert found == expected


def test_masks_and_components() -> None:
    assert len(masks(16, 0)) == 1 and len(masks(16, 1)) == 17 and len(masks(16, 2)) == 137
    group = components(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert group.tolist() == [0, 0, 0, 3, 4, 4]


@pytest.mark.integration
def test_a_build_of_one_image_listed_twice_keeps_one_of_each_tile(tmp_path: Path) -> None:
    """The same file as two imagery sources: every tile exists twice with the same pixels.
    The pass keeps one of each pair; the manifest, its funnel and the summary say so."""
    import duckdb
    import yaml

    from tests.conftest import run_cli

    recipe = {
        "name": "twice",
        "area": {"bbox": [-122.3143, 37.8040, -122.2908, 37.8176]},
        "imagery": [{"name": n, "path": str(IMAGE), "scale": "none"} for n in ("a", "b")],
        "tiles": {"size_px": 16, "gsd_m": [30]},
        "labels": {"osm": [str(SF_BAY / "West-Oakland.osm.bz2")], "min_pixels": 1},
        "filters": {"min_labels_v1": False, "low_variance_v1": False},
        "questions": {"enabled": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = run_cli("run", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "out"), "--no-progress")
    assert res.returncode == 0, res.stderr
    con = duckdb.connect(str(tmp_path / "out" / "manifest.duckdb"), read_only=True)
    by_source = dict(con.execute(
        "SELECT source, count(*) FILTER (status = 'kept') FROM samples GROUP BY 1").fetchall())  # fmt: skip
    dups = con.execute(
        """SELECT s.key, d.duplicate_of, d.phash_distance, s.rejected_by FROM samples s
        JOIN near_duplicates_v1 d USING (key)"""
    ).fetchall()
    funnel = con.execute(
        "SELECT step, rejected, remaining FROM funnel ORDER BY position"
    ).fetchall()
    same = con.execute(
        "SELECT key, same_ground_as, group_size, sources FROM same_ground_v1"
    ).fetchall()
    con.close()
    assert dups and by_source["a"] + by_source["b"] == len(dups)  # one of each pair kept
    for key, kept, distance, by in dups:  # keys: SOURCE_30m_EPSG_COL_ROW
        assert key.split("_", 1)[1] == kept.split("_", 1)[1] and key[0] != kept[0]
        assert distance == 0 and by == "near_duplicates_v1"
    passes = funnel[[s for s, _, _ in funnel].index("near_duplicates_v1") :]
    assert passes[0] == ("near_duplicates_v1", len(dups), len(dups))  # rejected, remaining
    assert passes[1] == ("same_ground_v1", 0, len(dups))  # reports, rejects nothing
    assert all(n == 0 for _, n, _ in passes[2:])  # the passes after them only flag
    # same_ground_v1 ran after near_duplicates_v1 on the shards' rows: both copies of each place
    assert len(same) == 2 * len(dups) and {s[2] for s in same} == {2}
    assert all(s[3] == ["a", "b"] and s[1].startswith("a_") for s in same)
    assert f"near_duplicates_v1 -{len(dups)}" in res.stdout and "near_duplicate" in res.stdout
    _older_sidecars_still_load(tmp_path / "out")


def _older_sidecars_still_load(out: Path) -> None:
    """A sidecar written before the hash and split columns existed loads with nulls."""
    import duckdb

    from geoweave.manifests.manifest_builder import write_manifest

    sidecar = next(out.glob("twice-*.samples.parquet"))
    old = pq.read_table(sidecar).drop_columns(["phash", "dhash", "split"])
    pq.write_table(old, sidecar)
    write_manifest(out, "twice")
    con = duckdb.connect(str(out / "manifest.duckdb"), read_only=True)
    n, nulls = con.execute(
        "SELECT count(*), count(*) FILTER (phash IS NULL) FROM samples WHERE shard = ?",
        [int(old["shard"][0].as_py())],
    ).fetchone()  # type: ignore[misc]
    con.close()
    assert n == old.num_rows and nulls == n


def test_hashes_from_box_sums_equal_hashes_from_area_means() -> None:
    """The pipeline hashes the shared grey sum; on sides that are multiples of 32 its area
    means are integer box sums. They are the exact means times the box size, so both paths give
    the same bits; a side that does not divide, or a 256 px tile (its preview), hashes too."""
    from geoweave.qa.image_hash import area_mean, box_sums, hashes_of_grey, phash
    from geoweave.qa.pixels import grey_sum, preview

    rng = np.random.default_rng(3)
    for side in (32, 64, 128):
        total = grey_sum(rng.integers(0, 256, (side, side, 3), np.uint8))
        sums = box_sums(total, 32, 32)
        k = (side // 32) ** 2
        np.testing.assert_allclose(sums / k, area_mean(total.astype(np.float64), 32, 32), rtol=1e-6)
        means = area_mean(total.astype(np.float32), 32, 32).astype(np.float32)
        assert hashes_of_grey(total)[0] == phash(means)
    rgb = rng.integers(0, 256, (256, 256, 3), np.uint8)
    assert image_hashes(rgb) == hashes_of_grey(preview(grey_sum(rgb)))
    odd = rng.integers(0, 256, (100, 100, 3), np.uint8)
    assert image_hashes(odd) == hashes_of_grey(grey_sum(odd))
    assert image_hashes(odd) != image_hashes(rng.integers(0, 256, (100, 100, 3), np.uint8))


@pytest.mark.parametrize("candidates", [10, 2_000_000])  # several chunks of probes, or one
def test_near_pairs_equal_every_pair_compared(
    monkeypatch: pytest.MonkeyPatch, candidates: int
) -> None:
    """The banded search returns exactly the pairs an all-pairs comparison finds, each once,
    sorted, with both distances; and nothing for no samples."""
    import geoweave.manifests.dedup as dedup

    monkeypatch.setattr(dedup, "CANDIDATES", candidates)
    rng = np.random.default_rng(7)
    ph = rng.integers(-(2**63), 2**63 - 1, size=3000, dtype=np.int64)
    dh = rng.integers(-(2**63), 2**63 - 1, size=3000, dtype=np.int64)
    for i in range(0, 600, 2):  # planted: pHash 0-9 bits apart, dHash 0-12 bits apart
        ph[i + 1] = ph[i] ^ np.int64(int(rng.integers(0, 2**10)))
        dh[i + 1] = dh[i] ^ np.int64(int(rng.integers(0, 2**12)))
    opts = DedupOptions(max_phash_distance=7, max_dhash_distance=10)
    u, v = ph.view(np.uint64), dh.view(np.uint64)
    dp = np.bitwise_count(u[:, None] ^ u[None, :])
    dd = np.bitwise_count(v[:, None] ^ v[None, :])
    a, b = np.nonzero(np.triu((dp <= 7) & (dd <= 10), k=1))
    got = dedup.near_pairs(ph, dh, opts)
    assert got["a"].to_pylist() == a.tolist() and got["b"].to_pylist() == b.tolist()
    assert got["dp"].to_pylist() == dp[a, b].tolist() and got["dd"].to_pylist() == dd[a, b].tolist()
    assert len(a) > 150  # the planted pairs within both distances, and any chance ones
    assert dedup.near_pairs(ph[:0], dh[:0], opts).num_rows == 0


def test_hashes_of_a_batch_equal_the_hashes_one_at_a_time() -> None:
    """The encode stage hashes a shard's tiles as one stack per shape: the same bits as each
    tile alone, whatever the order and mix of sizes (sides that divide by 32 and not)."""
    from geoweave.qa.image_hash import hashes_of_grey, hashes_of_greys
    from geoweave.qa.pixels import grey_sum

    rng = np.random.default_rng(4)
    sides = rng.choice([20, 32, 100, 128], 120)
    totals = [grey_sum(rng.integers(0, 256, (s, s, 3), np.uint8)) for s in sides]
    batch = hashes_of_greys(totals)
    assert batch == [hashes_of_grey(t) for t in totals]
    assert len(set(batch)) == len(totals)  # random images: no two alike
    assert hashes_of_greys([]) == []
