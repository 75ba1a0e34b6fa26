"""Indexing: every format, broken files, re-runs, moves and unmounted roots (crashes: test_faults.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.index import runner as indexer
from mediasearch.lab.shapes import render, save_image
from mediasearch.library import home as library
from mediasearch.settings import load_settings

FOUR = [("red", "circle"), ("blue", "star"), ("green", "square"), ("yellow", "triangle")]


def stored_points(home: Path, **settings: Any) -> dict[str, tuple[str, Any, np.ndarray]]:
    """id → (path, timestamp, vector) of everything in a home's active collection."""
    opened = library.open_for_query(load_settings({"home": home, **settings}, env={}), need_model=False)
    with opened.store as store:
        return {
            r.id: (r.payload["path"], r.payload.get("timestamp"), r.vector)
            for r in store.scroll(fields=("path", "timestamp"), with_vectors=True)
        }


def shape_photos(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (160, 120)) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        colour, shape = [("red", "circle"), ("blue", "star"), ("green", "square"), ("yellow", "triangle")][
            i % 4
        ]
        path = folder / f"{colour}_{shape}_{seed}_{i:03d}.{('jpg', 'png', 'webp')[i % 3]}"
        save_image(render(colour, shape, rng=rng, size=size), path, path.suffix[1:])
        paths.append(path)
    return paths


def test_mixed_folder_every_format_and_broken_file(
    tmp_path: Path,
    cli: Any,
    make_image: Callable[..., Path],
    make_video: Callable[..., Path],
    make_broken: Any,
) -> None:
    lib = tmp_path / "lib"
    good = shape_photos(lib / "shapes", 3)
    good += [
        make_image(lib / "rotated.jpg", size=(80, 40), exif_orientation=6),
        make_image(lib / "cmyk.jpg", mode="CMYK"),
        make_image(lib / "rgba.png", mode="RGBA"),
        make_image(lib / "deep.png", mode="I;16", color=30000),
        make_image(lib / "anim.gif", mode="P", extra_frames=[(0, 0, 255), (0, 255, 0)]),
        make_image(lib / "plain.bmp"),
        make_image(lib / "pages.tif", extra_frames=[(0, 0, 255)]),
    ]
    raw_name = os.fsencode(str(lib)) + b"/caf\xe9-\xff.png"
    shutil.copy(good[0], raw_name)
    good.append(Path(os.fsdecode(raw_name)))
    broken = [
        make_broken(lib / "broken" / "empty.jpg", "empty"),
        make_broken(lib / "broken" / "truncated.jpg", "truncated_jpeg"),
        make_broken(lib / "broken" / "text.jpg", "text_as_jpg"),
        make_broken(lib / "broken" / "bomb.png", "bomb"),
    ]
    (lib / "loop").symlink_to(lib, target_is_directory=True)
    video = make_video(lib / "clips" / "ok.mp4", seconds=6.0)
    cut = make_broken(lib / "clips" / "cut.mp4", "truncated_mp4")

    summary = cli.json("index", str(lib))

    assert summary["failed"] >= len(broken)
    reported = [e["path"] for e in summary["errors"]]
    for path in broken:
        assert reported.count(str(path)) == 1, (path, summary["errors"])
    assert len(reported) == len(set(reported))
    points = stored_points(cli.home)
    by_path: dict[str, list[Any]] = {}
    for path, ts, _ in points.values():
        by_path.setdefault(path, []).append(ts)
    for path in good:
        assert by_path.get(path_display(path)) == [None], path
    assert sorted(by_path[str(video)]) == [0.0, 2.0, 4.0]
    # The cut video keeps the frames before the damage and is reported once, as partly read (not failed).
    assert sorted(by_path[str(cut)])[0] == 0.0 and len(by_path[str(cut)]) < 3
    (cut_error,) = [e["error"] for e in summary["errors"] if e["path"] == str(cut)]
    assert cut_error.startswith("partly read: video "), cut_error
    assert not any("/loop/" in p for p in by_path)
    images = sum(1 for ts in by_path.values() if ts == [None])
    assert summary["added"] == len(by_path) and images == len(good)
    assert summary["frames"] == sum(len(ts) for p, ts in by_path.items() if p.endswith(".mp4"))


