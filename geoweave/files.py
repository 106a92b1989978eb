"""Durable file writes: a temporary name in the same folder, fsync, rename, fsync the folder.

A reader (a resumed run, the manifest, ``query``) then sees a file whole or not at all, after
a SIGKILL and after a power cut. Temporary names end in ``.tmp-XXXXXXXX`` (``TMP_MARK``): the
build removes leftovers of its own killed attempts by that mark.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def temp_name(path: Path, tag: str | None = None) -> Path:
    """``path`` with a temporary suffix (``tag``, else a new random one)."""
    return path.with_name(f"{path.name}{tag or TMP_MARK + uuid.uuid4().hex[:8]}")


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(tmp: Path, final: Path, sync_dir: bool = True) -> None:
    """fsync ``tmp``, rename it to ``final``, then fsync the folder (so the rename itself is
    on disk; a writer that renames several files may sync the folder once, after the last)."""
    fsync_path(tmp)
    os.replace(tmp, final)
    if sync_dir:
        fsync_path(final.parent)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path to write ``final`` through: renamed into place durably when the block
    ends, deleted if it raises."""
    tmp = temp_name(final)
    try:
        yield tmp
        replace_durably(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text(final: Path, text: str) -> None:
    write_bytes(final, text.encode())


def file_checksum(path: Path) -> str:
    """``sha256:HEX`` of a file's content (about 2 GB/s here; a shard file is in the page
    cache when it has just been written)."""
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


CRASH_ENV = "GEOWEAVE_CRASH_AT"  # e.g. "shard:3": the reliability tests' crash points
DRIVER_ENV = "GEOWEAVE_DRIVER_PID"  # set by the driver; Ray workers and forks inherit it


def crash_point(name: str, shard: int | None = None) -> None:
    """Die here with SIGKILL, the driver first, when ``$GEOWEAVE_CRASH_AT`` names this point
    (``NAME`` or ``NAME:SHARD``). The reliability tests kill a build at each step this way;
    unset (always, outside those tests) it costs one environment lookup."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted or wanted.split(":")[0] != name:
        return
    if ":" in wanted and shard is not None and int(wanted.split(":")[1]) != shard:
        return
    import signal

    driver = int(os.environ.get(DRIVER_ENV) or 0)
    if driver and driver != os.getpid():
        with contextlib.suppress(OSError):
            os.kill(driver, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def default_cache_root() -> Path:
    """geoweave's cache folder (label indexes, LLM responses): ``$GEOWEAVE_CACHE``, else
    ``$XDG_CACHE_HOME/geoweave``, else ``~/.cache/geoweave``."""
    if os.environ.get("GEOWEAVE_CACHE"):
        return Path(os.environ["GEOWEAVE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "geoweave"
