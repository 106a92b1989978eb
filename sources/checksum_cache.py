"""Input checksums kept across builds: a file is hashed once while its size, mtime and inode
hold (``<cache>/checksums.json``).

A build records the sha256 of every input file in its run record. Hashing is a pass over the
whole file (1.25 CPU-seconds for the benchmark's 1.8 GB mosaic, about 7 for a 10 GB COG), so
a rebuild or a resume over the same inputs takes each checksum from here instead. A change in
place that keeps the size, the mtime and the inode is not seen, as with the OSM index's
fingerprint: ``--verify-inputs`` hashes every file whole again. The file is a cache: a lost or
unreadable one only means hashing again, and two builds saving at once each keep their own
entries (read, merge, write under a temporary name, rename).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from geoweave.files import temp_name

CHECKSUM_CACHE = "checksums.json"  # in geoweave's cache folder
MAX_ENTRIES = 10_000  # the newest kept


def identity(st: os.stat_result) -> dict[str, int]:
    """What must hold for a cached checksum to stand."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


class ChecksumCache:
    """sha256 by absolute path and file identity (``identity``), loaded once, saved on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries = _load(path)
        self._new: dict[str, dict[str, Any]] = {}

    def get(self, path: Path, st: os.stat_result) -> str | None:
        """The cached sha256 of ``path`` if its identity is ``st``'s, else None."""
        entry = self._entries.get(str(path.resolve()))
        if entry is None or {k: entry.get(k) for k in ("size", "mtime_ns", "ino")} != identity(st):
            return None
        sha = entry.get("sha256")
        return sha if isinstance(sha, str) else None

    def put(self, path: Path, st: os.stat_result, sha256: str) -> None:
        """Note a checksum taken of ``path`` as ``st`` found it (saved by ``save``)."""
        self._new[str(path.resolve())] = {**identity(st), "sha256": sha256}

    def save(self) -> None:
        """Merge the new entries into the file as it is now and replace it; an error (a
        read-only cache folder) leaves the cache as it was: it is only a cache."""
        if not self._new:
            return
        entries = {k: v for k, v in _load(self.path).items() if k not in self._new}
        entries.update(self._new)  # the newest last
        tmp = temp_name(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(dict(list(entries.items())[-MAX_ENTRIES:])))
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self._entries.update(self._new)
        self._new = {}


def _load(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
