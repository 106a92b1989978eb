"""The Hugging Face dataset card of a build: ``README.md`` with YAML front matter.

The front matter declares the configs (``configs`` / ``data_files``: the Parquet layout, the
WebDataset layout and the manifest export, one entry per split) and their features
(``dataset_info``), so the Hub viewer and ``datasets.load_dataset`` read the repository as
published; licences, task categories and the size category. The body shows what the manifest
knows: counts per source, GSD and split, region, captions and QA pairs, the filter funnel,
reviews, faithfulness scores, provenance and a citation. Every figure comes from
``card_facts`` (the manifest), none is typed in.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from geoweave.record import OSM_LICENSE

TAGS = ["remote-sensing", "earth-observation", "satellite-imagery", "openstreetmap"]
TAGS += ["geospatial", "image-text", "webdataset", "geoweave"]
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")]
SIZES += [(1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
SIZES += [(1_000_000_000, "100M<n<1B")]


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` samples."""
    return next(
        (label for limit, label in SIZES if n < limit), "n>1T" if n >= 10**12 else "1B<n<10B"
    )


def front_matter(
    facts: dict[str, Any], configs: list[dict[str, Any]], dataset_info: list[dict[str, Any]]
) -> dict[str, Any]:
    """The card's YAML metadata (``configs`` and ``dataset_info`` from the publisher, which
    knows the file layout and the features)."""
    parts = [p for p, _ in facts["licence_parts"]]
    osm = OSM_LICENSE in parts
    meta: dict[str, Any] = {"pretty_name": facts["run"]["name"] if facts["run"] else None}
    if osm and len(parts) == 1:
        meta["license"] = "odbl"
    else:  # imagery licences are free text: "other", named, with the table in the card
        meta["license"] = ["odbl", "other"] if osm else "other"
        meta["license_name"] = "odbl-1.0-and-imagery-licences" if osm else "imagery-licences"
        meta["license_link"] = "LICENSE.md"
    tasks = ["image-to-text", "zero-shot-image-classification"]
    task_ids = ["image-captioning"]
    if facts["qa"]:
        tasks.append("visual-question-answering")
        task_ids.append("visual-question-answering")
    meta |= {"task_categories": tasks, "task_ids": task_ids, "language": ["en"]}
    meta |= {"size_categories": [size_category(facts["kept"])], "tags": TAGS}
    return meta | {"configs": configs, "dataset_info": dataset_info}


def card_text(
    facts: dict[str, Any],
    repo_id: str,
    configs: list[dict[str, Any]],
    dataset_info: list[dict[str, Any]],
    tars: dict[str, int],
) -> str:
    """The whole README.md; ``tars``: how many WebDataset tars each split has."""
    meta = yaml.safe_dump(
        front_matter(facts, configs, dataset_info), sort_keys=False, allow_unicode=True
    )
    body = [_intro(facts, repo_id), _loading(repo_id, configs, tars), _counts(facts)]
    body += [_region(facts), _licences(facts), _text(facts), _funnel(facts)]
    body += [_reviews(facts), _faithfulness(facts), _provenance(facts), _citation(facts, repo_id)]
    return f"---\n{meta}---\n\n" + "\n".join(b for b in body if b)


def licence_text(facts: dict[str, Any]) -> str:
    """LICENSE.md: the licences the samples carry, summed and per sample."""
    text = _licences(facts).replace("## Licences", "# Licences", 1)
    return (
        text + "\nEach sample carries the licences of its imagery and of the labels its text\n"
        "was derived from (column `license`).\n"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v):,}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def _intro(f: dict[str, Any], repo_id: str) -> str:
    name = f["run"]["name"] if f["run"] else repo_id
    splits = ", ".join(f"{s}: {n:,}" for s, n in f["splits"])
    return (
        f"# {name}\n\nA remote-sensing image-text corpus built with geoweave: imagery tiles "
        "joined with OpenStreetMap and land-cover labels, with template or LLM captions and "
        f"question-answer pairs computed from those labels.\n\n**{f['kept']:,} samples** "
        f"({splits}) kept of {f['planned']:,} planned tiles.\n"
    )


def _loading(repo_id: str, configs: list[dict[str, Any]], tars: dict[str, int]) -> str:
    splits = [d["split"] for d in configs[0]["data_files"]]
    first = splits[0]
    return (
        "## Loading\n\nConfig `default`: the kept samples as Parquet, one split each ("
        + ", ".join(f"`{s}`" for s in splits)
        + "; column `jpg` is the image). Config `manifest`: every planned tile with its status"
        " and reject reason (no images). The same samples as WebDataset tars are in "
        "`webdataset/{split}-NNNNN.tar` (`jpg`, `json` with the Parquet row's fields, `txt` "
        "the first caption). `landcover`, `scores` and OSM `tags` are JSON text.\n\n```python\n"
        f'import datasets\n\nds = datasets.load_dataset("{repo_id}", split="{splits[0]}")\n'
        f'tiles = datasets.load_dataset("{repo_id}", "manifest", split="samples")\n\n'
        "import webdataset as wds\n\n"
        f'base = "https://huggingface.co/datasets/{repo_id}/resolve/main/webdataset/"\n'
        f'urls = base + "{first}-{{00000..{tars[first] - 1:05d}}}.tar"\n'
        'pipeline = wds.WebDataset(urls, shardshuffle=False).decode("pil")'
        '.to_tuple("jpg", "txt")\n```\n'
    )


