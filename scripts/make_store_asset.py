"""Write a small home (Edge store, demo model) and the answers of a few queries over it, as a test asset.

The committed asset ``tests/store/assets/store_v1.tar.gz`` was written by this script at commit fd75632
(the last release whose collections carry no schema version: schema 1); ``tests/store/test_upgrade.py``
opens it with today's code, which upgrades it, and checks that the queries give the same answers. Run it
again only to add an asset for a newer schema (it writes whatever the current code writes):

    python scripts/make_store_asset.py tests/store/assets/store_vN.tar.gz
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from mediasearch.lab.shapes import render, save_image, write_shapes_video

QUERIES = ("a red circle", "a blue star", "a photo of a green square", "a yellow triangle")
IMAGES = (("red", "circle"), ("blue", "star"), ("green", "square"), ("yellow", "triangle"), ("purple", "circle"))


def cli(home: Path, *args: str) -> object:
    """Run the mediasearch command on ``home`` with the demo model; its --json answer."""
    cmd = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", "demo", *args, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def write_media(folder: Path) -> None:
    rng = np.random.default_rng(7)
    for i, (colour, shape) in enumerate(IMAGES):
        save_image(render(colour, shape, rng=rng, size=(96, 72)), folder / f"{i}_{colour}_{shape}.jpg", "jpg")
    segments = [("orange", "star"), ("blue", "square")]
    write_shapes_video(folder / "clip.mp4", segments, seconds_per_segment=4.0, size=(96, 72), seed=3)


def main(out: Path) -> None:
    # The media sit in a fixed place (recorded in the payloads); the test needs only the store.
    base = Path(tempfile.mkdtemp(prefix="mediasearch-asset-"))
    media, home = base / "media", base / "home"
    media.mkdir()
    write_media(media)
    report = cli(home, "index", str(media))
    answers = {q: cli(home, "query", q, "--limit", "6") for q in QUERIES}
    (home / "expected.json").write_text(json.dumps({"index": report, "queries": answers}, indent=1))
    with tarfile.open(out, "w:gz") as tar:
        # the text tower's cache is rebuilt on demand: only the store and the state travel
        tar.add(home, arcname="home", filter=lambda info: None if "/cache" in info.name else info)
    print(f"{out}: {out.stat().st_size} bytes, {report}")  # type: ignore[index]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