def path_display(path: Path) -> str:
    from mediasearch.media.discover import path_payload

    return path_payload(str(path))["path"]


def test_rerun_moves_deletes_modifies_adds(tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "lib"
    photos = shape_photos(lib, 20)
    first = cli.json("index", str(lib))
    assert (first["added"], first["scanned"], first["failed"]) == (20, 20, 0)
    before = stored_points(cli.home)

    decoded: list[str] = []
    real = indexer.decode_file
    monkeypatch.setattr(indexer, "decode_file", lambda e, *a: decoded.append(e.path) or real(e, *a))
    again = cli.json("index", str(lib))
    assert again["unchanged"] == 20 and again["added"] == again["updated"] == again["removed"] == 0
    assert decoded == []

    moved = photos[:5]
    (lib / "moved").mkdir()
    for p in moved:
        p.rename(lib / "moved" / p.name)
    for p in photos[5:10]:
        p.unlink()
    for i, p in enumerate(photos[10:15]):
        save_image(
            render("purple", "star", rng=np.random.default_rng(100 + i), size=(150, 150)), p, p.suffix[1:]
        )
        os.utime(p, (time.time() + 10, time.time() + 10))
    added = shape_photos(lib / "new", 5, seed=9)

    summary = cli.json("index", str(lib))
    assert {k: summary[k] for k in ("moved", "removed", "updated", "added", "unchanged")} == {
        "moved": 5,
        "removed": 5,
        "updated": 5,
        "added": 5,
        "unchanged": 5,
    }
    assert sorted(decoded) == sorted(str(p) for p in photos[10:15] + added)
    after = stored_points(cli.home)
    on_disk = {str(p) for p in (lib.rglob("*")) if p.is_file()}
    assert {path for path, _, _ in after.values()} == on_disk
    assert len(after) == 20
    old_vectors = {path: vec for path, _, vec in before.values()}
    new_vectors = {path: vec for path, _, vec in after.values()}
    for p in moved:
        np.testing.assert_array_equal(new_vectors[str(lib / "moved" / p.name)], old_vectors[str(p)])
    for p in photos[10:15]:
        assert float(new_vectors[str(p)] @ old_vectors[str(p)]) < 0.999


def test_missing_or_empty_root_is_not_a_deletion(tmp_path: Path, cli: Any) -> None:
    lib = tmp_path / "disk"
    shape_photos(lib, 6)
    cli.json("index", str(lib))
    lib.rename(tmp_path / "elsewhere")
    summary = cli.json("index", str(lib))
    assert summary["removed"] == 0 and len(stored_points(cli.home)) == 6
    assert "missing" in summary["errors"][0]["error"]
    lib.mkdir()  # an empty mount point
    summary = cli.json("index", str(lib))
    assert summary["removed"] == 0 and "empty" in summary["errors"][0]["error"]
    assert len(stored_points(cli.home)) == 6
    (tmp_path / "elsewhere").rename(tmp_path / "gone")
    lib.rmdir()
    assert cli.json("forget", str(lib))["files"] == 6
    assert stored_points(cli.home) == {}


def test_never_indexed_missing_folder_is_reported(tmp_path: Path, cli: Any) -> None:
    summary = cli.json("index", str(tmp_path / "nope"))
    assert summary["errors"] == [{"path": str(tmp_path / "nope"), "error": "no such file or folder"}]


def test_an_indexed_file_that_is_gone_is_left_until_forgotten(tmp_path: Path, cli: Any) -> None:
    """`index FILE` of an indexed file deleted since: a missing root (nothing changes), said as a file."""
    lib = tmp_path / "lib"
    shape_photos(lib, 2)
    cli.json("index", str(lib))
    gone = sorted(lib.iterdir())[0]
    gone.unlink()
    summary = cli.json("index", str(gone))
    assert (summary["removed"], summary["failed"]) == (0, 0)
    assert [e["path"] for e in summary["errors"]] == [str(gone)]
    assert summary["errors"][0]["error"].startswith("no such file, but it is indexed")
    assert len(stored_points(cli.home)) == 2
    assert cli.json("forget", str(gone))["files"] == 1
    assert [p[0] for p in stored_points(cli.home).values()] == [str(sorted(lib.iterdir())[0])]


def test_status_reports_counts_model_and_failures(
    tmp_path: Path, cli: Any, make_video: Any, make_broken: Any
) -> None:
    lib = tmp_path / "lib"
    shape_photos(lib, 3)
    make_video(lib / "v.mp4", seconds=4.0)
    make_broken(lib / "bad.jpg", "text_as_jpg")
    cli.json("index", str(lib))
    status = cli.json("status")
    assert (status["files"], status["images"], status["videos"], status["frames"]) == (4, 3, 1, 2)
    assert status["model"]["name"] == "demo" and status["store"].startswith("edge:")
    assert [f["path"] for f in status["failures"]] == [str(lib / "bad.jpg")]
    human = cli("status")
    assert "files" in human.stdout and "demo" in human.stdout


def test_server_mode_through_the_client_api(tmp_path: Path, cli: Any) -> None:
    """`--qdrant-url :memory:` is qdrant-client's in-process server: the server code path end to end."""
    lib = tmp_path / "lib"
    shape_photos(lib, 8)
    server = ("--qdrant-url", ":memory:")
    assert cli.json(*server, "index", str(lib))["added"] == 8
    hits = cli.json(*server, "query", "a photo of a red circle", "--limit", "2")
    assert [("red_circle" in h["path"]) for h in hits] == [True, True]
    assert cli.json(*server, "status")["store"].startswith("qdrant:")
    assert not (cli.home / "store").exists() or not any((cli.home / "store").glob("media_*/"))


def test_text_query_ranks_red_circles_first(tmp_path: Path, cli: Any) -> None:
    lib = tmp_path / "lib"
    shape_photos(lib, 16)
    cli.json("index", str(lib))
    hits = cli.json("query", "a photo of a red circle", "--limit", "4")
    assert [("red_circle" in h["path"]) for h in hits] == [True] * 4


# kill -9 (and Ctrl-C, SIGTERM) at random points of `index`: tests/test_faults.py


def test_index_without_model_goes_on_with_the_model_that_built_the_home(tmp_path: Path, cli: Any) -> None:
    """`mediasearch demo` then `mediasearch index ~/Photos`: the photos join the demo index (as through the
    daemon), instead of starting a second index with the default model."""
    first, second = tmp_path / "first", tmp_path / "second"
    shape_photos(first, 2)
    shape_photos(second, 3)
    cli.json("index", str(first))
    assert cli.json("index", str(second), model=None)["added"] == 3
    status = cli.json("status", model=None)
    assert (status["files"], status["model"]["name"]) == (5, "demo")
    assert len(cli.json("query", "a red circle", "--limit", "10", model=None)) > 0


def test_a_home_inside_the_library_is_not_indexed(tmp_path: Path, demo_model: Any) -> None:
    """`--home LIB/mediasearch`: the home's thumbnail cache is full of JPEGs; indexing LIB leaves them out
    (a media folder the user keeps inside the home is still indexed)."""
    from library_fixtures import Cli

    lib = tmp_path / "lib"
    shape_photos(lib, 3)
    cli = Cli(lib / "mediasearch")
    cli.json("index", str(lib))
    thumbs = lib / "mediasearch" / "cache" / "thumbnails"
    thumbs.mkdir(parents=True)
    (thumbs / "ab12.jpg").write_bytes(sorted(lib.glob("*.jpg"))[0].read_bytes())
    shape_photos(lib / "mediasearch" / "inbox", 1, seed=3)
    report = cli.json("index", str(lib))
    assert (report["scanned"], report["added"], report["unchanged"]) == (4, 1, 3)
    paths = {p for p, _, _ in stored_points(cli.home).values()}
    assert str(thumbs / "ab12.jpg") not in paths and len(paths) == 4
