"""The daemon on a real library's bad days: a disk inside its folder unmounted (its files kept), a RAW
thumbnail from its checked descriptor (libtiff and LibRaw silent), and a full disk under the home:
`/health` and `/status` say "degraded" and why, and the run that failed is retried with backoff, so
the files that arrived are indexed once there is room again."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_helpers import OTHERS, Daemon, photos, wait_for
from PIL import Image

from mediasearch.library.client import DaemonError


def _wait_ready(daemon: Daemon, timeout: float = 240) -> None:
    """`Daemon.wait_ready`, asking again when /health is slow to answer (this test runs on busy machines)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            daemon.wait_ready(timeout=max(1.0, deadline - time.monotonic()))
            return
        except DaemonError:
            if time.monotonic() > deadline:
                raise


def test_dng_thumbnail_and_a_full_disk_through_the_daemon(
    tmp_path: Path, small_disk: Path, make_dng: Callable[..., Path]
) -> None:
    from mediasearch.store.base import MIN_FREE_BYTES

    lib = tmp_path / "lib"
    photos(lib / "base", OTHERS[:2], seed=1)
    dng = make_dng(lib / "raw" / "shot.dng", Image.new("RGB", (320, 240), (220, 30, 30)))
    ext = lib / "ext"  # a disk mounted inside the watched folder
    ext.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ext)], check=True)
    (on_disk,) = photos(ext, [("green", "circle")], seed=4)
    daemon = Daemon(small_disk / "home", str(lib), "--debounce", "1", "--rescan-every", "off")
    try:
        _wait_ready(daemon)
        daemon.wait_idle(timeout=120)
        assert str(on_disk) in daemon.listing(ext)
        subprocess.run(["umount", str(ext)], check=True)
        assert daemon.client is not None
        report = daemon.client.index([str(lib)], {})  # as the watcher's or a rescan's run
        assert report["removed"] == 0 and any("mount point is empty" in e["error"] for e in report["errors"])
        assert str(on_disk) in daemon.listing(ext)
        assert daemon.client is not None
        info = daemon.client.info
        url = f"{info.url}/thumbnail?size=64&path={urllib.parse.quote(str(dng))}"
        request = urllib.request.Request(url, headers={"X-Mediasearch-Token": info.token})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200 and response.read(2) == b"\xff\xd8"
        assert "TIFF" not in daemon.output.read_text()  # libtiff and LibRaw print nothing of their own

        filler = small_disk / "filler"
        with open(filler, "wb") as fh:  # less than a write needs, more than opening the store does
            fh.truncate(max(0, shutil.disk_usage(small_disk).free - MIN_FREE_BYTES // 2))
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        (arrived,) = photos(lib / "new", [("red", "circle")], seed=3)

        def health() -> dict[str, Any]:
            try:
                return daemon.client.health() if daemon.client else {}
            except DaemonError:  # a slow answer on a loaded machine: ask again
                return {}

        def degraded() -> bool:
            answer = health()
            return answer.get("state") == "degraded" and "is full" in answer.get("message", "")

        wait_for(degraded, 60, "the daemon says it is degraded: the disk is full")
        status = daemon.status()["daemon"]
        assert status["state"] == "degraded" and "is full" in status["fault"]["reason"]
        filler.unlink()

        def indexed() -> bool:
            return str(arrived) in daemon.listing(lib / "new") and health().get("state") == "ready"

        wait_for(indexed, 60, "the run that failed is retried once there is room, and the daemon is ready")
    finally:
        daemon.stop()
        subprocess.run(["umount", "-l", str(ext)], capture_output=True, check=False)
