"""The Hugging Face side of ``publish``: the ``datasets`` features of the published files and
the upload with ``huggingface_hub``.

The token comes from ``HF_TOKEN`` or the login cache (``hf auth login``), read by
``huggingface_hub`` itself; geoweave never takes it from a recipe, never prints it, and strips
it from any error it reports. ``HF_ENDPOINT`` points the client at another Hub (the tests'
stand-in). Both packages are the ``hub`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from geoweave.errors import BuildFailed, FatalError

log = logging.getLogger("geoweave")

EXTRA = "publishing needs the hub extra: pip install 'geoweave[hub]' (huggingface_hub, datasets)"
# Files of an earlier publish in these folders that this one does not write are deleted in the
# same commit, so a smaller rebuild leaves no stale shard behind (README.md, LICENSE.md are
# overwritten; anything else in the repository is left alone).
OWN_FOLDERS = ("data", "webdataset", "manifest")
REPO_ID = r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise FatalError(EXTRA) from None
    return datasets


def meta_features() -> Any:
    """The metadata columns (the Parquet shard's, maps as JSON text) as ``datasets`` features."""
    from geoweave.builders.publish import META_SCHEMA

    return _datasets().Features.from_arrow_schema(META_SCHEMA)


def parquet_features(has_tif: bool) -> Any:
    ds = _datasets()
    extra = {"tif": ds.Value("binary")} if has_tif else {}
    return ds.Features({**meta_features(), "jpg": ds.Image(), **extra})


def check_repo_id(repo_id: str) -> None:
    import re

    if not re.fullmatch(REPO_ID, repo_id) or ".." in repo_id:
        raise FatalError(f"--repo-id {repo_id!r}: expected ORG/NAME, e.g. my-org/sf-bay-rs")


def _token() -> str:
    try:
        from huggingface_hub import get_token
    except ImportError:
        raise FatalError(EXTRA) from None
    token = get_token()
    if not token:
        raise FatalError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (never in a recipe)"
        )
    return str(token)


def upload(folder: Path, repo_id: str, private: bool) -> tuple[str, str]:
    """Create the dataset repository if needed and commit ``folder`` to it in one commit
    (``create_commit``: its files are uploaded first, LFS or Xet, then committed at once);
    returns (the repository URL, the commit id)."""
    token = _token()
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.create_commit(repo_id, _operations(api, folder, repo_id), repo_type="dataset",
                                 commit_message="Publish with geoweave")  # fmt: skip
    except KeyboardInterrupt:
        raise BuildFailed(
            f"the upload to {repo_id} was interrupted before its commit: the repository is "
            "unchanged; rerun to finish (files already uploaded are not sent again)"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise BuildFailed(_failure(repo_id, e, token)) from None
    return str(url), str(info.oid)


def _operations(api: Any, folder: Path, repo_id: str) -> list[Any]:
    """One commit's operations: every file of ``folder``, and the deletion of the files of an
    earlier publish it does not write. (``upload_folder`` would do the same in one commit
    without ``hf_xet``, but with it commits in batches of up to 256 files as they upload: a
    large corpus would be visible half-published, its card not matching its files.)"""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    local = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    remote = api.list_repo_files(repo_id, repo_type="dataset")
    stale = [p for p in remote if p.split("/")[0] in OWN_FOLDERS and p not in set(local)]
    return [CommitOperationDelete(path_in_repo=p) for p in stale] + [
        CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in local
    ]


def _failure(repo_id: str, e: BaseException, token: str) -> str:
    response = getattr(e, "response", None)
    if response is not None:
        said = (getattr(e, "server_message", None) or "").strip().splitlines()
        what = f"HTTP {response.status_code} from {response.request.method} {response.request.url.path}"
        what += f" ({said[0]})" if said else ""
    else:
        what = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return (
        f"the upload to {repo_id} failed: {what.replace(token, '***')}; nothing half-done is "
        "visible on the Hub (one commit at the end); rerun to retry (files already uploaded "
        "are not sent again)"
    )


def publish_command(args: argparse.Namespace) -> int:
    """``build-dataset publish``: assemble ``OUT/_publish``, then upload it unless --dry-run."""
    from geoweave.builders.publish import assemble

    check_repo_id(args.repo_id)
    for name in ("httpx", "httpx2", "huggingface_hub"):  # one line per request at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    if not args.dry_run:
        _token()  # before any work: a missing token is bad input
    t0 = time.perf_counter()
    try:
        folder = assemble(Path(args.out), args.repo_id)
    except KeyboardInterrupt:
        raise BuildFailed(
            "interrupted while assembling OUT/_publish: nothing was uploaded"
        ) from None
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    log.info(
        "assembled %d files (%s bytes) in %.1f s", len(files), f"{size:,}", time.perf_counter() - t0
    )
    if args.dry_run:
        print(folder)
        return 0
    t1 = time.perf_counter()
    url, commit = upload(folder, args.repo_id, args.private)
    log.info("uploaded in %.1f s", time.perf_counter() - t1)
    print(f"published {len(files)} files ({size:,} bytes) to {url} at commit {commit[:12]}")
    return 0


def add_parser(sub: Any) -> None:
    """The ``publish`` subcommand's arguments."""
    p = sub.add_parser("publish", help="upload a build to the Hugging Face Hub with its card")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("out", help="output folder of a build")
    p.add_argument("--repo-id", required=True, help="the dataset repository, ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument(
        "--dry-run", action="store_true",
        help="write the folder that would be uploaded to OUT/_publish and print its path",
    )  # fmt: skip
