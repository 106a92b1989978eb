"""``build-dataset review export|import``: the Label Studio round trip of a build."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from geoweave.builders.outdir import OutputLock
from geoweave.errors import FatalError
from geoweave.manifests import label_studio, reviews
from geoweave.manifests.manifest import finished_run
from geoweave.manifests.manifest_builder import write_manifest
from geoweave.manifests.report import write_report_or_warn
from geoweave.manifests.review_tasks import LABEL_CONFIG, ReviewError, choose, images, task


def review_command(args: argparse.Namespace) -> int:
    out_dir = Path(args.out).resolve()
    name = str(finished_run(out_dir)["name"])
    if args.review_command == "export":
        return _export(args, out_dir, name)
    return _import(args, out_dir, name)


def _export(args: argparse.Namespace, out_dir: Path, name: str) -> int:
    strata = [s.strip() for s in args.stratify_by.split(",") if s.strip()]
    try:
        chosen = choose(out_dir, args.sample, strata, args.where, args.seed)
    except ReviewError as e:
        raise FatalError(str(e)) from None
    pictures = images(out_dir, name, chosen)
    missing = [s["key"] for s in chosen if s["key"] not in pictures]
    if missing:
        raise FatalError(
            f"no image in the shard files for {missing[:3]}: run `verify` on {out_dir}"
        )
    tasks = [task(s, pictures[s["key"]][0], model_version=f"geoweave:{name}") for s in chosen]
    if args.to_file:
        path = Path(args.to_file)
        from geoweave.manifests.review_tasks import write_tasks

        write_tasks(path, tasks)
        path.with_suffix(".xml").write_text(LABEL_CONFIG)
        print(f"wrote {len(tasks)} tasks to {path} and the labelling config to "
              f"{path.with_suffix('.xml')}: create a project with that config, import the file")  # fmt: skip
        return 0
    title = args.title or f"geoweave {name} review"
    project = label_studio.create_project(title, LABEL_CONFIG, tasks)
    url = os.environ.get(label_studio.URL_ENV, "").rstrip("/")
    label_studio.record_export(
        out_dir, {"project": project, "url": url, "keys": [s["key"] for s in chosen]}
    )
    print(f"{len(tasks)} tasks in project {project}: {url}/projects/{project}")
    return 0


def _import(args: argparse.Namespace, out_dir: Path, name: str) -> int:
    if args.from_file:
        try:
            data = json.loads(Path(args.from_file).read_text())
        except (OSError, ValueError) as e:
            raise FatalError(
                f"--from-file {args.from_file}: not a Label Studio JSON export ({e})"
            ) from None
        if not isinstance(data, list):
            raise FatalError(f"--from-file {args.from_file}: expected a JSON list of tasks")
        found = reviews.parse(data, args.project)
    else:
        project = args.project or _last_project(out_dir)
        found = reviews.parse(label_studio.fetch_tasks(project), project)
    with OutputLock(out_dir):
        changed, same = reviews.store(out_dir, found)
        write_manifest(out_dir, name)
        write_report_or_warn(out_dir)  # the report shows the reviews and the new funnel
    _print_stats(out_dir, changed, same)
    return 0


def _last_project(out_dir: Path) -> int:
    done = label_studio.exports(out_dir)
    if not done:
        raise FatalError(f"no review export recorded in {out_dir}: give --project or --from-file")
    return int(done[-1]["project"])


def _print_stats(out_dir: Path, changed: int, same: int) -> None:
    from geoweave.manifests.query import run_query

    _, rows = run_query(
        out_dir,
        "SELECT count(*), count(*) FILTER (verdict = 'accept'), count(*) FILTER "
        "(verdict = 'reject'), count(*) FILTER (captions_edited), count(*) FILTER (qa_edited) "
        "FROM reviews",
    )
    n, accepted, rejected, caps, qa = rows[0]
    print(f"imported {changed} new or changed reviews ({same} unchanged)")
    print(f"  reviewed  {n}: {accepted} accepted, {rejected} rejected (status rejected_by_review)")
    print(f"  edited    captions of {caps} samples, QA of {qa}")
    _, stats = run_query(out_dir, "FROM review_stats WHERE dimension = 'captioner' ORDER BY value")
    for _by, value, count, acceptance in stats:
        print(f"  accepted  {acceptance:.0%} of {count} by {value}")
