"""Readers for what Pillow alone does not open, and converters to 8-bit RGB.

HEIC/HEIF (pillow-heif) and JPEG XL (pillow-jxl-plugin, the optional ``jxl`` extra) are Pillow
plugins, registered on first use; camera RAW goes through LibRaw (rawpy); TIFFs with float or 32-bit
samples, which Pillow refuses, through tifffile; HDR video frames (PQ, HLG) are tone-mapped here.

The libraries' own output never reaches the terminal: Pillow's and libav's loggers and Python
warnings raised while decoding go to the ``mediasearch.media`` logger at debug level, and LibRaw's
C-level complaints to the null device. Every failure is a `MediaError` with a one-line reason.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from mediasearch.errors import MediaError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "EMPTY_FILE",
    "HEIF_EXTS",
    "JXL_EXTS",
    "RAW_EXTS",
    "RawPicture",
    "extension",
    "hdr_frame_image",
    "c_stderr_muted",
    "hdr_transfer",
    "missing_plugin",
    "plugin_formats",
    "quiet_libav",
    "quiet_logs",
    "read_deep_tiff",
    "read_raw",
    "warnings_to_debug",
]

LOG = logging.getLogger("mediasearch.media")

HEIF_EXTS = frozenset({"heic", "heif", "hif"})
JXL_EXTS = frozenset({"jxl"})
RAW_EXTS = frozenset({"dng", "cr2", "cr3", "crw", "nef", "nrw", "arw", "raf", "orf", "rw2", "pef", "srw"})
PREVIEW_FACTOR = 2  # a RAW's embedded preview is used when its short side is at least this times the target
_RAW_HEAD = 128 * 1024  # a RAW's TIFF header, IFD0 and EXIF IFD sit near its start
_TIFF_MAGIC = {b"II*\x00", b"MM\x00*"}
_TIFF_LIKE = (b"IIRO", b"IIRS", b"IIU\x00")  # Olympus ORF and Panasonic RW2: TIFF with their own magic
_THIRD_PARTY_LOGGERS = ("PIL", "libav", "pillow_heif", "pillow_jxl", "tifffile")


def extension(path: str) -> str:
    """The extension of `path`, lower case, without the dot."""
    return os.path.splitext(path)[1][1:].lower()


# --------------------------------------------------------------------------------------- plugins


_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")
_JXL_MAGIC = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")
_JP2_MAGIC = (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")
HEAD_BYTES = 64  # enough of a file's start to tell its format
EMPTY_FILE = "empty file (0 bytes)"  # the one reason for a file of no bytes, picture or video


def sniff(head: bytes) -> str | None:
    """The Pillow format a file's first bytes name, for the formats a wrong extension would hide:
    "HEIF", "AVIF", "JXL" or "JPEG2000"; None for anything else (Pillow tells the rest apart itself)."""
    if head[4:8] == b"ftyp":
        brands = [head[i : i + 4] for i in range(8, min(len(head), 40), 4) if i != 12]  # major, then compatible
        if any(b in _AVIF_BRANDS for b in brands[:1]):
            return "AVIF"
        if any(b in _HEIF_BRANDS for b in brands):
            return "HEIF"
        if any(b in _AVIF_BRANDS for b in brands):
            return "AVIF"
    if head.startswith(_JXL_MAGIC):
        return "JXL"
    if head.startswith(_JP2_MAGIC):
        return "JPEG2000"
    return None


def plugin_formats(path: str, head: bytes = b"") -> tuple[str, ...]:
    """The Pillow formats a plugin adds for this file, by its extension or by its first bytes (a HEIC
    or a JPEG XL named .jpg), registering the plugin on first use."""
    ext = extension(path)
    found = sniff(head)
    if (ext in HEIF_EXTS or found == "HEIF") and register_heif():
        return ("HEIF",)
    if (ext in JXL_EXTS or found == "JXL") and register_jxl():
        return ("JXL",)
    return ()


def missing_plugin(path: str) -> str | None:
    """What to install when this file's format needs a plugin that is not installed; None otherwise."""
    ext = extension(path)
    if ext in HEIF_EXTS and not register_heif():
        return "HEIC/HEIF needs the pillow-heif package: pip install pillow-heif"
    if ext in JXL_EXTS and not register_jxl():
        return "JPEG XL needs the optional jxl extra: pip install 'mediasearch[jxl]'"
    return None


