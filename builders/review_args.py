"""The arguments of ``build-dataset review export|import``, apart from the command itself: the
CLI builds its parser on every call, and the review code imports the manifest, report and
Label Studio modules (about 0.5 s), which no other command should pay for."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    r = sub.add_parser("review", help="human review in Label Studio: export samples, import back")
    rs = r.add_subparsers(dest="review_command", required=True)
    e = rs.add_parser("export", help="send a stratified sample of kept samples for review")
    e.add_argument("out", help="output folder of a build")
    e.add_argument("--sample", type=int, default=100, help="how many samples (default 100)")
    e.add_argument("--stratify-by", default="", help="e.g. captioner,gsd (see README)")
    e.add_argument("--where", help='an SQL condition on the samples table, e.g. "gsd_m = 30"')
    e.add_argument("--seed", type=int, default=0, help="which samples the draw picks")
    e.add_argument("--title", help="the Label Studio project's title")
    e.add_argument("--to-file", help="write the tasks to this JSON file instead of a server")
    i = rs.add_parser("import", help="read the annotations back and apply them")
    i.add_argument("out", help="output folder of a build")
    i.add_argument("--from-file", help="a Label Studio JSON export file instead of the server")
    i.add_argument("--project", type=int, help="project id (default: the last export's)")
    for p in (e, i):
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
