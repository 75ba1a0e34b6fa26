"""Every photo library's formats: AVIF, HEIC, camera RAW, JPEG XL, deep TIFFs, camcorder and phone video.

All media are made here (shapes domain); the index tests run the real CLI with the demo model. The
checks that need a process of their own (decord blocked from import, C libraries' stderr) run the
CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mediasearch.errors import MediaError
from mediasearch.lab.shapes import COLOURS, render
from mediasearch.media import formats, video
from mediasearch.media.decode import load_image, sample_video
from mediasearch.media.discover import IMAGE_EXTS, VIDEO_EXTS, discover

REPO = Path(__file__).resolve().parent.parent
HAS_JXL = formats.register_jxl()
RED = COLOURS["red"]


def scene(colour: str, shape: str, size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    return render(colour, shape, rng=np.random.default_rng(seed), size=size, background="plain")


def near(a: Sequence[float], b: Sequence[float], tol: float = 40) -> bool:
    return max(abs(float(x) - float(y)) for x, y in zip(a, b, strict=True)) <= tol


def centre(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(image.convert("RGB"))[image.height // 2, image.width // 2])


def write_video(
    path: Path,
    frames: Sequence[Image.Image],
    *,
    fmt: str,
    codec: str = "libx264",
    fps: int = 8,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Path:
    """Encode `frames` (each held for one second) with B-frames, as cameras do; `rotation` is the
    display rotation (degrees counter-clockwise) a phone writes for portrait video."""
    import av

    width, height = frames[0].size
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.gop_size = 2 * fps
        stream.options = options if options is not None else {"preset": "ultrafast", "bf": "2"}
        if rotation:
            stream.set_display_rotation(rotation)
        for image in frames:
            for _ in range(fps):
                frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def coded_for_display(image: Image.Image, rotation: int) -> Image.Image:
    """The coded picture that shows as `image` once turned `rotation` degrees counter-clockwise."""
    turns = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    return image.transpose(turns[rotation])


def marked(size: tuple[int, int]) -> Image.Image:
    """Red, with a white top-left quarter: shows which way up a picture is."""
    image = Image.new("RGB", size, RED)
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 2))
    return image


# ------------------------------------------------------------------------------------ the folder


def build_folder(root: Path, make_dng: Callable[..., Path]) -> dict[str, str]:
    """One file of each format, each showing its own class; returns {file name: class}."""
    formats.register_heif()
    shown: dict[str, str] = {}

    def image(name: str, colour: str, shape: str, **save: Any) -> None:
        scene(colour, shape, seed=len(shown)).save(root / name, **save)
        shown[name] = f"{colour} {shape}"

    image("red.avif", "red", "circle", quality=85)
    image("blue.heic", "blue", "star", quality=85)
    if HAS_JXL:
        image("purple.jxl", "purple", "star", quality=90)
    make_dng(root / "green.dng", scene("green", "square", seed=10))
    shown["green.dng"] = "green square"
    big = scene("yellow", "triangle", size=(640, 480), seed=11)
    make_dng(root / "yellow.dng", big.resize((320, 240)), preview=big)
    shown["yellow.dng"] = "yellow triangle"
    write_video(root / "camcorder.mts", [scene("purple", "square", seed=s) for s in range(4)], fmt="mpegts")
    shown["camcorder.mts"] = "purple square"
    write_video(root / "old_phone.3gp", [scene("orange", "circle", seed=s) for s in range(4)], fmt="3gp")
    shown["old_phone.3gp"] = "orange circle"
    portrait = [coded_for_display(scene("blue", "triangle", size=(240, 320), seed=s), 90) for s in range(4)]
    write_video(root / "portrait.mp4", portrait, fmt="mp4", rotation=90)
    shown["portrait.mp4"] = "blue triangle"
    (root / "notes.txt").write_text("not a picture\n")
    (root / "app.ts").write_text("export const answer: number = 42;\n")  # TypeScript, not MPEG-TS
    return shown


def test_a_folder_of_every_format_is_indexed_and_each_file_found(
    tmp_path: Path, cli: Any, make_dng: Callable[..., Path]
) -> None:
    root = tmp_path / "library"
    root.mkdir()
    shown = build_folder(root, make_dng)
    report = cli.json("index", str(root))
    assert report["errors"] == [] and report["failed"] == 0
    assert (report["scanned"], report["added"], report["skipped"]) == (len(shown), len(shown), 2)
    status = cli.json("status")
    assert status["files"] == len(shown) and status["last_run"]["skipped"] == 2
    for name, label in shown.items():
        kind = "video" if name.rsplit(".", 1)[1] in VIDEO_EXTS else "image"
        hits = cli.json("query", f"a {label}", "--limit", "1", "--type", kind)
        assert Path(hits[0]["path"]).name == name, (label, hits)


# ------------------------------------------------------------------------------------ images


@pytest.mark.parametrize(("name", "save"), [("a.avif", {"quality": 90}), ("a.heic", {"quality": 90})])
def test_avif_and_heic_decode_with_their_exif(tmp_path: Path, name: str, save: dict[str, Any]) -> None:
    formats.register_heif()
    exif = Image.Exif()
    exif[0x0132] = "2020:01:02 03:04:05"
    exif[0x010F], exif[0x0110] = "Apple", "iPhone 15"
    exif[0x0112] = 6  # shown turned 90 degrees clockwise, as a phone held upright writes it
    marked((320, 240)).save(tmp_path / name, exif=exif.tobytes(), **save)
    image, meta = load_image(tmp_path / name, target=96)
    assert (meta.width, meta.height, meta.camera) == (240, 320, "Apple iPhone 15") and meta.date is not None
    assert image.width < image.height
    assert near(np.asarray(image)[3, -4], (255, 255, 255)) and near(np.asarray(image)[-4, 3], RED)


@pytest.mark.skipif(not HAS_JXL, reason="the jxl extra (pillow-jxl-plugin) is not installed")
def test_jpeg_xl_decodes_with_the_extra(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    marked((320, 240)).save(tmp_path / "a.jxl", quality=95, exif=exif.tobytes())
    image, meta = load_image(tmp_path / "a.jxl", target=96)
    assert (meta.width, meta.height) == (240, 320) and image.width < image.height
    assert near(np.asarray(image)[3, -4], (255, 255, 255)) and near(np.asarray(image)[-4, 3], RED)


def test_a_missing_plugin_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.jxl").write_bytes(b"\xff\x0a" + bytes(200))  # a JPEG XL codestream signature
    monkeypatch.setattr(formats, "register_jxl", lambda: False)
    with pytest.raises(MediaError, match=r"pip install 'mediasearch\[jxl\]'"):
        load_image(tmp_path / "a.jxl")


def test_raw_uses_a_large_preview_and_demosaics_otherwise(tmp_path: Path, make_dng: Callable[..., Path]) -> None:
    raw = Image.new("RGB", (320, 240), COLOURS["green"])
    large = make_dng("large.dng", raw, preview=Image.new("RGB", (320, 240), COLOURS["blue"]))
    small = make_dng("small.dng", raw, preview=Image.new("RGB", (160, 120), COLOURS["blue"]))
    bare = make_dng("bare.dng", raw)
    assert near(centre(load_image(large, target=96)[0]), COLOURS["blue"])  # 240 >= 2 x 96: the preview
    for path, target in ((large, 224), (small, 96), (bare, 96)):  # 240 < 2 x 224, 120 < 2 x 96, none
        image, meta = load_image(path, target=target)
        r, g, b = centre(image)
        assert g > 150 and g > r + 60 and g > b + 60, (path.name, (r, g, b))
        assert (meta.width, meta.height, meta.camera) == (320, 240, "Testmake Cam1")
        assert meta.date is not None


@pytest.mark.parametrize("preview", [False, True])
def test_raw_orientation_is_applied(make_dng: Callable[..., Path], preview: bool) -> None:
    picture = marked((320, 240))
    path = make_dng("turned.dng", picture, preview=picture if preview else None, orientation=6)
    image, meta = load_image(path, target=96)
    assert (meta.width, meta.height) == (240, 320) and image.width < image.height
    # orientation 6: turn 90 degrees clockwise to show; the stored top-left is then top-right
    assert near(np.asarray(image)[3, -4], (255, 255, 255), 60) and near(np.asarray(image)[-4, 3], RED, 80)


def test_deep_tiffs_are_scaled_to_8_bits(tmp_path: Path) -> None:
    import tifffile

    red = np.asarray(RED, dtype=np.float64) / 255
    pixels = np.broadcast_to(red, (48, 64, 3))
    cases = {
        "u16.tif": ((pixels * 65535).astype(np.uint16), {"photometric": "rgb"}),
        "f32.tif": (pixels.astype(np.float32), {"photometric": "rgb"}),
        "f16.tif": (pixels.astype(np.float16), {"photometric": "rgb"}),
        "u32.tif": ((pixels * 4294967295).astype(np.uint32), {"photometric": "rgb"}),
        "planar.tif": (np.moveaxis(pixels, -1, 0).astype(np.float32).copy(), {"photometric": "rgb", "planarconfig": 2}),
        "hdr.tif": ((pixels * 40).astype(np.float32), {"photometric": "rgb"}),  # stretched: red stays red
        "alpha.tif": (
            np.dstack([pixels, np.ones((48, 64))]).astype(np.float32),
            {"photometric": "rgb", "extrasamples": ["unassalpha"]},
        ),
    }
    for name, (data, options) in cases.items():
        tifffile.imwrite(tmp_path / name, data, **options)
        image, meta = load_image(tmp_path / name, target=32)
        assert image.mode == "RGB" and (meta.width, meta.height) == (64, 48), name
        expected = (255, 0, 0) if name == "hdr.tif" else RED
        assert near(centre(image), expected, 3), (name, centre(image))


# ------------------------------------------------------------------------------------ videos


def test_camcorder_containers_are_read(tmp_path: Path) -> None:
    """MPEG-TS with B-frames (decord cannot read them), MPEG-PS (odd first timestamps), 3GP, WMV."""
    clips = [marked((176, 144))] * 4
    made = [
        write_video(tmp_path / "a.mts", clips, fmt="mpegts"),
        write_video(tmp_path / "a.m2ts", clips, fmt="mpegts"),
        write_video(tmp_path / "a.mpg", clips, fmt="mpeg", codec="mpeg2video", options={}),
        write_video(tmp_path / "a.3gp", clips, fmt="3gp", codec="h263", options={}),
        write_video(tmp_path / "a.wmv", clips, fmt="asf", codec="wmv2", options={}),
    ]
    for path in made:
        assert path.suffix[1:] in VIDEO_EXTS
        for exact in (False, True):
            sample = sample_video(str(path), interval=1.0, exact=exact)
            times = [f.timestamp for f in sample.frames]
            assert sample.error is None and len(times) == 4 and times == sorted(times), (path.name, times)
            assert max(times) < 4.0 and sample.meta.duration is not None and 3.5 < sample.meta.duration < 4.6
            for frame in sample.frames:
                assert near(np.asarray(frame.image)[-5, -5], RED, 50), (path.name, exact, frame.timestamp)


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_phone_rotation_is_applied_on_every_path(
    tmp_path: Path, rotation: int, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "pyav":
        monkeypatch.setitem(sys.modules, "decord", None)
        video._decord.cache_clear()
    try:
        shown = marked((240, 320) if rotation != 180 else (320, 240))
        path = write_video(
            tmp_path / "phone.mp4", [coded_for_display(shown, rotation)] * 3, fmt="mp4", rotation=rotation
        )
        for exact in (False, True):  # keyframes (PyAV) and exact times (decord, or PyAV without it)
            sample = sample_video(str(path), interval=1.0, exact=exact, target=240)
            assert (sample.meta.width, sample.meta.height) == shown.size
            for frame in sample.frames:
                pixels = np.asarray(frame.image)
                assert frame.image.size == shown.size
                assert near(pixels[4, 4], (255, 255, 255), 50) and near(pixels[-5, -5], RED, 50), (exact, frame)
    finally:
        video._decord.cache_clear()


def _pq_encode(srgb: tuple[int, int, int]) -> np.ndarray:
    """The 16-bit PQ / BT.2020 code values of an sRGB colour shown at HDR reference white (203 nits)."""
    c = np.asarray(srgb, dtype=np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    bt709_to_bt2020 = np.asarray([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
    y = np.clip(bt709_to_bt2020 @ linear * 203 / 10000, 0, 1)
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    signal = ((c1 + c2 * y**m1) / (1 + c3 * y**m1)) ** m2
    return np.rint(signal * 65535).astype(np.uint16)


def _hdr_video(path: Path, colour: tuple[int, int, int]) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx265", rate=8)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p10le"
        stream.options = {"preset": "ultrafast", "x265-params": "log-level=none"}
        codec = stream.codec_context
        codec.color_primaries, codec.color_trc, codec.colorspace = 9, 16, 9  # BT.2020, PQ
        pixels = np.broadcast_to(_pq_encode(colour), (96, 128, 3)).copy()
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb48le")
            frame.color_primaries, frame.color_trc, frame.colorspace = 9, 16, 9
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_hdr_video_is_tone_mapped(tmp_path: Path) -> None:
    path = _hdr_video(tmp_path / "hdr.mp4", (200, 60, 40))
    for exact in (False, True):
        sample = sample_video(str(path), interval=0.5, exact=exact)
        assert sample.frames and all(near(centre(f.image), (200, 60, 40), 30) for f in sample.frames), [
            centre(f.image) for f in sample.frames
        ]
    import av

    with av.open(str(path)) as container:  # what a plain conversion shows: dull and washed out
        assert not near(centre(next(container.decode(video=0)).to_image()), (200, 60, 40), 60)


def test_ten_bit_video_converts_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "ten.mp4", [marked((160, 120))] * 2, fmt="mp4", pix_fmt="yuv420p10le")
    with_decord = sample_video(str(path), interval=0.5, exact=True)
    monkeypatch.setitem(sys.modules, "decord", None)
    video._decord.cache_clear()
    try:
        with_pyav = sample_video(str(path), interval=0.5, exact=True)
    finally:
        video._decord.cache_clear()
    for sample in (with_decord, with_pyav):
        assert len(sample.frames) == 4
        assert all(near(np.asarray(f.image)[-5, -5], RED, 12) for f in sample.frames)


# ------------------------------------------------------------------------------------ discovery


def test_unsupported_files_are_counted_not_silently_passed(tmp_path: Path, make_video: Callable[..., Path]) -> None:
    for name in ("a.txt", "b.psd", "c.xcf", ".hidden.txt", "d.ts", "e.jpg"):
        (tmp_path / name).write_bytes(b"x" * 400)
    write_video(tmp_path / "real.ts", [marked((64, 48))], fmt="mpegts")
    (tmp_path / "m2ts_packets.ts").write_bytes((bytes(4) + b"\x47" + bytes(187)) * 3)  # 192-byte packets
    skipped: list[str] = []
    found = [Path(e.path).name for e in discover([tmp_path], on_skip=skipped.append)]
    assert found == ["e.jpg", "m2ts_packets.ts", "real.ts"]
    assert sorted(Path(p).name for p in skipped) == ["a.txt", "b.psd", "c.xcf", "d.ts"]
    assert formats.RAW_EXTS | formats.HEIF_EXTS | formats.JXL_EXTS | {"avif"} <= IMAGE_EXTS
    assert {"mts", "m2ts", "ts", "3gp", "wmv", "mpg"} <= VIDEO_EXTS


# ------------------------------------------------------------------------------------ processes


def run_cli(home: Path, *args: str, first: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a process of its own (`first` goes in front of the import path)."""
    paths = [str(first or ""), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", "demo", "--device", "cpu", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_videos_index_with_decord_blocked(tmp_path: Path) -> None:
    """Where decord cannot be imported (no wheel for the platform), PyAV decodes every video."""
    blocker = tmp_path / "blocker" / "decord"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('decord is blocked for this test')\n")
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "a.mp4", [scene("red", "circle", seed=s) for s in range(4)], fmt="mp4")
    write_video(root / "b.mts", [scene("blue", "star", seed=s) for s in range(4)], fmt="mpegts")
    portrait = [coded_for_display(scene("green", "square", (240, 320), seed=s), 90) for s in range(4)]
    write_video(root / "c.mp4", portrait, fmt="mp4", rotation=90)
    blocked = tmp_path / "blocker"
    done = run_cli(tmp_path / "home", "index", str(root), "--json", "--exact-times", first=blocked)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["added"], report["failed"], report["frames"]) == (3, 0, 6), report
    hits = json.loads(run_cli(tmp_path / "home", "query", "a green square", "--limit", "1", "--json").stdout)
    assert Path(hits[0]["path"]).name == "c.mp4"