@functools.cache
def register_heif() -> bool:
    """Register pillow-heif's opener (once); False when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@functools.cache
def register_jxl() -> bool:
    """Register the JPEG XL plugin (importing it does); False when the jxl extra is not installed."""
    try:
        import pillow_jxl  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------- PNG text

PNG_TEXT_LIMIT = 1024 * 1024  # text chunks larger than this (compressed) are passed over
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"iCCP")  # iCCP: a compressed colour profile, which Pillow
# unpacks under the same limit (an 8-bit RGB conversion does not use it)


def png_without_big_text(source: BinaryIO) -> BinaryIO | None:
    """The PNG in ``source`` as Pillow should see it: without the chunks that may be too big for it
    (Pillow refuses a file whose text or colour profile would decompress past its limit, though every
    viewer shows the picture): the compressed ones (zTXt, compressed iTXt, iCCP: a small chunk may
    unpack to gigabytes) and any text over `PNG_TEXT_LIMIT`; None when there is no such chunk. The
    file is read in place, not copied."""
    source.seek(0)
    if source.read(8) != _PNG_SIGNATURE:
        return None
    kept: list[tuple[int, int]] = [(0, 8)]
    offset, dropped = 8, False
    while True:
        header = source.read(8)
        if len(header) < 8:
            break
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        end = offset + 12 + length
        if kind in _PNG_TEXT_CHUNKS and (length > PNG_TEXT_LIMIT or _compressed_text(source, kind)):
            dropped = True
        else:
            kept.append((offset, end))
        if kind == b"IEND":
            break
        offset = end
        source.seek(offset)
    source.seek(0)
    return io.BufferedReader(_Spliced(source, kept)) if dropped else None


def _compressed_text(source: BinaryIO, kind: bytes) -> bool:
    """Is the text chunk whose data ``source`` is at compressed (zTXt always; iTXt by its flag)?"""
    if kind in (b"zTXt", b"iCCP"):
        return True
    if kind != b"iTXt":
        return False
    head = source.read(81)  # a keyword (1-79 bytes), its NUL, then the compression flag
    end = head.find(b"\0")
    return 0 <= end < len(head) - 1 and head[end + 1] != 0


class _Spliced(io.RawIOBase):
    """A read-only view of ``ranges`` of a file, one after the other."""

    def __init__(self, source: BinaryIO, ranges: list[tuple[int, int]]) -> None:
        super().__init__()
        self._source, self._ranges, self._pos = source, ranges, 0
        self._length = sum(end - start for start, end in ranges)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view, done, skipped = memoryview(buffer).cast("B"), 0, 0
        for start, end in self._ranges:
            span = end - start
            if self._pos < skipped + span and done < len(view):
                inner = self._pos - skipped
                self._source.seek(start + inner)
                got = self._source.readinto(view[done : done + min(span - inner, len(view) - done)])  # type: ignore[attr-defined]
                done += got or 0
                self._pos += got or 0
                if not got:
                    break
            skipped += span
        return done


# --------------------------------------------------------------------------------------- logs


class _ToDebug(logging.Handler):
    """Passes a third-party log record on to our logger, at debug level."""

    def emit(self, record: logging.LogRecord) -> None:
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s: %s", record.name, record.getMessage())


@functools.cache
def quiet_logs() -> None:
    """Pillow's (and the plugins') loggers go to our debug log instead of the terminal (once).

    Pillow logs "More samples per pixel than can be decoded" at error level for a corrupt TIFF; with
    no logging set up, Python's last-resort handler would print that on stderr.
    """
    handler = _ToDebug()
    for name in _THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False


@functools.cache
def quiet_libav() -> None:
    """libav's messages: none at all (PyAV's default), or warnings into our debug log when it is on."""
    quiet_logs()
    if not LOG.isEnabledFor(logging.DEBUG):
        return
    import av.logging

    if av.logging.get_level() is None:  # a caller's own choice stands
        av.logging.set_level(av.logging.WARNING)


@contextlib.contextmanager
def warnings_to_debug() -> Iterator[None]:
    """Warnings raised inside ("Possibly corrupt EXIF data", Pillow's pixel-limit warning, ...) go to
    the debug log; decoding checks sizes itself.

    `warnings.catch_warnings` swaps process-wide state, so a warning from another thread in the
    meantime may land here too: it is logged the same way.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        LOG.debug("%s: %s", warning.category.__name__, warning.message)


class _CStderr:
    """Points the C library's ``stderr`` at the null device while at least one user needs it.

    LibRaw prints "FILE: Unexpected end of file" and "data corrupted at N" there itself, and rawpy
    offers no way to turn that off. Python writes to file descriptor 2 directly, so its own output
    (a progress bar, tracebacks) is untouched; only C code writing through ``stderr`` is muted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    @functools.cached_property
    def _handles(self) -> tuple[Any, int] | None:
        """The libc ``stderr`` variable and a FILE* on the null device; None where that cannot be had."""
        import ctypes

        try:
            libc = ctypes.CDLL(None)
            variable = ctypes.c_void_p.in_dll(libc, "__stderrp" if sys.platform == "darwin" else "stderr")
            libc.fopen.restype = ctypes.c_void_p
            libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            null = libc.fopen(os.devnull.encode(), b"w")
        except Exception:  # Windows, or an unusual libc: LibRaw may then speak on stderr
            return None
        return (variable, null) if null else None

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        with self._lock:
            handles = self._handles
            if handles is not None and self._users == 0:
                self._saved, handles[0].value = handles[0].value, handles[1]
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if handles is not None and self._users == 0:
                    handles[0].value = self._saved


_C_STDERR = _CStderr()


def c_stderr_muted() -> contextlib.AbstractContextManager[None]:
    """While inside, C libraries that print through ``stderr`` (LibRaw; libtiff, which Pillow uses
    for compressed TIFFs: "TIFFFillStrip: Read error on strip 0") print to the null device."""
    return _C_STDERR.muted()


# --------------------------------------------------------------------------------------- RAW


@dataclass(frozen=True)
class RawPicture:
    """A camera RAW file, decoded: an oriented RGB image, the full picture's displayed size and its
    TIFF/EXIF tags (Make, Model, DateTime, the EXIF sub-IFD) where they could be found."""

    image: Image.Image
    size: tuple[int, int]
    exif: Mapping[int, Any]
    camera: str | None = None  # from a CIFF heap (Canon CRW), which has no TIFF tags


def read_raw(path: str, target: int, source: BinaryIO | None = None) -> RawPicture:
    """Decode a RAW file (read from ``source`` when given, the file already open): its embedded
    preview when that is at least `PREVIEW_FACTOR` times `target` on the short side (no demosaicing
    at all), else LibRaw's half-size demosaic."""
    import rawpy

    quiet_logs()
    if source is not None:
        source.seek(0)
    try:
        with warnings_to_debug(), _C_STDERR.muted(), rawpy.imread(source if source is not None else path) as raw:
            sizes = raw.sizes
            size = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
            preview = _raw_preview(raw, target, size)
            image = preview if preview is not None else _raw_demosaic(raw)
    except rawpy.LibRawError as exc:
        raise MediaError(_raw_failure(exc)) from exc
    head, tail = _raw_ends(path, source)
    exif = _raw_tags(head)
    if not exif and preview is not None:
        exif = preview.getexif()  # Fujifilm's RAF keeps its EXIF in the embedded JPEG
    return RawPicture(image, size, exif, ciff_camera(head, tail))


def _raw_ends(path: str, source: BinaryIO | None) -> tuple[bytes, bytes]:
    """The first and the last `_RAW_HEAD` bytes of the file (b"" where it cannot be read)."""
    try:
        with contextlib.ExitStack() as stack:
            f = source if source is not None else stack.enter_context(open(path, "rb"))
            f.seek(0)
            head = f.read(_RAW_HEAD)
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - _RAW_HEAD))
            return head, f.read(_RAW_HEAD)
    except OSError:
        return b"", b""


