"""Duplicates on a real index (demo model, Qdrant Edge, files written here): byte copies, resized,
cropped and re-encoded copies, different photos of one subject, and videos that share only an intro."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mediasearch.lab.shapes import render
from mediasearch.search.duplicates import full_hash, grey_base, pixel_similarity

# Two photos of the same subject (a red circle) are different photos: CLIP puts them side by side.
ORIGINALS = (("red", "circle"), ("red", "circle"), ("blue", "star"), ("green", "square"))


def _photo(seed: int, colour: str, shape: str) -> Image.Image:
    return render(colour, shape, rng=np.random.default_rng(seed), size=(640, 480), background="gradient")


def _jpeg(image: Image.Image, path: Path, quality: int) -> Path:
    image.save(path, format="JPEG", quality=quality)
    return path


def _copies(image: Image.Image, folder: Path, name: str) -> list[Path]:
    """What a library collects: an export at half size, a 4 % crop, a re-encode at q55."""
    w, h = image.size
    crop = (round(0.04 * w), 0, w, round(0.96 * h))  # 4 % off the left and the bottom
    return [
        _jpeg(image.resize((w // 2, h // 2), Image.Resampling.LANCZOS), folder / f"{name}_small.jpg", 70),
        _jpeg(image.crop(crop), folder / f"{name}_cropped.jpg", 62),
        _jpeg(image, folder / f"{name}_q55.jpg", 55),
    ]


def _scene_frames(seconds: int, fps: int, intro: int, colour: str, shape: str, seed: int) -> list[np.ndarray]:
    """A black intro of ``intro`` seconds, then a shape that drifts a little, with sensor noise."""
    rng = np.random.default_rng(seed)
    scene = np.asarray(render(colour, shape, rng=rng, size=(160, 120), background="plain"))
    frames = []
    for i in range(seconds * fps):
        if i < intro * fps:
            frames.append(np.zeros_like(scene))
            continue
        moved = np.roll(scene, (i % 5 - 2, i % 3 - 1), axis=(0, 1)).astype(np.int16)
        moved += rng.integers(-3, 4, size=moved.shape[:2] + (1,), dtype=np.int16)
        frames.append(np.clip(moved, 0, 255).astype(np.uint8))
    return frames


def _write_video(path: Path, frames: Sequence[np.ndarray], fps: int, size: tuple[int, int], crf: int) -> Path:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        for pixels in frames:
            picture = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
        container.mux(stream.encode(None))
    return path


def _same_head_and_tail(first: Image.Image, second: Image.Image, path_a: Path, path_b: Path) -> None:
    """Two BMPs that share their first and last 64 KiB (so the stored fingerprint) but not the middle."""
    buffer = io.BytesIO()
    first.save(buffer, format="BMP")
    a = buffer.getvalue()
    buffer = io.BytesIO()
    second.save(buffer, format="BMP")
    b = buffer.getvalue()
    head = tail = 64 * 1024 + 4096
    assert len(a) == len(b) > head + tail
    path_a.write_bytes(a)
    path_b.write_bytes(a[:head] + b[head:-tail] + a[-tail:])


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """A folder tree and, for every file, its family: the original it is a copy of (-1: on its own)."""
    root = tmp_path / "library"
    photos, exports, videos = root / "photos", root / "exports", root / "videos"
    for folder in (photos, exports, videos):
        folder.mkdir(parents=True)
    family: dict[str, int] = {}
    for i, (colour, shape) in enumerate(ORIGINALS):
        image = _photo(100 + i, colour, shape)
        original = _jpeg(image, photos / f"photo{i}.jpg", 92)
        family[str(original)] = i
        family.update((str(p), i) for p in _copies(image, exports, f"photo{i}"))
    for i in (0, 2):  # byte copies, beside their near copies
        copy = shutil.copyfile(photos / f"photo{i}.jpg", exports / f"photo{i} (copy).jpg")
        family[str(copy)] = i
    lone = _photo(200, "yellow", "triangle")
    lone.save(photos / "lone.png")  # only a byte copy of it exists: an exact group
    family[str(photos / "lone.png")] = family[str(shutil.copyfile(photos / "lone.png", exports / "lone.png"))] = 10
    _same_head_and_tail(
        _photo(300, "purple", "square").resize((320, 240)),
        _photo(301, "orange", "star").resize((320, 240)),
        photos / "scan_a.bmp",
        photos / "scan_b.bmp",
    )
    family[str(photos / "scan_a.bmp")], family[str(photos / "scan_b.bmp")] = 20, 21
    fps = 4
    first = _scene_frames(12, fps, 4, "red", "circle", seed=7)
    second = _scene_frames(12, fps, 4, "blue", "star", seed=8)
    family[str(_write_video(videos / "party.mp4", first, fps, (160, 120), 23))] = 30
    family[str(_write_video(videos / "party_small.mp4", first, fps, (128, 96), 30))] = 30  # re-encoded copy
    family[str(_write_video(videos / "concert.mp4", second, fps, (160, 120), 23))] = 31
    return root, family


def test_groups_every_copy_with_its_original_and_nothing_else(cli: Any, library: tuple[Path, dict[str, int]]) -> None:
    root, family = library
    report = cli.json("index", str(root))
    assert report["failed"] == 0 and report["added"] == len(family)

    groups = cli.json("duplicates")
    for group in groups:
        assert set(group) == {"paths", "similarity", "kind"} and group["kind"] in ("exact", "near")
        assert 0.0 < group["similarity"] <= 1.0
        assert len({family[p] for p in group["paths"]}) == 1, f"a group mixes different files: {group}"
    assert [len(g["paths"]) for g in groups] == sorted((len(g["paths"]) for g in groups), reverse=True)

    by_family = {family[g["paths"][0]]: g for g in groups}
    for fam in {*range(len(ORIGINALS)), 10, 30}:
        members = sorted(p for p, f in family.items() if f == fam)
        assert fam in by_family and by_family[fam]["paths"] == members, f"family {fam}: {members}"
    assert by_family[10]["kind"] == "exact" and by_family[10]["similarity"] == 1.0
    assert all(by_family[i]["kind"] == "near" for i in range(len(ORIGINALS)))
    # Same head, tail and size but another middle: the full hash tells them apart, the pixels too.
    assert not {20, 21} & set(by_family)
    # Two videos that open on the same black seconds are different videos.
    assert 31 not in by_family and str(root / "videos" / "concert.mp4") not in by_family[30]["paths"]
    assert len(groups) == len(ORIGINALS) + 2


def test_paths_limit_the_search_and_the_api_agrees(
    cli: Any, library: tuple[Path, dict[str, int]], demo_settings: Any
) -> None:
    import mediasearch as ms

    root, family = library
    cli("index", str(root))
    only_exports = cli.json("duplicates", str(root / "exports"), "--threshold", "0.9")
    assert only_exports and all(p.startswith(str(root / "exports")) for g in only_exports for p in g["paths"])
    assert {family[g["paths"][0]] for g in only_exports} == {
        *range(len(ORIGINALS)),
    }
    with ms.Library.open(settings=demo_settings(), use_daemon=False) as lib:
        groups = lib.duplicates([root / "videos"])
    assert [(g.paths, g.kind) for g in groups] == [
        ([str(root / "videos" / "party.mp4"), str(root / "videos" / "party_small.mp4")], "near")
    ]
    human = cli("duplicates", str(root / "photos"))
    assert "no duplicates" in human.stdout  # every copy of a photo lives in exports/
    bad = cli("duplicates", "--threshold", "1.5", ok=False)
    assert bad.exit_code == 2


def test_pixel_similarity_separates_copies_from_other_photos_of_the_subject() -> None:
    a, b = _photo(1, "red", "circle"), _photo(2, "red", "circle")
    w, h = a.size
    buffer = io.BytesIO()
    a.crop((0, round(0.04 * h), round(0.96 * w), h)).save(buffer, format="JPEG", quality=55)
    copy = Image.open(buffer)
    assert pixel_similarity(grey_base(a), grey_base(copy)) >= 0.97
    assert pixel_similarity(grey_base(a), grey_base(b)) < 0.9
    flat = np.full((72, 96), 128, np.float32)
    assert pixel_similarity(flat, grey_base(a)) == 0.0


def test_full_hash_reads_the_whole_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 300_000)
    b.write_bytes(b"x" * 150_000 + b"y" + b"x" * 149_999)
    assert full_hash(str(a)) != full_hash(str(b)) and full_hash(str(a)) == full_hash(str(a))
    assert full_hash(str(tmp_path / "gone")) is None


def test_a_daemon_answers_duplicates_for_the_cli(tmp_path: Path) -> None:
    """`mediasearch duplicates` goes through the daemon that owns the home, with the same JSON."""
    from daemon_helpers import Daemon, _cli

    folder = tmp_path / "lib"
    folder.mkdir()
    image = _photo(5, "purple", "star")
    original = _jpeg(image, folder / "star.jpg", 90)
    copies = _copies(image, folder, "star")
    other = _jpeg(_photo(6, "purple", "star"), folder / "another_star.jpg", 90)
    daemon = Daemon(tmp_path / "home", str(folder), "--rescan-every", "off")
    try:
        daemon.wait_ready().wait_idle()
        out = _cli(daemon.home, "duplicates", "--json")
        assert out.returncode == 0, out.stderr  # the daemon holds the store: opening it would fail
        groups = json.loads(out.stdout)
        assert groups == daemon.call("POST", "/duplicates", {"paths": [str(folder)]})
        assert [g["paths"] for g in groups] == [sorted(str(p) for p in (original, *copies))]
        assert str(other) not in groups[0]["paths"]
    finally:
        daemon.stop()


def test_a_still_video_and_its_copy_are_grouped(cli: Any, tmp_path: Path) -> None:
    """40 equal frames: a video's own frames are its nearest neighbours, so the search leaves them out.

    (This passes without that too, because the copy still finds the original from its side; the
    original's own frames alone fill its first 17 neighbours, which was checked by hand.)"""
    folder = tmp_path / "still"
    folder.mkdir()
    frames = _scene_frames(1, 1, 0, "green", "circle", seed=11) * 40  # a still scene: 40 equal frames
    kept = _write_video(folder / "webcam.mp4", frames, 1, (160, 120), 23)
    copy = _write_video(folder / "webcam_export.mp4", frames, 1, (128, 96), 30)
    _write_video(folder / "other.mp4", _scene_frames(40, 1, 0, "green", "circle", seed=12), 1, (160, 120), 23)
    assert cli.json("index", str(folder), "--frame-interval", "1")["frames"] >= 3 * 36
    assert [g["paths"] for g in cli.json("duplicates")] == [[str(kept), str(copy)]]


def test_the_page_shows_duplicates_as_groups(tmp_path: Path) -> None:
    """The web page's Duplicates button lists each group with a thumbnail per file (headless Chromium)."""
    executable = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
    if executable is None:
        pytest.skip("no Chromium found")
    sync_api = pytest.importorskip("playwright.sync_api")
    from daemon_helpers import Daemon

    folder = tmp_path / "lib"
    folder.mkdir()
    image = _photo(8, "orange", "triangle")
    paths = [_jpeg(image, folder / "triangle.jpg", 90), *_copies(image, folder, "triangle")]
    _jpeg(_photo(9, "orange", "triangle"), folder / "other_triangle.jpg", 90)
    daemon = Daemon(tmp_path / "home", str(folder), "--rescan-every", "off")
    try:
        daemon.wait_ready().wait_idle()
        assert daemon.client is not None
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
            try:
                tab = browser.new_page()
                errors: list[str] = []
                tab.on("pageerror", lambda exc: errors.append(str(exc)))
                tab.goto(f"{daemon.client.info.url}/?token={daemon.client.info.token}")
                tab.click("#dups")
                tab.wait_for_selector("#results[data-state=ready][data-mode=duplicates]")
                files = "gs => gs.map(g => [...g.querySelectorAll('.dup-file')].map(f => f.dataset.path))"
                shown = tab.eval_on_selector_all("#results .dup-group", files)
                assert shown == [sorted(str(p) for p in paths)]
                loaded = "() => [...document.querySelectorAll('.dup-file img')].every(i => i.naturalWidth > 0)"
                tab.wait_for_function(loaded)
                assert "1 group" in tab.inner_text("#summary") and not errors
            finally:
                browser.close()
    finally:
        daemon.stop()
