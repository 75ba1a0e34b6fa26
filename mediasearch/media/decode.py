"""Decode images into RGB images plus their media metadata (videos: `video`; metadata: `metadata`).

Pillow and numpy are imported inside the functions that use them; the readers for HEIC, JPEG XL,
camera RAW, deep TIFFs live in `formats`. Every failure is a `MediaError` with a one-line reason;
nothing else escapes `load_image`. `sample_video`, `plan_timestamps`, `Frame`, `VideoSample` and
`MediaMeta` are re-exported here for the callers that decode both.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import TYPE_CHECKING, BinaryIO

from mediasearch.errors import MediaError
from mediasearch.media import formats, memory, metadata
from mediasearch.media.metadata import MediaMeta, exif_camera, exif_date, exif_gps, image_meta, one_line
from mediasearch.media.video import Frame, VideoSample, frame_image, plan_timestamps, sample_video

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "NEUTRAL_GREY",
    "Frame",
    "MediaMeta",
    "VideoSample",
    "frame_image",
    "load_image",
    "plan_timestamps",
    "sample_video",
]

NEUTRAL_GREY = (128, 128, 128)
"""Background that transparent areas are composited on."""

_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "JPEG2000")  # JPEG also opens MPO
# errno values that say the file could not be read (a decoder's own OSError, such as libtiff's EINVAL on
# a damaged file, is about the content: the failure is remembered, index.failures)
_IO_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOENT", "EACCES", "EPERM", "EIO", "EISDIR", "ENXIO", "ESTALE", "ETIMEDOUT", "EAGAIN", "ELOOP")
    if hasattr(errno, name)
)
_MAX_ASPECT = 4  # images are centre-cropped to at most 4:1 (see _crop_aspect)


# --------------------------------------------------------------------------------------------- images


def load_image(
    path: str | os.PathLike[str], *, target: int = 224, source: BinaryIO | None = None, whole: bool = False
) -> tuple[Image.Image, MediaMeta]:
    """Decode an image to RGB, oriented, with a short side in [target, 2*target) when larger.

    Large JPEGs are decoded at reduced size, camera RAW files from their embedded preview when it is
    large enough; `MediaMeta` keeps the original (oriented) size. The decoder is chosen by the file's
    content where its extension lies (a HEIC or JPEG XL named .jpg). A picture longer than 4:1 is
    centre-cropped to 4:1 (all CLIP sees of it), unless ``whole`` (the enrichers: the words at the ends
    of a banner, the top and total of a long receipt). With ``source`` (the file already
    open and checked: the daemon's thumbnails) the bytes come from it and ``path`` only names the file.
    Raises `MediaError` for anything that cannot be decoded, including pictures too large to decode
    in the memory the decoders may take (`memory`).
    """
    path = os.fspath(path)
    formats.quiet_logs()
    memory.pillow_guard_off()
    try:
        with contextlib.ExitStack() as stack:
            if source is None:
                source = stack.enter_context(open(path, "rb"))
            source.seek(0)
            head = source.read(formats.HEAD_BYTES)
            if not head:  # a copy that never finished, a cloud placeholder: say so, not "cannot identify"
                raise MediaError(formats.EMPTY_FILE)
            source.seek(0)
            return _decode_source(path, source, head, target, whole)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(_image_failure(exc)) from exc


def _decode_source(
    path: str, source: BinaryIO, head: bytes, target: int, whole: bool = False
) -> tuple[Image.Image, MediaMeta]:
    from PIL import UnidentifiedImageError

    ext = formats.extension(path)
    if ext in formats.RAW_EXTS and formats.sniff(head) is None:
        return _decode_raw(path, source, target, whole)
    # libtiff (Pillow's reader of compressed TIFFs) prints on the C library's stderr
    tiff = ext in ("tif", "tiff") or head[:4] in (b"II*\x00", b"MM\x00*")
    muted = formats.c_stderr_muted() if tiff else contextlib.nullcontext()
    with formats.warnings_to_debug(), muted:
        try:
            return _open_and_decode(path, source, head, target, whole)
        except UnidentifiedImageError as exc:
            fallback = _unidentified_fallback(path, source, tiff, exc)
            return _finish(fallback, target, whole), MediaMeta(*fallback.size)
        except ValueError as exc:
            spliced = formats.png_without_big_text(source) if "TEXT" in str(exc).upper() else None
            if spliced is None:
                raise
            return _open_and_decode(path, spliced, head, target, whole)


def _open_and_decode(
    path: str, source: BinaryIO, head: bytes, target: int, whole: bool = False
) -> tuple[Image.Image, MediaMeta]:
    from PIL import Image

    with Image.open(source, formats=_image_formats(path, head)) as im:
        return _decode_opened(im, target, whole)


def _decode_opened(im: Image.Image, target: int, whole: bool = False) -> tuple[Image.Image, MediaMeta]:
    from PIL import ImageOps

    original = im.size
    if im.format in ("JPEG", "MPO") and target > 0:
        im.draft("RGB", (target, target))  # DCT scaling: both sides stay >= target
    with memory.reserve(im.size, im.mode, original):  # before getexif, which decodes a whole PNG
        meta = metadata.with_xmp(image_meta(original, im.getexif()), _xmp_of(im))
        im.load()  # a full decode now, so a truncated file fails here and not in the encoder
        ImageOps.exif_transpose(im, in_place=True)
        out = _finish(im, target, whole)
        # The caller's `with` closes `im`, which would invalidate it if it were returned as is.
        return (out.copy() if out is im else out), meta


def _xmp_of(im: Image.Image) -> bytes | str | None:
    """The XMP packet Pillow found (JPEG APP1, WebP, HEIF: "xmp"; PNG: an iTXt chunk; TIFF: tag 700)."""
    found = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if found is None and im.format == "TIFF":
        found = getattr(im, "tag_v2", {}).get(700)
    return found if isinstance(found, (bytes, str)) else None


def _finish(im: Image.Image, target: int, whole: bool = False) -> Image.Image:
    """RGB, reduced towards the target size, cropped to a sane aspect ratio (unless ``whole``)."""
    reduced = _reduce(_to_rgb(im), target)
    return reduced if whole else _crop_aspect(reduced)


def _decode_raw(path: str, source: BinaryIO, target: int, whole: bool = False) -> tuple[Image.Image, MediaMeta]:
    picture = formats.read_raw(path, target, source)
    width, height = picture.size
    lat, lon = exif_gps(picture.exif)
    camera = exif_camera(picture.exif) or picture.camera
    meta = MediaMeta(width, height, exif_date(picture.exif), camera, lat=lat, lon=lon)
    return _finish(picture.image, target, whole), meta


def _unidentified_fallback(path: str, source: BinaryIO, tiff: bool, exc: BaseException) -> Image.Image:
    """What else can read a file Pillow did not recognise: tifffile for a TIFF with float or 32-bit
    samples; raises the install hint when the format's plugin is missing, else the reason."""
    hint = formats.missing_plugin(path)
    if hint is not None:
        raise MediaError(hint) from exc
    if not tiff:
        raise MediaError(_image_failure(exc)) from exc
    source.seek(0)
    return formats.read_deep_tiff(source)


def _image_formats(path: str, head: bytes = b"") -> tuple[str, ...]:
    """Formats Pillow may try: the common photo formats only, plus HEIF or JPEG XL (their plugins
    registered on first use) for files named so or that start like one."""
    return (*_IMAGE_FORMATS, *formats.plugin_formats(path, head))


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB with transparency composited on neutral grey; 16-bit and float greys scaled to 8 bits."""
    from PIL import Image

    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*NEUTRAL_GREY, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image in 8 bits (Pillow's own convert would clip)."""
    import numpy as np
    from PIL import Image

    values = np.asarray(im)
    if im.mode.startswith("I;16"):  # whatever byte order numpy got, these are 16-bit samples
        values = values.astype(np.uint16)
    return Image.fromarray(formats.scale_to_8bit(values))


def _crop_aspect(im: Image.Image) -> Image.Image:
    """Centre-crop the long side to `_MAX_ASPECT` times the short one.

    CLIP's centre crop sees no more than the middle square anyway, and scaling a 100000x1 strip up
    to the model's input size would need gigabytes.
    """
    width, height = im.size
    longest = _MAX_ASPECT * min(width, height)
    if max(width, height) <= longest:
        return im
    if width > height:
        left = (width - longest) // 2
        return im.crop((left, 0, left + longest, height))
    top = (height - longest) // 2
    return im.crop((0, top, width, top + longest))


def _reduce(im: Image.Image, target: int) -> Image.Image:
    """Box-reduce by an integer factor so the short side lands in [target, 2*target)."""
    factor = min(im.size) // target if target > 0 else 0
    return im.reduce(factor) if factor >= 2 else im


def _image_failure(exc: BaseException) -> str:
    """A one-line reason for a failed image decode."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, Image.DecompressionBombError):  # a caller's own pixel limit
        return memory.bomb_message(_bomb_size(exc))
    if isinstance(exc, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(exc, OSError) and exc.errno in _IO_ERRNOS:  # the file, not its content
        return f"cannot read file: {one_line(exc.strerror or str(exc)).lower()}"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return "truncated image"
    return f"cannot decode image: {one_line(str(exc)) or type(exc).__name__}"


def _bomb_size(exc: BaseException) -> tuple[int, int] | None:
    """The declared size from Pillow's bomb check; its message has only the pixel count."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_decompression_bomb_check":
            size = frame.f_locals.get("size")
            if isinstance(size, tuple) and len(size) == 2:
                return int(size[0]), int(size[1])
        tb = tb.tb_next
    return None


def read_metadata(path: str, kind: str) -> MediaMeta:
    """A file's metadata without decoding its pixels: an image's EXIF and XMP, a video's container tags."""
    from PIL import Image

    from mediasearch.media.video import video_meta

    path = os.fspath(path)
    if kind == "video":
        return video_meta(path)
    formats.quiet_logs()
    try:
        with open(path, "rb") as source:
            head = source.read(formats.HEAD_BYTES)
            source.seek(0)
            if formats.extension(path) in formats.RAW_EXTS and formats.sniff(head) is None:
                return _decode_raw(path, source, 64)[1]
            with formats.warnings_to_debug(), Image.open(source, formats=_image_formats(path, head)) as im:
                return metadata.with_xmp(image_meta(im.size, im.getexif()), _xmp_of(im))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(_image_failure(exc)) from exc