_CIFF_CAMERA = re.compile(rb"([A-Za-z][ -~]{1,31})\x00([A-Za-z][ -~]{1,63})\x00")


def ciff_camera(head: bytes, tail: bytes) -> str | None:
    """Make and model of a CIFF file (Canon CRW: "II", a header length, "HEAPCCDR"): its
    CanonRawMakeModel record holds "Canon\\0Canon EOS D60\\0"; it sits in the image-properties heap,
    which the format puts after the picture data, at the end of the file."""
    if head[:2] != b"II" or head[6:14] != b"HEAPCCDR":
        return None
    for match in _CIFF_CAMERA.finditer(tail):
        make, model = (part.decode("ascii") for part in match.groups())
        if model.lower().startswith(make.lower()):
            return model
    return None


def _raw_preview(raw: Any, target: int, size: tuple[int, int]) -> Image.Image | None:
    """The embedded preview, oriented, when it is large enough; None otherwise."""
    import numpy as np
    import rawpy
    from PIL import Image, ImageOps

    image: Image.Image
    try:
        thumb = raw.extract_thumb()
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(thumb.data), formats=("JPEG",))
            if min(image.size) < PREVIEW_FACTOR * target:
                return None
            own = image.getexif().get(0x0112, 1)
            image.draft("RGB", (target, target))
            image.load()
            if own != 1:  # the preview says how to show itself
                return ImageOps.exif_transpose(image)
        elif thumb.format == rawpy.ThumbFormat.BITMAP and isinstance(thumb.data, np.ndarray):
            image = Image.fromarray(thumb.data)
            if min(image.size) < PREVIEW_FACTOR * target:
                return None
        else:
            return None
    except (rawpy.LibRawError, OSError, SyntaxError, ValueError):  # no preview, or a broken one
        return None
    return _orient(image, raw.sizes.flip, size)


