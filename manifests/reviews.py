"""Human reviews read back from Label Studio, stored beside the build and applied in the
manifest.

``parse`` takes tasks in Label Studio's own JSON export format (a downloaded export file, or
the tasks the API lists) and returns one review per sample: its latest annotation that was not
cancelled; the verdict, the issue tags, and the edited text (the lines of the captions and
QA text areas; unchanged lines count as not edited). ``store`` merges them into
``_reviews/reviews.parquet`` by sample key (a newer annotation replaces an older one; the
same annotation again changes nothing, so a re-import is idempotent). The manifest then loads
that file as table ``reviews`` and applies it (``apply``): a rejected sample gets status
``rejected_by_review``; edited captions and QA pairs replace the generated ones in
``samples`` (captioner / generator ``review``), while ``reviews`` keeps the generated text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from geoweave.files import atomic_path

REVIEWS_DIR, REVIEWS = "_reviews", "reviews.parquet"
QA_SEP = " || A: "  # a QA pair in the review text area: "Q: question || A: answer"
SCHEMA = pa.schema(
    [("key", pa.string()), ("project", pa.int64()), ("task_id", pa.int64())]
    + [("annotation_id", pa.int64()), ("updated_at", pa.string()), ("reviewer", pa.string())]
    + [("verdict", pa.string()), ("issues", pa.list_(pa.string()))]
    + [("captions", pa.list_(pa.string())), ("qa", pa.list_(pa.string()))]
    + [("captions_edited", pa.bool_()), ("qa_edited", pa.bool_())]
    + [("generated_captions", pa.list_(pa.string())), ("generated_qa", pa.list_(pa.string()))]
)


def _lines(result: list[dict[str, Any]], name: str) -> list[str] | None:
    for r in result:
        if r.get("from_name") == name and isinstance(r.get("value"), dict):
            texts = r["value"].get("text") or []
            return [ln.strip() for t in texts for ln in str(t).splitlines() if ln.strip()]
    return None


def _choices(result: list[dict[str, Any]], name: str) -> list[str]:
    for r in result:
        if r.get("from_name") == name and isinstance(r.get("value"), dict):
            return [str(c) for c in r["value"].get("choices") or []]
    return []


def _latest(annotations: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [a for a in annotations or [] if not a.get("was_cancelled")]
    return max(done, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0), default=None)


def parse(tasks: list[dict[str, Any]], project: int | None) -> list[dict[str, Any]]:
    """One review per reviewed sample, from tasks in Label Studio's JSON export format."""
    out = []
    for t in tasks:
        data, ann = t.get("data") or {}, _latest(t.get("annotations") or [])
        if ann is None or not data.get("key"):
            continue
        generated = json.loads(data.get("generated") or "{}")
        result = ann.get("result") or []
        caps, qa = _lines(result, "captions"), _lines(result, "qa")
        verdicts = _choices(result, "verdict")
        verdict = verdicts[0] if verdicts else None
        reviewer = ann.get("completed_by")
        out.append({
            "key": data["key"], "project": project or t.get("project"), "task_id": t.get("id"),
            "annotation_id": ann.get("id"), "updated_at": str(ann.get("updated_at") or ""),
            "reviewer": str(reviewer.get("email") if isinstance(reviewer, dict) else reviewer),
            "verdict": verdict, "issues": _choices(result, "issues"),
            "captions": caps if caps is not None else generated.get("captions", []),
            "qa": qa if qa is not None else generated.get("qa", []),
            "captions_edited": caps is not None and caps != generated.get("captions", []),
            "qa_edited": qa is not None and qa != generated.get("qa", []),
            "generated_captions": generated.get("captions", []),
            "generated_qa": generated.get("qa", []),
        })  # fmt: skip
    return out


