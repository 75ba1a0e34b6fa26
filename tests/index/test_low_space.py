"""Free space: an unchanged re-index writes nothing, so it is not refused for want of the space a write
needs; a run that must write is refused with one line; what is indexed stays readable. A read-only
home is one line too."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.lab.shapes import render, save_image


def test_an_unchanged_reindex_is_not_refused_for_low_space(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediasearch.store import base as store_module

    lib = tmp_path / "lib"
    lib.mkdir()
    save_image(render("red", "circle", rng=np.random.default_rng(0)), lib / "a.png", "png")
    assert cli.json("index", str(lib))["added"] == 1
    real = shutil.disk_usage
    low = store_module.MIN_FREE_BYTES // 2  # less than a write needs
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda p: real(p)._replace(free=low))
    assert cli.json("index", str(lib))["unchanged"] == 1
    save_image(render("blue", "star", rng=np.random.default_rng(1)), lib / "b.png", "png")
    refused = cli("index", str(lib), ok=False)
    assert refused.exit_code == 1 and "is full" in refused.stderr
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda p: real(p)._replace(free=0))
    assert cli.json("status")["files"] == 1  # what is indexed stays readable on a full disk


def test_a_read_only_home_is_one_true_line(tmp_path: Path, cli: Any) -> None:
    """A home on a read-only file system: every command says so (not a lock file, not a download)."""
    import subprocess

    lib, home, ro = tmp_path / "lib", cli.home, tmp_path / "ro"
    lib.mkdir()
    save_image(render("red", "circle", rng=np.random.default_rng(0)), lib / "a.png", "png")
    cli.json("index", str(lib))
    ro.mkdir()
    bind = subprocess.run(["mount", "--bind", str(home), str(ro)], capture_output=True, check=False)
    if bind.returncode != 0:
        pytest.skip("this process may not bind-mount (not root)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        readonly = type(cli)(ro)
        for args in (("status",), ("query", "a red circle"), ("index", str(lib))):
            result = readonly(*args, ok=False)
            assert result.exit_code == 1, args
            assert "read-only file system" in result.stderr and "writable" in result.stderr, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    finally:
        subprocess.run(["umount", str(ro)], check=False)