def _orient(image: Image.Image, flip: int, size: tuple[int, int]) -> Image.Image:
    """Turn a preview as LibRaw's `flip` says (3: 180°, 5: 90° counter-clockwise, 6: 90° clockwise),
    unless it is already in the displayed orientation (some cameras store it turned)."""
    from PIL import Image

    turns = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
    method = turns.get(flip)
    if method is None:
        return image
    portrait_shown, portrait_stored = size[1] > size[0], image.height > image.width
    if flip in (5, 6) and image.width != image.height and portrait_stored == portrait_shown:
        return image
    return image.transpose(method)


def _raw_demosaic(raw: Any) -> Image.Image:
    """LibRaw's half-size demosaic (one pixel per Bayer quad: 4x fewer pixels, and quick)."""
    from PIL import Image

    return Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))


def _raw_tags(head: bytes) -> Mapping[int, Any]:
    """IFD0 of a TIFF-based RAW (DNG, CR2, NEF, ARW, ORF, RW2, PEF, SRW) or of a CR3's CMT1 box, from
    the file's first bytes."""
    from PIL import Image

    if head[:4] in _TIFF_LIKE:
        head = b"II*\x00" + head[4:]
    elif head[:4] not in _TIFF_MAGIC:
        box = head.find(b"CMT1")
        head = head[box + 4 :] if box >= 4 else b""
    exif = Image.Exif()
    if head[:4] in _TIFF_MAGIC:
        try:
            with warnings_to_debug():
                exif.load(head)
        except Exception:  # damaged tags cost the date and camera, not the picture
            return {}
    return exif


def _raw_failure(exc: BaseException) -> str:
    import rawpy

    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return "not a RAW file that LibRaw can read (unsupported camera, or not a RAW file)"
    if isinstance(exc, rawpy.LibRawIOError):
        return "truncated or unreadable RAW file"
    if isinstance(exc, rawpy.LibRawDataError):
        return "corrupt RAW data"
    if isinstance(exc, (rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawTooBigError)):
        return "RAW image too large to decode"
    text = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    return f"cannot decode RAW file: {' '.join(text.split()) or type(exc).__name__}"


# --------------------------------------------------------------------------------------- deep TIFFs


def read_deep_tiff(source: BinaryIO, max_bytes: int | None = None) -> Image.Image:
    """The first page of a TIFF that Pillow refuses (float, 32-bit or 64-bit samples), scaled to 8 bits.

    Raises `MediaError` when tifffile cannot read it either, or its samples take over ``max_bytes``
    (by default the decoders' memory budget, `memory.DECODE_BUDGET_BYTES`).
    """
    from mediasearch.media import memory

    budget = memory.DECODE_BUDGET_BYTES if max_bytes is None else max_bytes
    try:
        import tifffile
    except ImportError as exc:
        raise MediaError("this TIFF needs the tifffile package: pip install tifffile") from exc
    quiet_logs()
    try:
        with warnings_to_debug(), tifffile.TiffFile(source) as tif:
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
            # every sample counts: a "volume" page (ImageDepth) would be read whole
            itemsize = page.dtype.itemsize if page.dtype is not None else 8
            needed = math.prod(page.shape) * itemsize * 2  # the samples and their 8-bit copy
            if needed > budget:
                raise MediaError(memory.bomb_message((width, height), needed))
            data, axes, photometric = page.asarray(), page.axes, int(page.photometric)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot decode TIFF: {' '.join(str(exc).split()) or type(exc).__name__}") from exc
    return _samples_image(data, axes, photometric)


def _samples_image(data: np.ndarray, axes: str, photometric: int) -> Image.Image:
    """An L, LA, RGB or RGBA image from a page's samples (grey, white-is-zero grey, RGB, + alpha)."""
    import numpy as np
    from PIL import Image

    if data.ndim == 3 and axes.startswith("S"):
        data = np.moveaxis(data, 0, -1)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or photometric not in (0, 1, 2):
        raise MediaError(f"cannot decode TIFF: unsupported sample layout {axes} (photometric {photometric})")
    colours = 3 if photometric == 2 and data.shape[2] >= 3 else 1
    pixels = scale_to_8bit(data[..., :colours])
    if photometric == 0:  # white is zero
        pixels = 255 - pixels
    if data.shape[2] > colours:  # the first extra sample: alpha
        pixels = np.concatenate([pixels, scale_to_8bit(data[..., colours : colours + 1])], axis=2)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)


