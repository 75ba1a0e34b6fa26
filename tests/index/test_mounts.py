"""A disk mounted inside an indexed folder: unmounted, its files are kept and reported, not removed;
mounted again, nothing is re-encoded. With an injected mount table, and with a real tmpfs where the
test may mount (root, as in CI)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.lab.shapes import render, save_image
from mediasearch.media import mounts as mount_table


def _photos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        save_image(render("red", "circle", rng=np.random.default_rng(i)), folder / name, "png")


def _indexed(cli: Any) -> set[str]:
    return {h["path"] for h in cli.json("query", "a red circle", "--limit", "50")}


def _check_unmount_keeps(
    cli: Any, lib: Path, ext: Path, unmount: Callable[[], None], mount: Callable[[], None]
) -> None:
    first = cli.json("index", str(lib))
    assert first["added"] == 3
    unmount()
    run = cli.json("index", str(lib))
    assert (run["removed"], run["failed"]) == (0, 0), run
    (note,) = [e for e in run["errors"] if e["path"] == str(ext)]
    assert "mount point is " in note["error"] and "2 files" in note["error"]
    assert _indexed(cli) == {str(lib / "home.png"), str(ext / "a.png"), str(ext / "b.png")}
    mount()
    again = cli.json("index", str(lib))
    assert (again["unchanged"], again["added"], again["removed"]) == (3, 0, 0)
    unmount()
    cli.json("forget", str(ext))  # gone for good: forgotten, and no longer protected
    assert _indexed(cli) == {str(lib / "home.png")}


@pytest.mark.parametrize("mode", ["empty", "missing"])
def test_an_unmounted_disk_inside_a_root_keeps_its_files(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    lib, ext, parked = tmp_path / "lib", tmp_path / "lib" / "ext", tmp_path / "parked"
    _photos(lib, ["home.png"])
    _photos(ext, ["a.png", "b.png"])
    mounted = {"now": True}
    monkeypatch.setattr(mount_table, "mount_points", lambda: ["/", str(ext)] if mounted["now"] else ["/"])

    def unmount() -> None:
        shutil.move(str(ext), str(parked))
        if mode == "empty":
            ext.mkdir()
        mounted["now"] = False

    def mount() -> None:
        if ext.exists():
            ext.rmdir()
        shutil.move(str(parked), str(ext))
        mounted["now"] = True

    _check_unmount_keeps(cli, lib, ext, unmount, mount)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Mounts a small tmpfs (unmounted after); skips where this process may not mount."""
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(probe)], capture_output=True, check=False
    ).returncode:
        pytest.skip("this process may not mount a tmpfs (not root)")
    subprocess.run(["umount", str(probe)], check=True)
    mounted: list[Path] = []

    def mount(where: Path) -> None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], check=True)
        mounted.append(where)

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def test_a_real_tmpfs_unmounted_inside_a_root(tmp_path: Path, cli: Any, tmpfs: Callable[[Path], None]) -> None:
    lib, ext, copy = tmp_path / "lib", tmp_path / "lib" / "ext", tmp_path / "copy"
    _photos(lib, ["home.png"])
    ext.mkdir()
    tmpfs(ext)
    _photos(ext, ["a.png", "b.png"])
    shutil.copytree(ext, copy, copy_function=shutil.copy2)  # what the disk holds, to mount it again

    def unmount() -> None:
        subprocess.run(["umount", str(ext)], check=True)

    def mount() -> None:
        tmpfs(ext)
        shutil.copytree(copy, ext, copy_function=shutil.copy2, dirs_exist_ok=True)

    assert str(ext) in mount_table.mount_points()
    _check_unmount_keeps(cli, lib, ext, unmount, mount)