def store(out_dir: Path, reviews: list[dict[str, Any]]) -> tuple[int, int]:
    """Merge into ``_reviews/reviews.parquet``; returns (new or changed, unchanged)."""
    path = out_dir / REVIEWS_DIR / REVIEWS
    old = {r["key"]: r for r in pq.read_table(path).to_pylist()} if path.exists() else {}
    changed = 0
    for r in reviews:
        before = old.get(r["key"])
        if before is None or (
            (before["updated_at"], before["annotation_id"] or 0)
            < (r["updated_at"], r["annotation_id"] or 0)
            and before != r
        ):
            old[r["key"]] = r
            changed += 1
    path.parent.mkdir(exist_ok=True)
    table = pa.Table.from_pylist([old[k] for k in sorted(old)], schema=SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return changed, len(reviews) - changed


def _qa_pair(line: str) -> tuple[str, str]:
    q, _, a = line.removeprefix("Q:").partition(QA_SEP)
    return q.strip(), a.strip()


def apply(con: duckdb.DuckDBPyConnection, out_dir: Path) -> None:
    """Load ``reviews`` into the manifest and apply it to ``samples`` (see the module doc)."""
    path = out_dir / REVIEWS_DIR / REVIEWS
    if not path.exists():
        return
    con.execute("CREATE TABLE reviews AS SELECT * FROM read_parquet(?)", [str(path)])
    con.execute(REVIEW_ORIGIN)  # what was reviewed, before the edits replace it
    (was_kept,) = con.execute(
        """SELECT count(*) FROM samples s JOIN reviews r USING (key)
        WHERE r.verdict = 'reject' AND s.status = 'kept'"""
    ).fetchone() or (0,)
    con.execute(
        """UPDATE samples SET status = 'rejected_by_review', rejected_by = 'review',
            reject_reason = 'review: ' || coalesce(array_to_string(r.issues, ', '), '')
        FROM reviews r WHERE samples.key = r.key AND r.verdict = 'reject'"""
    )
    _funnel_row(con, int(was_kept))
    edited = con.execute(
        """SELECT s.key, s.captions, s.qa, r.captions, r.qa, r.captions_edited, r.qa_edited
        FROM samples s JOIN reviews r USING (key) WHERE r.captions_edited OR r.qa_edited"""
    ).fetchall()
    if edited:
        _replace_text(con, edited)
    con.execute(REVIEW_STATS)


def _funnel_row(con: duckdb.DuckDBPyConnection, rejected: int) -> None:
    """The funnel's last step: the kept samples the reviewers rejected."""
    con.execute(
        """INSERT INTO funnel SELECT (SELECT coalesce(max(position) + 1, 0) FROM funnel),
            'review', ?, (SELECT count(*) FROM samples WHERE status = 'kept')""",
        [rejected],
    )


def _replace_text(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> None:
    new = []
    for key, caps, qa, r_caps, r_qa, caps_edited, qa_edited in rows:
        if caps_edited:
            before = {c["text"]: c for c in caps or []}
            caps = [before.get(t) or {"text": t, "style": "reviewed", "captioner": "review",
                                      "prompt_version": "label_studio", "note": "edited in review"}
                    for t in r_caps]  # fmt: skip
        if qa_edited:
            old = {(p["question"], p["answer"]): p for p in qa or []}
            qa = [old.get(pair) or {"question": pair[0], "answer": pair[1], "kind": "review",
                                    "verified": True, "generator": "review"}
                  for pair in map(_qa_pair, r_qa)]  # fmt: skip
        new.append({"key": key, "captions": caps, "qa": qa})
    schema = con.execute("SELECT key, captions, qa FROM samples LIMIT 0").to_arrow_table().schema
    con.register("edited", pa.Table.from_pylist(new, schema=schema))
    con.execute(
        "UPDATE samples SET captions = e.captions, qa = e.qa, caption = e.captions[1].text "
        "FROM edited e WHERE samples.key = e.key"
    )
    con.unregister("edited")


REVIEW_ORIGIN = """
CREATE TABLE review_origin AS
SELECT key, captions[1].captioner AS captioner, captions[1].prompt_version AS prompt_version,
       scores['faithfulness'] AS faithfulness
FROM samples WHERE key IN (SELECT key FROM reviews)
"""
REVIEW_STATS = """
CREATE VIEW review_stats AS
WITH r AS (
    SELECT r.verdict, s.gsd_m, g.captioner, g.prompt_version,
           floor(g.faithfulness * 4) / 4 AS faithfulness_bucket
    FROM reviews r JOIN samples s USING (key) LEFT JOIN review_origin g USING (key)
)
SELECT 'captioner' AS dimension, captioner AS value, count(*) AS reviewed,
       avg((verdict = 'accept')::INT) AS acceptance FROM r GROUP BY ALL
UNION ALL SELECT 'prompt_version', prompt_version, count(*), avg((verdict = 'accept')::INT)
    FROM r GROUP BY ALL
UNION ALL SELECT 'gsd_m', gsd_m::VARCHAR, count(*), avg((verdict = 'accept')::INT) FROM r GROUP BY ALL
UNION ALL SELECT 'faithfulness', faithfulness_bucket::VARCHAR, count(*),
    avg((verdict = 'accept')::INT) FROM r GROUP BY ALL
"""
