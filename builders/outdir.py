"""The output folder: is it ours, who holds it, and which leftovers may be deleted.

- A folder is a geoweave build when it holds ``plan.parquet`` (the first file a build writes).
  A non-empty folder without one is someone else's and is refused before any work.
- One build per folder: the driver holds an exclusive lock (``fcntl.flock``) on
  ``OUT/.geoweave.lock`` for the whole run. Linux maps ``flock`` on NFS to the server's byte
  range locks, so runs on two machines of a cluster exclude each other too. The kernel (or the
  NFS lock manager) releases it when the process dies, so a killed run leaves no stale lock: the
  next run takes it over and says whose it was. The file holds the holder's host, pid and start
  time for the message; it is read and written through the locked descriptor only (closing
  another descriptor of the file would drop a POSIX lock on NFS).
- Only temporary files the build itself names are deleted (``SHARD_TMP``, ``RUN_TMP``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from geoweave.errors import FatalError
from geoweave.files import TMP_MARK

log = logging.getLogger("geoweave")

LOCK_FILE = ".geoweave.lock"
PLAN_FILE = "plan.parquet"
_TAG = re.escape(TMP_MARK) + r"(?:[0-9a-f]{8}|failed)"
_SHARD_SUFFIX = r"-\d{6,}\.(?:tar|parquet|samples\.parquet|stats\.json)"
_FOLDER_FILES = r"(?:manifest\.duckdb|plan\.parquet|report\.html)"


def own_temporary(name: str, build: str) -> bool:
    """Whether ``name`` (a file in the output folder) is a temporary file of build ``build``:
    a shard file, the plan, the manifest (and DuckDB's ``.wal`` of it) or the report under a
    temp suffix."""
    shard = re.escape(build) + _SHARD_SUFFIX
    return re.fullmatch(rf"(?:{shard}|{_FOLDER_FILES}){_TAG}(?:\.wal)?", name) is not None


def remove_temporaries(out_dir: Path, build: str, keep: str | None = None) -> int:
    """Delete leftovers of this build's interrupted attempts (and only those), except names
    starting with ``keep`` (this run's own manifest in the making); returns how many."""
    n = 0
    for folder in (out_dir, out_dir / "_runs", out_dir / "_passes"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            name = p.name
            ours = own_temporary(name, build) if folder == out_dir else TMP_MARK in name
            if not ours or (keep and name.startswith(keep)) or not p.is_file():
                continue
            p.unlink(missing_ok=True)
            n += 1
    return n


def check_output_dir(out_dir: Path, build: str) -> None:
    """Refuse an output path that is a file, or a non-empty folder that is not a build (the
    leftovers of this build killed before its plan was in place do not count)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FatalError(
            f"the output path {out_dir} is a file, not a folder: choose another --output"
        )
    if not out_dir.is_dir() or (out_dir / PLAN_FILE).exists():
        return
    foreign = sorted(
        p.name
        for p in out_dir.iterdir()
        if not p.name.startswith(".") and not own_temporary(p.name, build)
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FatalError(
            f"the output folder {out_dir} is not empty and is not a geoweave build (no "
            f"{PLAN_FILE}; it holds {shown}): choose an empty or new --output folder"
        )


def make_output_dir(out_dir: Path) -> None:
    """Create the output folder, or say clearly why it cannot be (bad input: exit 2)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".geoweave-write-test{TMP_MARK}{os.getpid():08x}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise FatalError(
            f"cannot write to the output folder {out_dir}: {e.strerror or e}; choose a "
            "writable --output folder"
        ) from None


class OutputLock:
    """The exclusive lock on an output folder, held for the whole run (a context manager)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                raise FatalError(self._held_message(holder)) from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                log.warning(
                    "%s: this file system does not support locks; two runs into this folder "
                    "are not kept apart",
                    self.path.parent,
                )
                return
            raise
        previous = _holder(fd)
        if previous:
            log.info(
                "took over the lock of %s from %s (no longer running)",
                self.path.parent,
                _describe(previous),
            )
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        me["command"] = " ".join(sys.argv[:4])[:200]
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # the holder's details go; the unlocked file stays
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _held_message(self, holder: dict[str, Any] | None) -> str:
        who = _describe(holder) if holder else "another process"
        return (
            f"{self.path.parent} is being built by {who} (lock {self.path}): wait for that run "
            "to finish or stop it, or choose another --output folder"
        )


def _holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("since", 0))))
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {since})"
