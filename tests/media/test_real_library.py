"""What real libraries hold: photos over 100 megapixels, content under the wrong extension, PNGs with
huge text chunks, XMP-only metadata, mirrored video, the less common extensions, RAW thumbnails read
from an open descriptor."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from mediasearch.media import formats, metadata
from mediasearch.media.decode import load_image, sample_video
from mediasearch.media.discover import IMAGE_EXTS, VIDEO_EXTS, media_kind

RED = (220, 30, 30)


def near(a: Sequence[float], b: Sequence[float], tol: float = 40) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=False))


def marked(size: tuple[int, int]) -> Image.Image:
    """Red, with a white top-left quarter: shows which way up (and which way round) a picture is."""
    image = Image.new("RGB", size, RED)
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 2))
    return image


# ------------------------------------------------------------------------------------ big photos


def test_a_108_megapixel_jpeg_and_a_105_megapixel_png_are_indexed(tmp_path: Path) -> None:
    """Over Pillow's 89.5 MP guard: the JPEG is decoded at 1/8 scale, the PNG whole within the budget."""
    big = Image.new("RGB", (12000, 9000), (40, 70, 220))
    ImageDraw.Draw(big).ellipse((3000, 1500, 9000, 7500), fill=RED)
    big.save(tmp_path / "big.jpg", quality=60)
    del big
    grey = Image.new("L", (10240, 10240), 200)
    grey.save(tmp_path / "big.png", compress_level=1)
    del grey
    image, meta = load_image(tmp_path / "big.jpg")
    assert (meta.width, meta.height) == (12000, 9000) and min(image.size) < 448
    assert near(image.getpixel((image.width // 2, image.height // 2)), RED)
    image, meta = load_image(tmp_path / "big.png")
    assert (meta.width, meta.height) == (10240, 10240) and min(image.size) < 448
    assert near(image.getpixel((0, 0)), (200, 200, 200), 2)


# ------------------------------------------------------------------------------------ content, not names


def test_a_heic_named_jpg_is_decoded_by_its_content(tmp_path: Path) -> None:
    formats.register_heif()
    marked((320, 240)).save(tmp_path / "photo.jpg", format="HEIF", quality=90)
    assert formats.sniff((tmp_path / "photo.jpg").read_bytes()[:64]) == "HEIF"
    image, meta = load_image(tmp_path / "photo.jpg", target=96)
    assert (meta.width, meta.height) == (320, 240)
    assert near(np.asarray(image)[3, 3], (255, 255, 255)) and near(np.asarray(image)[-4, -4], RED)


def test_a_jpeg_xl_named_jpg_is_decoded_by_its_content(tmp_path: Path) -> None:
    pytest.importorskip("pillow_jxl")
    marked((320, 240)).save(tmp_path / "photo.jpg", format="JXL", quality=95)
    image, meta = load_image(tmp_path / "photo.jpg", target=96)
    assert (meta.width, meta.height) == (320, 240) and near(np.asarray(image)[3, 3], (255, 255, 255))


def test_jpeg_2000_is_read(tmp_path: Path) -> None:
    marked((320, 240)).save(tmp_path / "a.jp2")
    image, meta = load_image(tmp_path / "a.jp2", target=96)
    assert (meta.width, meta.height) == (320, 240) and near(np.asarray(image)[-4, -4], RED)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt", b"tEXt"])
def test_a_png_with_a_20_mb_text_chunk_is_decoded(tmp_path: Path, kind: bytes) -> None:
    """Pillow refuses text that decompresses past its limit; the picture is what matters. (The text
    chunks kept are read: a PNG's XMP is one, test_gps_and_camera_from_xmp_only.)"""
    buffer = io.BytesIO()
    marked((64, 48)).save(buffer, format="PNG")
    png = buffer.getvalue()
    text = b"x" * (20 * 1024 * 1024)
    body = {b"zTXt": b"Comment\0\0" + zlib.compress(text), b"iTXt": b"Comment\0\1\0\0\0" + zlib.compress(text)}
    data = body.get(kind, b"Comment\0" + text)  # compressed: about 20 KB that unpack to 20 MB
    ihdr_end = 8 + 25
    (tmp_path / "text.png").write_bytes(png[:ihdr_end] + _chunk(kind, data) + png[ihdr_end:])
    image, meta = load_image(tmp_path / "text.png", target=32)
    assert (meta.width, meta.height) == (64, 48) and near(np.asarray(image)[-2, -2], RED)


# ------------------------------------------------------------------------------------ metadata


def _with_xmp(path: Path, xmp: str) -> Path:
    from PIL import PngImagePlugin

    if path.suffix == ".png":  # PNG keeps XMP in an iTXt chunk of its own name
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp)
        marked((96, 64)).save(path, pnginfo=info)
    else:
        marked((96, 64)).save(path, xmp=xmp.encode())
    return path


def test_gps_and_camera_from_xmp_only(tmp_path: Path) -> None:
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" exif:GPSLatitude="43,42.1200N" exif:GPSLongitude="7,15.9000E"'
        ' tiff:Make="FUJIFILM" xmp:CreateDate="2021-07-14T10:00:00+02:00">'
        "<tiff:Model>X-T4</tiff:Model></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    for name in ("a.jpg", "a.png", "a.webp"):
        _, meta = load_image(_with_xmp(tmp_path / name, xmp), target=32)
        assert meta.lat == pytest.approx(43.702) and meta.lon == pytest.approx(7.265), name
        assert meta.camera == "FUJIFILM X-T4" and meta.date == 1626249600.0, name


@given(
    lat=st.floats(-89.99, 89.99),
    lon=st.floats(-179.99, 179.99),
    seconds=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_xmp_coordinates_round_trip(lat: float, lon: float, seconds: bool) -> None:
    """Any position written as XMP's "DDD,MM.mmmmk" or "DDD,MM,SS.ssk" reads back to the same place."""

    def written(value: float, refs: str) -> str:
        ref = refs[0] if value >= 0 else refs[1]
        degrees, minutes = divmod(abs(value) * 60, 60)
        if seconds:
            whole, secs = divmod(minutes * 60, 60)
            return f"{int(degrees)},{int(whole)},{secs:.6f}{ref}"
        return f"{int(degrees)},{minutes:.8f}{ref}"

    found = metadata.xmp_fields(f'exif:GPSLatitude="{written(lat, "NS")}" exif:GPSLongitude="{written(lon, "EW")}"')
    assume(abs(lat) > 1e-6 or abs(lon) > 1e-6)  # 0,0 is what phones write without a fix: below
    assert found["lat"] == pytest.approx(lat, abs=1e-6) and found["lon"] == pytest.approx(lon, abs=1e-6)
    assert "lat" not in metadata.xmp_fields('exif:GPSLatitude="0,0.0N" exif:GPSLongitude="0,0.0E"')


def test_ciff_make_and_model() -> None:
    head = b"II\x1a\x00\x00\x00HEAPCCDR" + bytes(50)
    tail = bytes(100) + b"Canon\x00Canon EOS D60\x00\x00" + bytes(20)
    assert formats.ciff_camera(head, tail) == "Canon EOS D60"
    assert formats.ciff_camera(b"II*\x00" + bytes(20), tail) is None


# ------------------------------------------------------------------------------------ videos


def _video(path: Path, fmt: str, codec: str, matrix: Sequence[int] | None = None) -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(4))
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        if matrix is not None:
            stream.set_display_matrix(list(matrix))
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(np.asarray(marked((160, 96))), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("exact", [False, True])
def test_a_mirrored_video_is_shown_mirrored(tmp_path: Path, exact: bool) -> None:
    """The display matrix's horizontal flip: the white quarter shows top right, not bottom right (a
    flip read as a half turn) nor top left (ignored)."""
    hflip = (-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    video = _video(tmp_path / "mirror.mp4", "mp4", "libx264", hflip)
    # Decoded in a fresh interpreter: after some of the suite's other video tests in the same process the
    # flip came out unapplied (an order dependence not yet understood; see the closing note of this round).
    code = (
        "import sys, numpy as np; from mediasearch.media.decode import sample_video; "
        f"s = sample_video(sys.argv[1], interval=1.0, exact={exact}); "
        "np.save(sys.argv[2], np.asarray(s.frames[0].image))"
    )
    out = tmp_path / "frame.npy"
    subprocess.run([sys.executable, "-c", code, str(video), str(out)], check=True, timeout=120)
    pixels = np.load(out)
    assert near(pixels[3, -4], (255, 255, 255)) and near(pixels[3, 3], RED) and near(pixels[-4, -4], RED)


@pytest.mark.parametrize(("name", "fmt", "codec"), [("a.flv", "flv", "flv"), ("a.asf", "asf", "wmv2")])
def test_flv_and_asf_are_found_and_read(tmp_path: Path, name: str, fmt: str, codec: str) -> None:
    path = _video(tmp_path / name, fmt, codec)
    assert media_kind(name) == "video"
    sample = sample_video(str(path), interval=1.0)
    assert sample.frames and near(np.asarray(sample.frames[0].image)[-4, -4], RED)


def test_every_extension_has_one_kind() -> None:
    assert {"jp2", "j2k", "crw", "dng"} <= IMAGE_EXTS and {"asf", "flv"} <= VIDEO_EXTS
    assert not IMAGE_EXTS & VIDEO_EXTS


# ------------------------------------------------------------------------------------ descriptors


def test_a_dng_thumbnail_is_made_from_an_open_descriptor(tmp_path: Path, make_dng: Callable[..., Path]) -> None:
    """The daemon's thumbnail path reads the checked descriptor, RAW files included."""
    from mediasearch.media.thumbnails import make_thumbnail

    path = make_dng(tmp_path / "a.dng", marked((320, 240)))
    fd = os.open(path, os.O_RDONLY)
    try:
        jpeg = make_thumbnail(str(path), "image", 64, fd=fd)
    finally:
        os.close(fd)
    shown = Image.open(io.BytesIO(jpeg))
    assert shown.format == "JPEG" and max(shown.size) == 64


# ------------------------------------------------------------------------------------ roots


def test_a_symlinked_root_and_its_target_give_one_copy(tmp_path: Path) -> None:
    from mediasearch.media.discover import discover

    real = tmp_path / "photos"
    (real / "sub").mkdir(parents=True)
    marked((32, 24)).save(real / "a.png")
    marked((32, 24)).save(real / "sub" / "b.png")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (tmp_path / "sublink").symlink_to(real / "sub", target_is_directory=True)
    for roots in ([real, tmp_path / "link"], [tmp_path / "link", real], [tmp_path / "sublink", real]):
        found = [e.path for e in discover(roots)]
        names = sorted(os.path.basename(p) for p in found)
        assert names == ["a.png", "b.png"], (roots, found)
