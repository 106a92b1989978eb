"""A disk that fills up mid-build: a real (tiny) tmpfs as the output file system."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, manifest_keys, run_cli

pytestmark = pytest.mark.integration
RECIPE = str(REPO / "examples/sf-bay.yaml")
SMALL = ["--set", "tiles.gsd_m=[60]", "--samples-per-shard", "8", "--set", "execution.num_cpus=1"]


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block (needs root or CAP_SYS_ADMIN: mounting is the
    only way to get a real ENOSPC or EROFS from the kernel without touching a real disk)."""
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs."""
    with tmpfs(tmp_path / "disk", "size=4m") as disk:
        yield disk


def test_full_disk_stops_cleanly_and_a_rerun_after_freeing_space_completes(
    tmp_path: Path, small_disk: Path
) -> None:
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (4 * 1024 * 1024 - 700 * 1024))  # ~700 KB left: a few shards
    out = small_disk / "out"
    res = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert res.returncode == 1, (res.stdout, res.stderr[-3000:])
    assert "is full (No space left on device)" in res.stderr, res.stderr[-3000:]
    assert "Free space and rerun to resume" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list(out.glob("*.tmp-*")) and not list(out.glob("_*/*.tmp-*"))
    complete_before = len(list(out.glob("*.stats.json")))

    filler.unlink()
    rerun = run_cli("run", RECIPE, "-o", str(out), "--no-progress", *SMALL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    whole = tmp_path / "whole"
    assert run_cli("run", RECIPE, "-o", str(whole), "--no-progress", *SMALL).returncode == 0
    assert manifest_keys(out) == manifest_keys(whole)
    assert len(list(out.glob("*.stats.json"))) >= complete_before


def test_read_only_output_file_system_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    from tests.conftest import run_main

    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        res = run_main("run", RECIPE, "-o", str(ro / "out"), "--no-progress", *SMALL)
    assert res.returncode == 2, res.stderr
    assert f"cannot write to the output folder {ro / 'out'}" in res.stderr
    assert "Read-only file system" in res.stderr and "Traceback" not in res.stderr


PASS_PLUGIN = """
import errno

from geoweave.registry import CORPUS_PASSES


@CORPUS_PASSES.add("fills_the_disk_test")
class FillsTheDisk:
    name = "fills_the_disk_test"

    def __init__(self, _opts=None):
        pass

    def run(self, inputs):
        raise OSError(errno.ENOSPC, "No space left on device")
"""


def test_a_disk_that_fills_during_the_corpus_passes_leaves_no_temporary_manifest(
    tmp_path: Path,
) -> None:
    """The shards are complete and the manifest is half-loaded when a pass hits a full disk:
    the build stops with the disk-full message and removes the manifest's temporary files."""
    import yaml

    (tmp_path / "fills.py").write_text(PASS_PLUGIN)
    recipe = yaml.safe_load(Path(RECIPE).read_text())
    recipe["imagery"][0]["path"] = str(Path(RECIPE).parent / recipe["imagery"][0]["path"])
    recipe["labels"]["osm"] = [str(Path(RECIPE).parent / p) for p in recipe["labels"]["osm"]]
    recipe |= {"plugins": [str(tmp_path / "fills.py")], "passes": {"fills_the_disk_test": {}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    res = run_cli("run", str(tmp_path / "r.yaml"), "-o", str(out), "--no-progress", *SMALL)
    assert res.returncode == 1 and "No space left on device" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not list(out.glob("*.tmp-*")) and not list(out.glob("_*/*.tmp-*"))
    assert list(out.glob("*.stats.json"))  # the shards stay complete for a rerun