def _tiff(entries: list[tuple[int, int, int, int]]) -> bytes:
    """A little-endian TIFF with one IFD of (tag, type, count, value) entries and 64 bytes of data."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(64)


def malformed_corpus(root: Path, make_dng: Callable[..., Path]) -> int:
    """Broken files of every new format; returns how many cannot give a picture at all."""
    formats.register_heif()
    good = root / "good"
    good.mkdir()
    scene("red", "circle").save(good / "x.avif")
    scene("red", "circle").save(good / "x.heic")
    make_dng(good / "x.dng", scene("red", "circle"), preview=scene("red", "circle", (640, 480)))
    write_video(good / "x.mts", [scene("red", "circle")] * 3, fmt="mpegts")
    bad = root / "bad"
    bad.mkdir()
    for source in good.iterdir():
        data = source.read_bytes()
        (bad / f"garbage{source.suffix}").write_bytes(bytes(range(256)) * 16)
        (bad / f"headonly{source.suffix}").write_bytes(data[:64])
        # may still give a picture (a RAW's preview, a video's first seconds): not counted
        (root / "partial").mkdir(exist_ok=True)
        (root / "partial" / f"truncated{source.suffix}").write_bytes(data[: len(data) * 2 // 5])
    bare = make_dng(root / "bare.dng", scene("red", "circle")).read_bytes()
    (bad / "cut.dng").write_bytes(bare[: len(bare) * 7 // 10])  # LibRaw reads past the end: it says so on stderr
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good / "x.tif", compression="tiff_adobe_deflate")
    deflated = bytearray((good / "x.tif").read_bytes())
    deflated[100:600] = bytes(500)  # libtiff (inside Pillow) prints "ZIPDecode: Decoding error" on stderr
    (bad / "zip.tif").write_bytes(bytes(deflated))
    (bad / "samples.tif").write_bytes(_tiff([(256, 4, 1, 8), (257, 4, 1, 8), (258, 3, 1, 8), (277, 4, 1, 70000)]))
    (bad / "tags.tif").write_bytes(
        _tiff([(256, 4, 1, 8), (257, 4, 1, 8), (258, 3, 1, 8), (273, 4, 1, 99999), (305, 2, 5000, 4096)])
    )
    (bad / "float.tif").write_bytes(_tiff([(256, 4, 1, 8), (257, 4, 1, 8), (258, 3, 1, 32), (339, 3, 1, 3)]))
    return len(list(bad.iterdir()))


def test_malformed_files_leave_no_third_party_line_on_stderr(tmp_path: Path, make_dng: Callable[..., Path]) -> None:
    count = malformed_corpus(tmp_path, make_dng)
    done = run_cli(tmp_path / "home", "index", str(tmp_path / "bad"), str(tmp_path / "partial"), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    assert report["scanned"] == count + 4 and report["failed"] >= count
    assert all("\n" not in e["error"] and e["error"] for e in report["errors"])


def test_decoding_in_process_keeps_the_terminal_clean(
    tmp_path: Path, make_dng: Callable[..., Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """C libraries' output too (LibRaw's "Unexpected end of file"); log records: see the test above,
    as pytest attaches its own handlers to every logger."""
    malformed_corpus(tmp_path, make_dng)
    for path in sorted((tmp_path / "bad").iterdir()):
        with pytest.raises(MediaError):
            if path.suffix == ".mts":
                sample_video(str(path))
            else:
                load_image(path)
    for path in sorted((tmp_path / "partial").iterdir()):
        try:
            sample_video(str(path)) if path.suffix == ".mts" else load_image(path)
        except MediaError:
            pass
    assert capfd.readouterr().err == ""
