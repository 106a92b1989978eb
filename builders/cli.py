"""The ``build-dataset`` command: run a recipe, plan it, query a build's manifest, verify it."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from geoweave.errors import BuildFailed, FatalError

EPILOG = """examples:
  build-dataset run examples/sf-bay.yaml --output out/sf-bay
  build-dataset plan examples/sf-bay.yaml
  build-dataset query out/sf-bay "SELECT status, count(*) FROM samples GROUP BY ALL"
  build-dataset verify out/sf-bay
  build-dataset review export out/sf-bay --sample 50 --stratify-by gsd
  build-dataset review import out/sf-bay
  build-dataset export out/sf-bay --where "split = 'test'" --to out/sf-bay-test
  build-dataset report out/sf-bay
  build-dataset publish out/sf-bay --repo-id my-org/sf-bay --dry-run
"""


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    flags = {
        "output": "output.dir",
        "ray_address": "execution.ray_address",
        "num_cpus": "execution.num_cpus",
        "samples_per_shard": "output.samples_per_shard",
        "seed": "seed",
        "verify_inputs": "execution.verify_inputs",
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
        r.add_argument(
            "--verify-inputs", action="store_const", const=True, help="hash each OSM file "
            "whole to check its cached label index (default: size, mtime, sampled blocks)",
        )  # fmt: skip
        if name == "run":
            r.add_argument(
                "--ray-address", help="existing Ray cluster (default: start a local one)"
            )
            r.add_argument("--num-cpus", type=int, help="local Ray CPUs (default: all)")
            r.add_argument("--no-progress", action="store_true", help="no progress bar")
            r.add_argument(
                "--verify",
                action="store_true",
                help="check every complete shard's checksums before skipping it (default: "
                "size and mtime, checksum when the mtime changed)",
            )
    for sp in sub.choices.values():
        sp.add_argument(
            "--debug", action="store_true", help="show the traceback of an unexpected error"
        )
    v = sub.add_parser("verify", help="check every shard file of a build against its checksum")
    v.add_argument("--debug", action="store_true", help="show the traceback of an error")
    v.add_argument("out", help="output folder of a build")
    q = sub.add_parser("query", help="run read-only SQL on a build's manifest")
    q.add_argument("--debug", action="store_true", help="show the traceback of an error")
    q.add_argument("out", help="output folder of a build (or its manifest.duckdb)")
    q.add_argument("sql", help='e.g. "SELECT reject_reason, count(*) FROM rejects GROUP BY 1"')
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    x = sub.add_parser("export", help="write the kept samples matching --where as a new build")
    x.add_argument("--debug", action="store_true", help="show the traceback of an error")
    x.add_argument("out", help="output folder of a build")
    x.add_argument("--where", help="an SQL condition on the samples table, e.g. \"split = 'test'\"")
    x.add_argument("--to", required=True, help="a new (or empty) folder for the subset")
    x.add_argument("--samples-per-shard", type=int, help="default: the build's")
    rp = sub.add_parser("report", help="write OUT/report.html: map, gallery, plots, funnel")
    rp.add_argument("--debug", action="store_true", help="show the traceback of an error")
    rp.add_argument("out", help="output folder of a build")
    rp.add_argument("--seed", type=int, default=0, help="draws the gallery's samples (0)")
    rp.add_argument("--gallery", type=int, default=24, help="samples in the gallery (24)")
    from geoweave.builders.review_args import add_parser

    add_parser(sub)
    from geoweave.builders.hub import add_parser as add_publish_parser

    add_publish_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code: 0 done, 1 a failed build, 2 bad input."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build-dataset: %(message)s", stream=sys.stderr)
    try:
        return _command(args)
    except FatalError as e:
        _error(str(e), args.debug)
        return 2
    except BuildFailed as e:  # a full disk: complete shards are kept, a rerun resumes
        _error(str(e), args.debug)
        return 1
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        _error("interrupted; complete shards are kept, rerun to resume", args.debug)
        return 1
    except Exception as e:
        hint = "" if args.debug else " (run again with --debug for the traceback)"
        _error(f"the build failed: {type(e).__name__}: {e}{hint}", args.debug)
        return 1


def entry() -> None:
    """The ``build-dataset`` console script: ``main()``, then the exit functions (Ray's,
    logging's), and an exit that skips the interpreter's teardown. Freeing every module and
    object of a build's driver (Ray's core worker, Arrow, DuckDB) took 0.3-0.4 s after the
    work was done; every file is closed and renamed by then."""
    code = main()
    _flush()  # what the build printed is out even if an exit function ends the process
    atexit._run_exitfuncs()
    _flush()
    os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()


def _error(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(f"build-dataset: error: {message}", file=sys.stderr)


def _command(args: argparse.Namespace) -> int:
    if args.command == "query":
        from geoweave.manifests.query import format_rows, run_query

        cols, rows = run_query(args.out, args.sql)
        format_rows(cols, rows, args.format)
        return 0
    if args.command == "export":
        from geoweave.builders.export import export_subset
        from geoweave.manifests.summary import print_summary

        print_summary(
            export_subset(Path(args.out), args.where, Path(args.to), args.samples_per_shard)
        )
        return 0
    if args.command == "publish":
        from geoweave.builders.hub import publish_command

        return publish_command(args)
    if args.command == "report":
        from geoweave.manifests.report import write_report

        print(write_report(Path(args.out), args.seed, args.gallery))
        return 0
    if args.command == "review":
        from geoweave.builders.review_cli import review_command

        return review_command(args)
    if args.command == "verify":
        from geoweave.builders.verify import verify_command

        return verify_command(Path(args.out))
    from geoweave.builders.recipe_files import load_recipe

    recipe = load_recipe(args.recipe, _overrides(args))
    if args.command == "plan":
        return _plan(recipe)
    from geoweave.builders.build import build
    from geoweave.manifests.summary import print_summary

    summary = build(recipe, progress=not args.no_progress, verify=args.verify)
    print_summary(summary)
    return 1 if summary["shards_failed"] else 0


def _plan(recipe: Any) -> int:
    from geoweave.builders.prepare import checked_prepare

    _, plan, _ = checked_prepare(recipe.check_components(), recipe.output.dir)
    for (source, gsd, state), n in sorted(plan.counts.items()):
        print(f"{source:20s} {gsd:8g} m  {state:22s} {n:7d} tiles")
    print(f"{plan.num_tiles} tiles in {plan.num_shards} shards of {plan.per_shard}")
    return 0


if __name__ == "__main__":
    entry()