def scale_to_8bit(values: np.ndarray) -> np.ndarray:
    """uint8 from any sample type (the one scaler for deep TIFFs and Pillow's 16/32-bit and float modes):
    unsigned integers by their type's range; non-negative signed integers as 8-bit when they stay
    within 255, as 16-bit when within 65535 (Pillow's "I" mode holds 16-bit PNGs); floats in [0, 1]
    by 255; anything else stretched from its lowest to its highest value."""
    import numpy as np

    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "u":
        scaled = values.astype(np.float64) * (255 / np.iinfo(values.dtype).max)
    else:
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if values.dtype.kind == "i" and low >= 0 and high <= 255:
            scaled = finite
        elif values.dtype.kind == "i" and low >= 0 and high <= 65535:
            scaled = finite * (255 / 65535)
        elif values.dtype.kind == "f" and low >= 0 and high <= 1:
            scaled = finite * 255
        else:
            scaled = (finite - low) * (255 / max(high - low, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------- HDR video

# SMPTE ST 2084 (PQ) constants, and ARIB STD-B67 (HLG) ones.
_PQ_M1, _PQ_M2 = 2610 / 16384, 2523 / 4096 * 128
_PQ_C1, _PQ_C2, _PQ_C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * math.log(4 * _HLG_A)
_REFERENCE_WHITE_NITS = 203.0  # ITU-R BT.2408: HDR reference white, shown as SDR white
_HLG_PEAK_NITS = 1000.0
_KNEE = 0.8  # SDR values above this are compressed smoothly instead of clipped
_BT2020_TO_BT709 = (
    (1.6605, -0.5876, -0.0728),
    (-0.1246, 1.1329, -0.0083),
    (-0.0182, -0.1006, 1.1187),
)
_TRANSFERS = {16: "pq", 18: "hlg"}  # AVColorTransferCharacteristic values


def hdr_transfer(color_trc: int | None) -> str | None:
    """The HDR transfer ("pq" or "hlg") of an FFmpeg color_trc number; None for SDR."""
    return _TRANSFERS.get(int(color_trc)) if color_trc is not None else None


def hdr_frame_image(frame: Any, transfer: str, width: int | None = None, height: int | None = None) -> Image.Image:
    """An HDR (PQ or HLG, BT.2020) PyAV frame as 8-bit sRGB: linearised, moved to BT.709 primaries,
    with reference white (203 nits) at SDR white and the highlights above rolled off.

    Converting such a frame straight to RGB, as an SDR frame, would give a flat, washed-out picture.
    """
    import numpy as np
    from PIL import Image

    size = {} if width is None or height is None else {"width": width, "height": height}
    signal = frame.to_ndarray(format="rgb48le", **size).astype(np.float32) / 65535.0
    linear = _pq_to_linear(signal) if transfer == "pq" else _hlg_to_linear(signal)
    sdr = np.clip(linear @ np.asarray(_BT2020_TO_BT709, dtype=np.float32).T, 0.0, None)
    rolled = np.where(sdr <= _KNEE, sdr, _KNEE + (1 - _KNEE) * np.tanh((sdr - _KNEE) / (1 - _KNEE)))
    return Image.fromarray(np.clip(np.rint(_srgb_encode(rolled) * 255), 0, 255).astype(np.uint8), mode="RGB")


def _pq_to_linear(signal: np.ndarray) -> np.ndarray:
    """PQ code values to linear light, 1.0 = reference white."""
    import numpy as np

    power = np.power(signal, 1 / _PQ_M2)
    nits = 10000.0 * np.power(np.maximum(power - _PQ_C1, 0) / (_PQ_C2 - _PQ_C3 * power), 1 / _PQ_M1)
    return nits / _REFERENCE_WHITE_NITS


def _hlg_to_linear(signal: np.ndarray) -> np.ndarray:
    """HLG code values to display light on a 1000-nit display (BT.2100 OOTF), 1.0 = reference white."""
    import numpy as np

    low = signal**2 / 3
    high = (np.exp((signal - _HLG_C) / _HLG_A) + _HLG_B) / 12
    scene = np.where(signal <= 0.5, low, high)
    luma = scene @ np.asarray((0.2627, 0.6780, 0.0593), dtype=np.float32)
    nits = _HLG_PEAK_NITS * np.power(np.maximum(luma, 1e-6), 0.2)[..., None] * scene
    return nits / _REFERENCE_WHITE_NITS


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
