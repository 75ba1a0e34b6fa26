"""Bad input: a corpus of broken media made here, each file reported with a one-line reason.

Every image format truncated at several points, random bytes and zero-byte files under every media
extension, decompression bombs, extreme sizes, videos without a video stream or without frames, and
decoders that hang or crash: never a crash of the indexer, never a hang.
"""

from __future__ import annotations

import functools
import io
import os
import random
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediasearch.media.discover import IMAGE_EXTS, VIDEO_EXTS

pytestmark = pytest.mark.faults

IMAGE_SAVE = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tif": "TIFF"}
FAIL, OK, EITHER = "fail", "ok", "either"


def _noisy(fmt: str, size: tuple[int, int] = (96, 72)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(len(fmt)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bombs() -> dict[str, bytes]:
    """Tiny files that declare gigapixel images (each format's header says the size)."""
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    png += _chunk(b"IDAT", zlib.compress(b"\0" * 256)) + _chunk(b"IEND", b"")
    gif = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0)
    gif += b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00\x3b"
    bmp_info = struct.pack("<IiiHHIIiiII", 40, 50000, 50000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    bmp = b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + bmp_info + b"\0" * 64
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 65000, 65000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    jpeg = b"\xff\xd8" + sof + b"\xff\xd9"
    entries = [(256, 4, 1, 50000), (257, 4, 1, 50000), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    tiff = b"II*\x00" + struct.pack("<I", 8 + 0) + ifd
    return {"bomb.png": png, "bomb.gif": gif, "bomb.bmp": bmp, "bomb.jpg": jpeg, "bomb.tif": tiff}


def _audio_only(path: Path, fmt: str) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _no_frames(path: Path, fmt: str) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()


def build_corpus(folder: Path, make_image: Callable[..., Path], make_video: Callable[..., Path]) -> dict[Path, str]:
    """Write the corpus; path → what must happen to it (fail, ok, or either)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(8)
    expect: dict[Path, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        expect[folder / name] = outcome

    for ext, fmt in IMAGE_SAVE.items():
        data = _noisy(fmt)
        for label, cut in (("head", 8), ("q1", len(data) // 4), ("half", len(data) // 2), ("q3", len(data) * 9 // 10)):
            put(f"cut_{label}.{ext}", data[:cut], FAIL)
        put(f"cut_last_byte.{ext}", data[:-1], EITHER)  # some formats do not need their last byte
        put(f"random.{ext}", rng.randbytes(4096), FAIL)
    for ext in sorted(IMAGE_EXTS | VIDEO_EXTS - {"ts"}):  # an empty .ts is no MPEG-TS: skipped, like TypeScript
        put(f"empty.{ext}", b"", FAIL)
    for name, data in _bombs().items():
        put(name, data, FAIL)
    for ext in ("mp4", "mov", "mkv"):
        put(f"random.{ext}", rng.randbytes(8192), FAIL)
    put("text.avi", b"this is not a video\n" * 10, FAIL)
    for fmt, ext in (("mp4", "mp4"), ("matroska", "mkv")):
        _audio_only(folder / f"audio_only.{ext}", fmt)
        expect[folder / f"audio_only.{ext}"] = FAIL
        _no_frames(folder / f"no_frames.{ext}", fmt)
        expect[folder / f"no_frames.{ext}"] = FAIL
    video = make_video(folder / "source.mp4.tmp", seconds=6.0, noise=True, faststart=True).read_bytes()
    os.unlink(folder / "source.mp4.tmp")
    put("cut_head.mp4", video[:1024], FAIL)
    put("cut_30.mp4", video[: len(video) * 3 // 10], EITHER)
    put("cut_70.mp4", video[: len(video) * 7 // 10], EITHER)
    for name, size in (("one_pixel.png", (1, 1)), ("one_pixel.jpg", (1, 1)), ("panorama.jpg", (20000, 20))):
        expect[make_image(folder / name, size=size)] = OK
    expect[make_image(folder / "tall.png", size=(20, 20000))] = OK
    expect[make_image(folder / "strip.png", size=(100000, 1))] = OK  # 1:100000 must not cost gigabytes
    expect[make_video(folder / "good.mp4", seconds=4.0)] = OK
    return expect


def test_bad_corpus_each_file_reported_once_in_one_line(
    tmp_path: Path, cli: Any, make_image: Callable[..., Path], make_video: Callable[..., Path]
) -> None:
    from fault_helpers import store_state

    expect = build_corpus(tmp_path / "corpus", make_image, make_video)
    started = time.monotonic()
    summary = cli.json("index", str(tmp_path / "corpus"))
    elapsed = time.monotonic() - started
    stored = {payload["path"] for payload, _ in store_state(cli.home).values()}
    reasons = {e["path"]: e["error"] for e in summary["errors"]}
    assert len(reasons) == len(summary["errors"]), "a file was reported twice"
    for path, outcome in expect.items():
        reason = reasons.get(str(path))
        if reason is not None:
            assert "\n" not in reason and 0 < len(reason) <= 200 and "Traceback" not in reason, (path, reason)
        if outcome == FAIL:
            assert reason is not None and str(path) not in stored, (path, reason)
        elif outcome == OK:
            assert str(path) in stored and reason is None, (path, reason)
        else:
            assert (str(path) in stored) or reason is not None, path
    for name in _bombs():
        assert "decompression bomb" in reasons[str(tmp_path / "corpus" / name)], reasons[
            str(tmp_path / "corpus" / name)
        ]
    for name in ("audio_only.mp4", "audio_only.mkv"):
        assert reasons[str(tmp_path / "corpus" / name)] == "no video stream"
    assert summary["failed"] == sum(1 for p, o in expect.items() if o != OK and str(p) not in stored)
    assert elapsed < 120
    print(
        f"\nbad-input corpus: {len(expect)} files, {summary['failed']} failed, {len(stored)} indexed, {elapsed:.1f} s"
    )
    for reason in sorted(set(reasons.values())):
        print(f"  {sum(r == reason for r in reasons.values()):3d} × {reason}")


IMAGE_SEEDS = {ext: _noisy(fmt, (48, 40)) for ext, fmt in IMAGE_SAVE.items()}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(IMAGE_SEEDS)),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8),
    st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_images_decode_or_fail_cleanly(ext: str, flips: list[tuple[int, int]], cut: int | None) -> None:
    """Random byte changes and cuts: load_image returns an RGB image or raises MediaError, nothing else."""
    import tempfile

    from mediasearch.errors import MediaError
    from mediasearch.media.decode import load_image

    data = bytearray(IMAGE_SEEDS[ext])
    for where, value in flips:
        data[where % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    with tempfile.NamedTemporaryFile(suffix=f".{ext}") as fh:
        fh.write(bytes(data))
        fh.flush()
        try:
            image, meta = load_image(fh.name, target=96)
        except MediaError as exc:
            assert "\n" not in str(exc) and str(exc)
            return
    assert image.mode == "RGB" and min(image.size) >= 1 and meta.width >= 1


def _decoder_children() -> list[int]:
    """Decoding worker processes that are children of this process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"mediasearch.media.decode_pool" in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_hanging_or_crashing_decoder_costs_one_file_not_the_run(
    tmp_path: Path, demo_settings: Any, make_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """decord stuck forever (an upstream bug) or crashing: that file is reported, the rest indexed."""
    from fault_helpers import store_state

    from mediasearch.index import runner as indexer
    from mediasearch.index.runner import IndexOptions, index_paths
    from mediasearch.library import home as library
    from mediasearch.media.decode_pool import DecoderPool

    lib = tmp_path / "lib"
    for name in ("a_good.mp4", "b_hang.mp4", "c_good.mp4", "d_crash.mp4", "e_hang.mp4", "f_good.mp4"):
        make_video(lib / name, seconds=4.0)
    monkeypatch.setattr(indexer, "DecoderPool", functools.partial(DecoderPool, decoder="fault_helpers:hanging_decoder"))
    settings = demo_settings()
    opened = library.open_for_index(settings)
    started = time.monotonic()
    try:
        summary = index_paths([str(lib)], opened.model, opened.store, IndexOptions(decode_timeout=1.0, workers=2))
        library.finish_index(settings, opened, summary.to_json())
    finally:
        opened.close()
    elapsed = time.monotonic() - started
    reasons = {Path(e["path"]).name: e["error"] for e in summary.errors}
    assert set(reasons) == {"b_hang.mp4", "d_crash.mp4", "e_hang.mp4"}
    assert "took too long" in reasons["b_hang.mp4"] and "took too long" in reasons["e_hang.mp4"]
    assert reasons["d_crash.mp4"] == "the video decoder crashed on this file (signal SIGSEGV)"
    assert summary.added == 3 and summary.failed == 3
    assert {Path(p["path"]).name for p, _ in store_state(settings.home).values()} == {
        "a_good.mp4",
        "c_good.mp4",
        "f_good.mp4",
    }
    assert elapsed < 30
    assert _decoder_children() == []  # stuck workers were killed, idle ones stopped


def test_a_video_stream_no_decoder_knows_fails_in_one_clear_line(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    """A codec this FFmpeg cannot decode (a Dolby Vision 'dav1' track: PyAV gives the stream no codec
    context) is reported as such, not as a Python error about a missing attribute."""
    from mediasearch.errors import MediaError
    from mediasearch.media.video import sample_video

    source = make_video(tmp_path / "h264.mp4", seconds=2.0).read_bytes()
    assert source.count(b"avc1") >= 1  # the sample entry's fourcc, which the demuxer maps to a codec
    unknown = tmp_path / "dolby.mp4"
    unknown.write_bytes(source.replace(b"avc1", b"dav1"))
    for exact in (False, True):
        with pytest.raises(MediaError) as caught:
            sample_video(unknown, exact=exact)
        assert str(caught.value) == "unsupported video codec (no decoder for its video stream)"


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTS | VIDEO_EXTS - {"ts"}))
def test_an_empty_file_says_it_is_empty(tmp_path: Path, ext: str) -> None:
    """A file of no bytes (a copy that never finished, a cloud placeholder) of any extension that is
    decoded: its reason says it is empty, not that its format is unknown or its data invalid."""
    from mediasearch.errors import MediaError
    from mediasearch.media.decode import load_image
    from mediasearch.media.video import sample_video

    path = tmp_path / f"empty.{ext}"
    path.write_bytes(b"")
    with pytest.raises(MediaError) as caught:
        if ext in VIDEO_EXTS:
            sample_video(path)
        else:
            load_image(path)
    assert str(caught.value) == "empty file (0 bytes)"
