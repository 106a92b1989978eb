"""The gallery's images, read from the shard files: the Parquet shard's image column when the
build wrote one (only the rows asked for), else the WebDataset tar's ``{key}.jpg`` member."""

from __future__ import annotations

import logging
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger("geoweave")

IMAGE_COLUMN = "jpg"
MIME = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png"}


class _Item(Protocol):
    key: str
    image: bytes | None


def mime_type(data: bytes) -> str | None:
    """The image type of ``data`` by its magic bytes (JPEG or PNG), else None."""
    return next((m for magic, m in MIME.items() if data.startswith(magic)), None)


def gallery_images(out_dir: Path, items: list[Any], files: dict[str, list[Path]]) -> None:
    """Set ``item.image`` of each item from its shard's files (``files``: key -> the shard's
    file paths). A shard that cannot be read leaves its items without an image (a warning
    names it): the report shows what it can."""
    by_shard: dict[tuple[Path, ...], list[_Item]] = defaultdict(list)
    for item in items:
        by_shard[tuple(files.get(item.key, []))].append(item)
    for paths, group in by_shard.items():
        try:
            found = _read_images(paths, {i.key for i in group})
        except (OSError, tarfile.TarError, ValueError) as e:
            log.warning("report: could not read the images of %s: %s", paths, e)
            continue
        for item in group:
            data = found.get(item.key)
            item.image = data if data and mime_type(data) else None


def _read_images(paths: tuple[Path, ...], keys: set[str]) -> dict[str, bytes]:
    parquet = [p for p in paths if p.name.endswith(".parquet") and ".samples." not in p.name]
    tars = [p for p in paths if p.suffix == ".tar"]
    if parquet and parquet[0].exists():
        return _from_parquet(parquet[0], keys)
    if tars and tars[0].exists():
        return _from_tar(tars[0], keys)
    return {}


def _from_parquet(path: Path, keys: set[str]) -> dict[str, bytes]:
    """The images of ``keys`` in a Parquet shard: each row group's keys read first, its
    images only where a key matches (1 ms a shard, against 2 ms for a filtered dataset)."""
    shard = pq.ParquetFile(path)
    if IMAGE_COLUMN not in shard.schema_arrow.names:
        return {}
    wanted, out = pa.array(sorted(keys), pa.string()), {}
    for group in range(shard.num_row_groups):
        names = shard.read_row_group(group, columns=["key"])["key"]
        mask = pc.is_in(names, value_set=wanted)
        if not pc.any(mask).as_py():
            continue
        images = shard.read_row_group(group, columns=[IMAGE_COLUMN])[IMAGE_COLUMN].filter(mask)
        rows = zip(names.filter(mask).to_pylist(), images.to_pylist(), strict=True)
        out.update({k: v for k, v in rows if v})
    return out


def _from_tar(path: Path, keys: set[str]) -> dict[str, bytes]:
    wanted = {f"{k}.{IMAGE_COLUMN}": k for k in keys}
    out: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key = wanted.get(member.name)
            f = tar.extractfile(member) if key and member.isfile() else None
            if key and f is not None:
                out[key] = f.read()
                if len(out) == len(wanted):
                    break
    return out
