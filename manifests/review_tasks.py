"""Review tasks for Label Studio: which samples to review, and each one as a task.

A task shows the image (a ``data:image/jpeg;base64`` URI, so a stock Label Studio server
needs no access to the output folder), the sample's captions and QA pairs as editable text
(one line per caption; ``Q: ... || A: ...`` per pair), an accept / reject choice and issue
tags. The generated text is also attached as a *prediction*, so the editor opens pre-filled
and the reviewer edits in place. ``LABEL_CONFIG`` is the project's labelling config.

The sample is stratified: the kept samples matching ``where`` are grouped by the
``stratify_by`` columns, each group gets a share of ``n`` in proportion to its size (at least
one while ``n`` allows), and within a group samples are taken in the order of a seeded hash
of their key: the same seed picks the same samples.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from geoweave.manifests.query import kept_batches, kept_where
from geoweave.manifests.reviews import QA_SEP

ISSUES = ("hallucination", "wrong count", "bad image", "other")
STRATA = {  # --stratify-by names -> SQL over the samples table
    "captioner": "captions[1].captioner",
    "prompt_version": "captions[1].prompt_version",
    "gsd": "gsd_m",
    "source": "source",
    "split": "split",
    "upsampled": "upsampled",
}
LABEL_CONFIG = f"""<View>
  <Header value="$key"/>
  <Image name="image" value="$image" zoom="true"/>
  <Header value="Captions (one per line; edit in place)"/>
  <TextArea name="captions" toName="image" editable="true" rows="4" maxSubmissions="1"/>
  <Header value="Question-answer pairs (Q: ... || A: ...)"/>
  <TextArea name="qa" toName="image" editable="true" rows="4" maxSubmissions="1"/>
  <Choices name="verdict" toName="image" choice="single" required="true">
    <Choice value="accept"/>
    <Choice value="reject"/>
  </Choices>
  <Choices name="issues" toName="image" choice="multiple">
{chr(10).join(f'    <Choice value="{i}"/>' for i in ISSUES)}
  </Choices>
</View>"""


class ReviewError(ValueError):
    """Bad input to a review command (a bad column, an empty selection); exit 2."""


def choose(
    out_dir: Path, n: int, stratify_by: list[str], where: str | None, seed: int = 0
) -> list[dict[str, Any]]:
    """The kept samples to review (key, shard, captions, qa, strata), stratified. Three
    queries, so a corpus of any size is never in memory: the size of each group, then the
    keys in each group's seeded order (only the first of each group kept), then the rows of
    those keys."""
    unknown = sorted(set(stratify_by) - set(STRATA))
    if unknown:
        raise ReviewError(f"--stratify-by {', '.join(unknown)}: choose from {', '.join(STRATA)}")
    strata = ", ".join(f"{STRATA[s]} AS stratum_{s}" for s in stratify_by) or "NULL AS stratum_all"
    names = [f"stratum_{s}" for s in stratify_by] or ["stratum_all"]
    sizes = {
        tuple(r[k] for k in names): int(r["n"])
        for batch in kept_batches(out_dir, f"{strata}, count(*) AS n", where, group_by="ALL")
        for r in batch
    }
    if not sizes:
        raise ReviewError(
            f"no kept sample matches --where {where!r}" if where else "no kept sample"
        )
    share = _shares(sizes, n)
    taken: dict[tuple[Any, ...], int] = dict.fromkeys(sizes, 0)
    picked = []
    draw = "hash(key || ?) AS draw"
    order = f"{', '.join(names)}, draw, key"
    for batch in kept_batches(out_dir, f"key, {strata}, {draw}", where, [str(seed)], order):
        for r in batch:
            g = tuple(r[k] for k in names)
            if taken[g] < share[g]:
                taken[g] += 1
                picked.append(r["key"])
    select = f"key, shard, captions, qa, {strata}, {draw}"
    rows = kept_where(out_dir, select, "key IN (SELECT unnest(?::VARCHAR[]))", [str(seed), picked])
    return sorted(rows, key=lambda r: r["key"])


def _shares(sizes: dict[tuple[Any, ...], int], n: int) -> dict[tuple[Any, ...], int]:
    """Each group's share of ``n``, in proportion to its size, at least one while ``n``
    allows; the rounding is settled on the largest groups."""
    total = sum(sizes.values())
    n = min(n, total)
    share = {g: max(1, round(n * size / total)) for g, size in sizes.items()}
    while sum(share.values()) > n:  # the rounding gave too many: take from the largest
        biggest = max(share, key=lambda g: (share[g], str(g)))
        share[biggest] -= 1
    while sum(share.values()) < n:  # too few: give to the group with most left over
        g = max(sizes, key=lambda g: (sizes[g] - share[g], str(g)))
        share[g] += 1
    return share


def images(
    out_dir: Path, name: str, samples: Iterable[dict[str, Any]]
) -> dict[str, tuple[bytes, bytes | None]]:
    """(JPEG, GeoTIFF or None) of each sample, from its shard's Parquet file when there is
    one, else from its tar."""
    by_shard: dict[int, set[str]] = {}
    for s in samples:
        by_shard.setdefault(int(s["shard"]), set()).add(s["key"])
    out: dict[str, tuple[bytes, bytes | None]] = {}
    for shard, keys in by_shard.items():
        stem = out_dir / f"{name}-{shard:06d}"
        if stem.with_suffix(".parquet").exists():
            out.update(_from_parquet(stem.with_suffix(".parquet"), keys))
        elif stem.with_suffix(".tar").exists():
            out.update(_from_tar(stem.with_suffix(".tar"), keys))
    return out


def _from_parquet(path: Path, keys: set[str]) -> dict[str, tuple[bytes, bytes | None]]:
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT key, jpg, tif FROM read_parquet(?) WHERE list_contains(?, key)",
            [str(path), sorted(keys)],
        ).fetchall()
    finally:
        con.close()
    return {k: (bytes(j), bytes(t) if t is not None else None) for k, j, t in rows}


def _from_tar(path: Path, keys: set[str]) -> dict[str, tuple[bytes, bytes | None]]:
    found: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.rpartition(".")
            f = tar.extractfile(member) if key in keys and ext in ("jpg", "tif") else None
            if f is not None:
                found.setdefault(key, {})[ext] = f.read()
    return {k: (v["jpg"], v.get("tif")) for k, v in found.items() if "jpg" in v}


def qa_line(pair: dict[str, Any]) -> str:
    return f"Q: {pair['question']}{QA_SEP}{pair['answer']}"


def task(sample: dict[str, Any], jpeg: bytes, model_version: str) -> dict[str, Any]:
    """One Label Studio task (data + a prediction holding the generated text)."""
    captions = [c["text"] for c in sample["captions"] or []]
    qa = [qa_line(p) for p in sample["qa"] or []]
    image = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    result = [_text("captions", captions), _text("qa", qa)]
    return {
        "data": {"key": sample["key"], "image": image, "shard": int(sample["shard"]),
                 "generated": json.dumps({"captions": captions, "qa": qa})},
        "predictions": [{"model_version": model_version, "result": [r for r in result if r]}],
    }  # fmt: skip


def _text(name: str, lines: list[str]) -> dict[str, Any] | None:
    if not lines:
        return None
    return {"from_name": name, "to_name": "image", "type": "textarea", "value": {"text": lines}}


def write_tasks(path: Path, tasks: list[dict[str, Any]]) -> None:
    """The tasks as a JSON file for Label Studio's import (through a temporary name)."""
    from geoweave.files import write_text

    buf = io.StringIO()
    json.dump(tasks, buf, ensure_ascii=False)
    write_text(path, buf.getvalue())
