"""The ``build-dataset`` command: run a recipe, plan it, or query a build's manifest."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from geoweave.builders.errors import FatalError

EPILOG = """examples:
  build-dataset run examples/sf-bay.yaml --output out/sf-bay
  build-dataset plan examples/sf-bay.yaml
  build-dataset query out/sf-bay "SELECT status, count(*) FROM samples GROUP BY ALL"
"""


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    flags = {
        "output": "output.dir",
        "ray_address": "execution.ray_address",
        "num_cpus": "execution.num_cpus",
        "samples_per_shard": "output.samples_per_shard",
        "seed": "seed",
    }
    for attr, field in flags.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[field] = str(Path(value).resolve()) if attr == "output" else value
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise FatalError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set tiles.size_px=32")
        field, raw = item.split("=", 1)
        out[field.strip()] = yaml.safe_load(raw)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="build-dataset",
        description="Build remote-sensing image-text datasets: imagery + OSM -> WebDataset/Parquet + DuckDB.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("run", "build the dataset of a recipe (resumes an earlier run)"),
                       ("plan", "check a recipe and print its tile plan without building")):  # fmt: skip
        r = sub.add_parser(name, help=text, description=text)
        r.add_argument("recipe", help="recipe YAML file")
        r.add_argument("--output", "-o", help="output folder (recipe: output.dir)")
        r.add_argument("--samples-per-shard", type=int, help="tiles per shard")
        r.add_argument("--seed", type=int, help="seed for template choice")
        r.add_argument(
            "--set", action="append", metavar="FIELD=VALUE", help="override any recipe field"
        )
        if name == "run":
            r.add_argument(
                "--ray-address", help="existing Ray cluster (default: start a local one)"
            )
            r.add_argument("--num-cpus", type=int, help="local Ray CPUs (default: all)")
            r.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = sub.add_parser("query", help="run read-only SQL on a build's manifest")
    q.add_argument("out", help="output folder of a build (or its manifest.duckdb)")
    q.add_argument("sql", help='e.g. "SELECT reject_reason, count(*) FROM rejects GROUP BY 1"')
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build-dataset: %(message)s", stream=sys.stderr)
    try:
        if args.command == "query":
            from geoweave.manifests.query import format_rows, run_query

            cols, rows = run_query(args.out, args.sql)
            format_rows(cols, rows, args.format)
            return 0
        from geoweave.builders.recipe import load_recipe

        recipe = load_recipe(args.recipe, _overrides(args))
        if args.command == "plan":
            return _plan(recipe)
        from geoweave.builders.build import build
        from geoweave.manifests.summary import print_summary

        summary = build(recipe, progress=not args.no_progress)
        print_summary(summary)
        return 1 if summary["shards_failed"] else 0
    except FatalError as e:
        print(f"build-dataset: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0


def _plan(recipe: Any) -> int:
    from collections import Counter

    from geoweave.builders.build import prepare

    _, plan, _ = prepare(recipe, recipe.output.dir)
    by = Counter((t.source, t.gsd_m, t.plan_reject or "planned") for t in plan.tiles)
    for (source, gsd, state), n in sorted(by.items()):
        print(f"{source:20s} {gsd:8g} m  {state:22s} {n:7d} tiles")
    print(
        f"{len(plan.tiles)} tiles in {plan.num_shards} shards of {recipe.output.samples_per_shard}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