def _counts(f: dict[str, Any]) -> str:
    by_gsd = [[g, n, km2] for g, n, km2 in f["gsd"]]
    sources = [[s, n, a or "", b or ""] for s, n, a, b in f["sources"]]
    return (
        "## Samples\n\n"
        + _table(["source", "samples", "acquired from", "to"], sources)
        + "\n"
        + _table(["GSD (m)", "samples", "ground (km²)"], by_gsd)
        + "\n"
        + _table(["source", "GSD (m)", "split", "samples"], [list(r) for r in f["source_gsd"]])
    )


def _region(f: dict[str, Any]) -> str:
    west, south, east, north, n_crs, snapshot = f["region"]
    if west is None:
        return ""
    box = f"west {west:.4f}, south {south:.4f}, east {east:.4f}, north {north:.4f}"
    osm = f"; OSM snapshot {snapshot}" if snapshot else ""
    return f"## Region\n\nBounding box of the kept tiles (degrees): {box}; {n_crs} tile CRS{osm}.\n"


def _licences(f: dict[str, Any]) -> str:
    summed = _table(["licence", "samples"], [list(r) for r in f["licence_parts"]])
    per = _table(["licences of a sample", "samples"], [list(r) for r in f["licences"]])
    return (
        f"## Licences\n\nText derived from OpenStreetMap: {OSM_LICENSE}. Summed over samples:"
        f"\n\n{summed}\nPer sample:\n\n{per}"
    )


def _text(f: dict[str, Any]) -> str:
    head = ["captioner", "style", "prompt", "captions", "mean words", "min", "max", "unfaithful"]
    out = "## Captions and question-answer pairs\n\n" + _table(
        head, [list(r) for r in f["captions"]]
    )
    qa = [[k, n, v, v / n if n else 0.0] for k, n, v in f["qa"]]
    return out + "\n" + _table(["QA kind", "pairs", "verified", "verified share"], qa)


def _funnel(f: dict[str, Any]) -> str:
    funnel = _table(["step", "rejected", "remaining"], [list(r) for r in f["funnel"]])
    reasons = _table(["reject reason", "tiles"], [list(r) for r in f["reasons"]])
    return f"## Filter funnel\n\nIn the order the steps ran:\n\n{funnel}\n{reasons}"


def _reviews(f: dict[str, Any]) -> str:
    if not f["reviews"] or not f["reviews"][0]:
        return "## Human review\n\nNo sample has been reviewed.\n"
    n, accepted, rejected = f["reviews"]
    stats = _table(["by", "value", "reviewed", "acceptance"], [list(r) for r in f["review_stats"]])
    return (
        f"## Human review\n\n{n:,} samples reviewed in Label Studio: {accepted:,} accepted, "
        f"{rejected:,} rejected (rejected ones are not published).\n\n{stats}"
    )


def _faithfulness(f: dict[str, Any]) -> str:
    mean, scored = f["faithfulness_mean"]
    head = "## Caption faithfulness\n\n`scores.faithfulness`: the worst caption's share of "
    head += "mentions the labels support (faithfulness_v1).\n\n"
    if scored:
        head += f"Mean {mean:.3f} over {scored:,} samples.\n\n"
    return head + _table(["score", "samples"], [list(r) for r in f["faithfulness"]])


def public_paths(value: Any) -> Any:
    """The recipe as the card shows it: every absolute local path cut to its file name (the
    builder's folders are nobody's business on the Hub; URLs stay whole)."""
    if isinstance(value, dict):
        return {k: public_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_paths(v) for v in value]
    if isinstance(value, str) and "://" not in value and Path(value).is_absolute():
        return Path(value).name
    return value


def _provenance(f: dict[str, Any]) -> str:
    run = f["run"]
    if not run:
        return ""
    versions = ", ".join(f"{k} {v}" for k, v in sorted(run["versions"].items()))
    inputs = _table(
        ["input", "sha256"], [[Path(str(k)).name, v] for k, v in sorted(run["inputs"].items())]
    )
    recipe = yaml.safe_dump(public_paths(run["recipe"]), sort_keys=False, allow_unicode=True)
    n_shards, complete, nbytes = f["shards"]
    return (
        f"## Provenance\n\nRun `{run['run_id']}` ({f['runs']} run(s) in the manifest), "
        f"finished {_date(run['finished'])}; {complete} of {n_shards} build shards complete, "
        f"{nbytes:,} bytes. Versions: {versions}.\n\n{inputs}\n<details><summary>Recipe"
        f"</summary>\n\n```yaml\n{recipe}```\n\n</details>\n"
    )


def _date(ts: float | None) -> str:
    if ts is None:
        return "unknown"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _citation(f: dict[str, Any], repo_id: str) -> str:
    name = f["run"]["name"] if f["run"] else repo_id.split("/")[-1]
    year = _date(f["run"]["finished"] if f["run"] else None)[:4]
    key = "".join(ch if ch.isalnum() else "_" for ch in name) + f"_{year}"
    title = json.dumps(f"{name}: a remote-sensing image-text corpus")[1:-1]
    return (
        "## Citation\n\n```bibtex\n"
        f"@misc{{{key},\n  title = {{{title}}},\n  year = {{{year}}},\n"
        f"  howpublished = {{\\url{{https://huggingface.co/datasets/{repo_id}}}}},\n"
        f"  note = {{Built with geoweave; text derived from OpenStreetMap ({OSM_LICENSE})}}\n"
        "}\n```\n"
    )
