"""Shared fixtures: factories that write real media files (images, H.264 videos, broken files).

Each factory takes a path (relative paths land under the test's tmp_path), creates missing parent
folders, writes the file and returns its Path. Keep the names and keyword arguments stable: every
test module uses them.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from PIL import Image

Color = tuple[int, int, int]

DEFAULT_VIDEO_COLORS: tuple[Color, ...] = (
    (220, 30, 30),  # red
    (40, 170, 60),  # green
    (40, 70, 220),  # blue
    (240, 220, 40),  # yellow
    (140, 50, 170),  # purple
    (250, 140, 20),  # orange
)
"""make_video's default colours: with the default 6 s, colour i is shown during second i."""

IMAGE_FORMATS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
}

BROKEN_KINDS = (
    "empty",
    "truncated_jpeg",
    "text_as_jpg",
    "bomb",
    "bomb_warning",
    "truncated_mp4",
    "damaged_mp4",
    "mp4_no_moov",
    "random_bytes",
)


def _video_color_at(t: float, seconds: float = 6.0, colors: Sequence[Color] = DEFAULT_VIDEO_COLORS) -> Color:
    """The colour make_video shows at time `t`: the colours split the video into equal segments."""
    index = min(int(t * len(colors) / seconds), len(colors) - 1)
    return colors[index]


@pytest.fixture
def video_color_at() -> Callable[..., Color]:
    """`video_color_at(t, seconds=6.0, colors=DEFAULT_VIDEO_COLORS)`: the colour make_video shows at t."""
    return _video_color_at


def _resolve(base: Path, path: str | Path) -> Path:
    target = Path(path) if Path(path).is_absolute() else base / path
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_image(path, *, size=(64, 48), color=(200, 30, 30), mode="RGB", fmt=None,
    exif_orientation=None, exif_date=None, exif_camera=None, transparent=True, marker=False,
    extra_frames=()) -> Path`.

    - `fmt` defaults from the suffix (jpg, png, webp, gif, bmp, tif).
    - Modes: RGB, L, RGBA, LA, P, CMYK, I;16. RGBA, LA and P (when `transparent`) have a fully
      transparent right half. For I;16, an int `color` is the 16-bit value; a tuple is scaled up.
    - `marker` paints the top-left quarter white (to check orientation).
    - `exif_date` ("YYYY:MM:DD HH:MM:SS" or a datetime) sets DateTimeOriginal and DateTime;
      `exif_camera` is (make, model).
    - `extra_frames`: colours of further frames (animated GIF/WebP, multi-page TIFF).
    """

    def make(
        path: str | Path,
        *,
        size: tuple[int, int] = (64, 48),
        color: Color | int = (200, 30, 30),
        mode: str = "RGB",
        fmt: str | None = None,
        exif_orientation: int | None = None,
        exif_date: str | datetime | None = None,
        exif_camera: tuple[str, str] | None = None,
        transparent: bool = True,
        marker: bool = False,
        extra_frames: Sequence[Color] = (),
    ) -> Path:
        target = _resolve(tmp_path, path)
        fmt = fmt or IMAGE_FORMATS[target.suffix.lower().lstrip(".")]
        image = _image(size, color, mode, transparent, marker)
        options: dict[str, Any] = {}
        exif = _exif(exif_orientation, exif_date, exif_camera)
        if exif is not None:
            options["exif"] = exif
        if fmt in ("JPEG", "WEBP"):
            options["quality"] = 95
        if image.mode == "P" and "transparency" in image.info:
            options["transparency"] = image.info["transparency"]
        if extra_frames:
            more = [_image(size, c, mode, transparent, marker) for c in extra_frames]
            options.update(save_all=True, append_images=more)
        image.save(target, format=fmt, **options)
        return target

    return make


def _image(size: tuple[int, int], color: Color | int, mode: str, transparent: bool, marker: bool) -> Image.Image:
    from PIL import Image, ImageDraw

    rgb = color if isinstance(color, tuple) else (color, color, color)
    grey = rgb[0] if not isinstance(color, tuple) else round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
    width, height = size
    right_half = (width // 2, 0, width, height)
    if mode == "I;16":
        value = color if isinstance(color, int) else grey * 257
        image = Image.new("I;16", size, value)
    elif mode == "P":
        image = Image.new("P", size, 0)
        image.putpalette([*rgb, 255, 255, 255, 0, 0, 0])
        if marker:
            ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height // 2 - 1), fill=1)
        if transparent:
            ImageDraw.Draw(image).rectangle(right_half, fill=2)
            image.info["transparency"] = 2
        return image
    elif mode == "L":
        image = Image.new("L", size, grey)
    else:
        image = Image.new("RGB", size, rgb)
    if marker:
        white = 65535 if mode == "I;16" else (255 if mode == "L" else (255, 255, 255))
        ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height // 2 - 1), fill=white)
    if mode in ("RGBA", "LA"):
        image = image.convert(mode)
        if transparent:
            alpha = Image.new("L", size, 255)
            ImageDraw.Draw(alpha).rectangle(right_half, fill=0)
            image.putalpha(alpha)
    elif mode == "CMYK":
        image = image.convert("CMYK")
    return image


def _exif(orientation: int | None, date: str | datetime | None, camera: tuple[str, str] | None) -> Image.Exif | None:
    from PIL import Image

    if orientation is None and date is None and camera is None:
        return None
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if date is not None:
        text = date.strftime("%Y:%m:%d %H:%M:%S") if isinstance(date, datetime) else date
        exif[0x0132] = text
        exif.get_ifd(0x8769)[0x9003] = text
    if camera is not None:
        exif[0x010F], exif[0x0110] = camera
    return exif


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_video(path, *, seconds=6.0, fps=8, size=(160, 120), colors=None, gop=16,
    rotation=0, noise=False, marker=False, faststart=False, creation_time=None) -> Path`.

    Writes an H.264 MP4 (PyAV, yuv420p) whose frames are flat colours that change over time: the
    `colors` (default DEFAULT_VIDEO_COLORS) split the video into equal segments — see
    the `video_color_at` fixture. `noise` fills the top quarter with random pixels (realistic sizes),
    `marker` paints the top-left quarter white, `rotation` sets the display rotation (degrees
    counter-clockwise, as phones record portrait video), `faststart` puts the index (moov) first.
    """

    def make(
        path: str | Path,
        *,
        seconds: float = 6.0,
        fps: int = 8,
        size: tuple[int, int] = (160, 120),
        colors: Sequence[Color] | None = None,
        gop: int = 16,
        rotation: int = 0,
        noise: bool = False,
        marker: bool = False,
        faststart: bool = False,
        creation_time: str | None = None,
    ) -> Path:
        target = _resolve(tmp_path, path)
        _write_video(
            target,
            seconds,
            fps,
            size,
            tuple(colors or DEFAULT_VIDEO_COLORS),
            gop,
            rotation,
            noise,
            marker,
            faststart,
            creation_time,
        )
        return target

    return make


def _write_video(
    target: Path,
    seconds: float,
    fps: int,
    size: tuple[int, int],
    colors: Sequence[Color],
    gop: int,
    rotation: int,
    noise: bool,
    marker: bool,
    faststart: bool,
    creation_time: str | None,
) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    width, height = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(target), "w", format="mp4", options=options) as container:
        if creation_time is not None:
            container.metadata["creation_time"] = creation_time
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = width, height, "yuv420p", gop
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(max(1, round(seconds * fps))):
            pixels = np.empty((height, width, 3), np.uint8)
            pixels[:] = _video_color_at(i / fps, seconds, colors)
            if noise:
                pixels[: height // 4] = rng.integers(0, 256, (height // 4, width, 3), dtype=np.uint8)
            if marker:
                pixels[: height // 2, : width // 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def make_broken(tmp_path: Path, make_video: Callable[..., Path]) -> Callable[[str | Path, str], Path]:
    """Factory: `make_broken(path, kind) -> Path`, kind in BROKEN_KINDS:

    empty; truncated_jpeg (a noisy JPEG cut at 60 %); text_as_jpg; random_bytes (4 KiB);
    bomb (a tiny PNG declaring 30000x30000: over 2x Pillow's pixel limit, an error at open);
    bomb_warning (declares 10000x10000: between 1x and 2x the limit, only a warning in Pillow);
    truncated_mp4 (index first, cut at 50 %: decord cannot index it, the first half is readable);
    damaged_mp4 (index first, last third zeroed: the size is intact, the tail frames do not decode);
    mp4_no_moov (index last, cut at 50 %: nothing says what the data is).
    """

    def make(path: str | Path, kind: str) -> Path:
        target = _resolve(tmp_path, path)
        if kind == "empty":
            target.write_bytes(b"")
        elif kind == "text_as_jpg":
            target.write_text("this is not a picture\n")
        elif kind == "random_bytes":
            target.write_bytes(random.Random(0).randbytes(4096))
        elif kind == "truncated_jpeg":
            data = _noisy_jpeg()
            target.write_bytes(data[: len(data) * 6 // 10])
        elif kind in ("bomb", "bomb_warning"):
            side = 30000 if kind == "bomb" else 10000
            target.write_bytes(_png_header_only(side, side))
        elif kind in ("truncated_mp4", "damaged_mp4", "mp4_no_moov"):
            _broken_mp4(target, kind, make_video)
        else:
            raise ValueError(f"unknown broken kind {kind!r}; one of {BROKEN_KINDS}")
        return target

    return make


def _noisy_jpeg() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size but holds almost no data: a decompression bomb in miniature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _broken_mp4(target: Path, kind: str, make_video: Callable[..., Path]) -> None:
    source = make_video(target.with_name(target.name + ".source.mp4"), noise=True, faststart=kind != "mp4_no_moov")
    data = bytearray(source.read_bytes())
    source.unlink()
    if kind == "damaged_mp4":
        cut = len(data) * 2 // 3
        data[cut:] = bytes(len(data) - cut)
    else:
        del data[len(data) // 2 :]
    target.write_bytes(bytes(data))


# sRGB primaries: the XYZ (D65) -> linear sRGB matrix, as a DNG ColorMatrix1 (SRATIONAL, 1/10000).
_XYZ_TO_SRGB = (3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570)


@pytest.fixture
def make_dng(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `make_dng(path, image, *, preview=None, orientation=None, camera=("Testmake",
    "Testmake Cam1"), date="2021:05:06 07:08:09") -> Path`.

    Writes a minimal DNG that LibRaw reads: `image` (PIL RGB, even sides) as a 12-bit RGGB Bayer
    mosaic whose camera space is linear sRGB, so that LibRaw's demosaic gives the picture back.
    `preview` (PIL RGB) is embedded as a JPEG preview in IFD0, the raw data then in a SubIFD, as
    cameras and converters do. `orientation` is the TIFF/EXIF orientation tag.
    """

    def make(
        path: str | Path,
        image: Image.Image,
        *,
        preview: Image.Image | None = None,
        orientation: int | None = None,
        camera: tuple[str, str] = ("Testmake", "Testmake Cam1"),
        date: str = "2021:05:06 07:08:09",
    ) -> Path:
        target = _resolve(tmp_path, path)
        _write_dng(target, image, preview, orientation, camera, date)
        return target

    return make


def _bayer(image: Image.Image) -> Any:
    import numpy as np

    linear = (np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0) ** 2.2 * 3800 + 64
    cfa = np.empty(linear.shape[:2], np.uint16)
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    return cfa


def _write_dng(
    target: Path,
    image: Image.Image,
    preview: Image.Image | None,
    orientation: int | None,
    camera: tuple[str, str],
    date: str,
) -> None:
    import io

    import numpy as np
    import tifffile

    matrix = [v for m in _XYZ_TO_SRGB for v in (round(m * 10000), 10000)]
    raw_tags = [
        (33421, "H", 2, (2, 2)),
        (33422, "B", 4, (0, 1, 1, 2)),
        (50714, "H", 1, (64,)),
        (50717, "H", 1, (4095,)),
    ]
    ifd0 = [
        (50706, "B", 4, (1, 4, 0, 0)),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0)),  # DNGBackwardVersion
        (50708, "s", 0, " ".join(camera)),  # UniqueCameraModel
        (50721, "2i", 9, tuple(matrix)),  # ColorMatrix1
        (50778, "H", 1, (21,)),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1)),  # AsShotNeutral
        (271, "s", 0, camera[0]),
        (272, "s", 0, camera[1]),
        (306, "s", 0, date),
    ]
    if orientation is not None:
        ifd0.append((274, "H", 1, (orientation,)))
    cfa = _bayer(image)
    with tifffile.TiffWriter(target) as tif:
        if preview is None:
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=ifd0 + raw_tags, metadata=None)
            return
        # tifffile writes JPEG strips only through imagecodecs: write the JPEG as an "uncompressed"
        # strip padded to full size (decoders stop at the JPEG's end), then mark it as JPEG.
        buffer = io.BytesIO()
        preview.convert("RGB").save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        width, height = preview.size
        padded = np.frombuffer(data + bytes(width * height * 3 - len(data)), np.uint8).reshape(height, width, 3)
        tif.write(
            padded, photometric="rgb", subfiletype=1, subifds=1, extratags=ifd0, metadata=None, rowsperstrip=height
        )
        tif.write(cfa, photometric=32803, subfiletype=0, extratags=raw_tags, metadata=None)
    if preview is not None:
        with tifffile.TiffFile(target, mode="r+b") as tif:
            tif.pages[0].tags["Compression"].overwrite(7)  # JPEG
            tif.pages[0].tags["PhotometricInterpretation"].overwrite(6)  # YCbCr


# Fixtures for indexing and search with the demo model live in their own module.
from library_fixtures import (  # noqa: E402, F401
    _offline,
    _share_demo_model,
    cli,
    demo_model,
    demo_settings,
    shapes_folder,
)


@pytest.fixture
def make_tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Factory: a tmpfs of ``size`` MiB mounted for the test (skipped where this process may not mount)."""
    import subprocess

    mounted: list[Path] = []

    def make(size_mib: int) -> Path:
        mount = tmp_path / f"disk{len(mounted) or ''}"
        mount.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)]
        done = subprocess.run(command, capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(mount)
        return mount

    try:
        yield make
    finally:
        for mount in mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(make_tmpfs: Callable[[int], Path]) -> Path:
    """A 384 MiB tmpfs mounted for the test (skipped where this process may not mount)."""
    return make_tmpfs(384)
