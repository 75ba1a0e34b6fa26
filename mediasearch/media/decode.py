"""Decode images and sample video frames into RGB images plus their media metadata.

Pillow, numpy, decord and PyAV are imported inside the functions that use them; the readers for
HEIC, JPEG XL, camera RAW, deep TIFFs and HDR frames live in `formats`. Every failure is a
`MediaError` with a one-line reason; nothing else escapes `load_image` or `sample_video`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mediasearch.errors import MediaError
from mediasearch.media import formats

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "NEUTRAL_GREY",
    "Frame",
    "MediaMeta",
    "VideoSample",
    "frame_image",
    "frames_at",
    "load_image",
    "plan_timestamps",
    "read_metadata",
    "sample_video",
]

NEUTRAL_GREY = (128, 128, 128)
"""Background that transparent areas are composited on."""

_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")  # JPEG also opens MPO
_MAX_ASPECT = 4  # images are centre-cropped to at most 4:1 (see _crop_aspect)
_PYAV_ONLY_CONTAINERS = ("mpegts",)  # decord cannot seek in them (B-frames make every read fail)
_BATCH_FRAMES = 32  # frames per decord get_batch call: bounds memory and the cost of one failure
KEYFRAME_TOLERANCE = 0.25  # a keyframe this close to a planned time (a fraction of the step) stands in for it
MAX_KEYFRAME_SHIFT_S = 1.0  # ... but never further away than this
_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME = 0x010F, 0x0110, 0x0132
_TAG_DATETIME_ORIGINAL, _TAG_OFFSET, _TAG_OFFSET_ORIGINAL = 0x9003, 0x9010, 0x9011
_GPS_IFD = 0x8825
_TAG_LAT_REF, _TAG_LAT, _TAG_LON_REF, _TAG_LON = 1, 2, 3, 4
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees
_VIDEO_DATE_KEYS = ("com.apple.quicktime.creationdate", "creation_time", "date")
_VIDEO_MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
_VIDEO_MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")
_VIDEO_PLACE_KEYS = ("com.apple.quicktime.location.ISO6709", "location")  # ISO 6709: "+48.8584+002.2945+035/"
_ISO6709 = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class MediaMeta:
    """Size as displayed (orientation applied), capture date (unix time), camera, video duration, and
    where it was taken (EXIF GPS, decimal degrees) when known."""

    width: int
    height: int
    date: float | None = None
    camera: str | None = None
    duration: float | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True)
class Frame:
    """One sampled video frame and the time (seconds from the start) it is shown at."""

    timestamp: float
    image: Image.Image


@dataclass
class VideoSample:
    """Frames sampled from a video; `error` says what was lost when the file was partly unreadable."""

    frames: list[Frame]
    meta: MediaMeta
    error: str | None = None


# --------------------------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike[str], *, target: int = 224) -> tuple[Image.Image, MediaMeta]:
    """Decode an image to RGB, oriented, with a short side in [target, 2*target) when larger.

    Large JPEGs are decoded at reduced size, camera RAW files from their embedded preview when it is
    large enough; `MediaMeta` keeps the original (oriented) size. Raises `MediaError` for anything
    that cannot be decoded, including decompression bombs.
    """
    from PIL import Image

    path = os.fspath(path)
    formats.quiet_logs()
    ext = formats.extension(path)
    try:
        if ext in formats.RAW_EXTS:
            return _decode_raw(path, target)
        # Between 1x and 2x its pixel limit Pillow only warns; the size check in _decode_opened fails
        # those files instead, so the warning goes to the debug log with any other decoder warning.
        muted = formats.c_stderr_muted() if ext in ("tif", "tiff") else contextlib.nullcontext()
        with formats.warnings_to_debug(), muted:
            with Image.open(path, formats=_image_formats(path)) as im:
                return _decode_opened(im, target)
    except MediaError:
        raise
    except Exception as exc:
        fallback = _unidentified_fallback(path, exc)
        if fallback is None:
            raise MediaError(_image_failure(exc)) from exc
        return _finish(fallback, target), MediaMeta(*fallback.size)


def _decode_opened(im: Image.Image, target: int) -> tuple[Image.Image, MediaMeta]:
    from PIL import Image, ImageOps

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and im.width * im.height > limit:
        raise MediaError(_bomb_message(im.size))
    exif = im.getexif()
    meta = _image_meta(im.size, exif)
    if im.format in ("JPEG", "MPO") and target > 0:
        im.draft("RGB", (target, target))  # DCT scaling: both sides stay >= target
    im.load()  # a full decode now, so a truncated file fails here and not in the encoder
    ImageOps.exif_transpose(im, in_place=True)
    out = _finish(im, target)
    # The caller's `with` closes `im`, which would invalidate it if it were returned as is.
    return (out.copy() if out is im else out), meta


def _finish(im: Image.Image, target: int) -> Image.Image:
    """RGB, reduced towards the target size, cropped to a sane aspect ratio."""
    return _crop_aspect(_reduce(_to_rgb(im), target))


def _decode_raw(path: str, target: int) -> tuple[Image.Image, MediaMeta]:
    picture = formats.read_raw(path, target)
    width, height = picture.size
    lat, lon = _exif_gps(picture.exif)
    meta = MediaMeta(width, height, _exif_date(picture.exif), _exif_camera(picture.exif), lat=lat, lon=lon)
    return _finish(picture.image, target), meta


def _unidentified_fallback(path: str, exc: BaseException) -> Image.Image | None:
    """What else can read a file Pillow did not recognise: tifffile for a TIFF with float or 32-bit
    samples; raises the install hint when the format's plugin is missing; None when nothing can."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(exc, UnidentifiedImageError):
        return None
    hint = formats.missing_plugin(path)
    if hint is not None:
        raise MediaError(hint) from exc
    if formats.extension(path) not in ("tif", "tiff"):
        return None
    return formats.read_deep_tiff(path, Image.MAX_IMAGE_PIXELS)


def _image_formats(path: str) -> tuple[str, ...]:
    """Formats Pillow may try: the common photo formats only, plus HEIF or JPEG XL (their plugins
    registered on first use) for files named so."""
    return (*_IMAGE_FORMATS, *formats.plugin_formats(path))


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
    """Scale a 16-bit, 32-bit or float grey image to 8 bits (Pillow's own convert would clip)."""
    import numpy as np
    from PIL import Image

    values = np.asarray(im).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and 255 < high <= 65535 and low >= 0):
        values = values * (255 / 65535)
    elif im.mode == "F" and low >= 0 and high <= 1:
        values = values * 255
    elif low < 0 or high > 255:  # an unknown range: stretch it
        values = (values - low) * (255 / max(high - low, 1e-12))
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


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


def _image_meta(size: tuple[int, int], exif: Mapping[int, Any]) -> MediaMeta:
    width, height = size
    if exif.get(0x0112) in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    lat, lon = _exif_gps(exif)
    return MediaMeta(width, height, _exif_date(exif), _exif_camera(exif), lat=lat, lon=lon)


def _exif_gps(exif: Any) -> tuple[float | None, float | None]:
    """GPSLatitude/GPSLongitude with their N/S and E/W references, in decimal degrees; (None, None)
    when absent, malformed or out of range (and for the 0,0 that some phones write without a fix)."""
    try:
        gps = exif.get_ifd(_GPS_IFD) if hasattr(exif, "get_ifd") else exif.get(_GPS_IFD)
        lat = _gps_degrees(gps.get(_TAG_LAT), gps.get(_TAG_LAT_REF), "S")
        lon = _gps_degrees(gps.get(_TAG_LON), gps.get(_TAG_LON_REF), "W")
    except Exception:  # a malformed GPS IFD must not cost the picture
        return None, None
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or lat == lon == 0:
        return None, None
    return lat, lon


def _gps_degrees(value: Any, ref: Any, negative: str) -> float | None:
    """(degrees, minutes, seconds) rationals (or one number) and a reference letter → signed degrees."""
    if value is None:
        return None
    parts = [float(v) for v in (value if isinstance(value, (tuple, list)) else (value,))][:3]
    degrees = sum(p / 60**i for i, p in enumerate(parts))
    if not math.isfinite(degrees):
        return None
    ref_s = ref.decode("ascii", "replace") if isinstance(ref, bytes) else str(ref or "")
    return -degrees if ref_s.strip("\x00 ").upper() == negative else degrees


def _exif_date(exif: Any) -> float | None:
    """DateTimeOriginal, else DateTime, as unix time (local time unless an offset tag says otherwise)."""
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # a malformed sub-IFD must not cost the picture
        sub = {}
    candidates = (
        (sub.get(_TAG_DATETIME_ORIGINAL), sub.get(_TAG_OFFSET_ORIGINAL)),
        (exif.get(_TAG_DATETIME), sub.get(_TAG_OFFSET)),
    )
    for value, offset in candidates:
        stamp = _parse_exif_datetime(value, offset)
        if stamp is not None:
            return stamp
    return None


def _parse_exif_datetime(value: object, offset: object) -> float | None:
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 ")[:19]
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        tz = _parse_utc_offset(offset)
        return _unix_time(moment.replace(tzinfo=tz) if tz else moment)
    return None


def _parse_utc_offset(value: object) -> timezone | None:
    match = re.fullmatch(r"([+-])(\d\d):?(\d\d)", value.strip("\x00 ")) if isinstance(value, str) else None
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3))))


def _exif_camera(exif: Mapping[int, Any]) -> str | None:
    return _camera(exif.get(_TAG_MAKE), exif.get(_TAG_MODEL))


def _camera(make: object, model: object) -> str | None:
    """ "Make Model", without repeating the make when the model already starts with it."""
    make_s = make.strip("\x00 ") if isinstance(make, str) else ""
    model_s = model.strip("\x00 ") if isinstance(model, str) else ""
    if make_s and model_s.lower().startswith(make_s.lower()):
        return model_s
    return " ".join(p for p in (make_s, model_s) if p) or None


def _unix_time(moment: datetime) -> float | None:
    """Unix time of `moment` (naive = local time); None for placeholder dates (before 1971)."""
    if moment.year < 1971:
        return None
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _image_failure(exc: BaseException) -> str:
    """A one-line reason for a failed image decode."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, Image.DecompressionBombError):
        return _bomb_message(_bomb_size(exc))
    if isinstance(exc, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot read file: {_one_line(exc.strerror or str(exc)).lower()}"
    if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return "truncated image"
    return f"cannot decode image: {_one_line(str(exc)) or type(exc).__name__}"


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


def _bomb_message(size: tuple[int, int] | None) -> str:
    shown = f"{size[0]}x{size[1]}" if size else "over the pixel limit"
    return f"image too large (decompression bomb guard): {shown}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------- videos


def plan_timestamps(duration: float, interval: float, max_frames: int) -> list[float]:
    """Times to sample: 0, interval, 2*interval, ... below `duration`; at most `max_frames`, spread
    evenly over the video when there would be more. Always at least one (0.0)."""
    if interval <= 0 or max_frames < 1:
        raise ValueError("interval must be > 0 and max_frames >= 1")
    if not math.isfinite(duration) or duration <= 0:
        return [0.0]
    count = max(1, math.ceil(duration / interval - 1e-9))
    step = interval
    if count > max_frames:
        count, step = max_frames, duration / max_frames
    return [round(i * step, 6) for i in range(count)]


@dataclass(frozen=True)
class _Probe:
    """What PyAV says about a video before any frame is sampled."""

    width: int  # as displayed, rotation applied
    height: int
    rotation: int  # degrees counter-clockwise to display the coded frames
    duration: float | None
    fps: float | None
    date: float | None
    camera: str | None
    place: tuple[float, float] | None = None  # (lat, lon) from the container's ISO 6709 location
    container: str = ""  # the demuxer's name ("mov,mp4,m4a,3gp,3g2,mj2", "mpegts", ...)
    transfer: str | None = None  # "pq" or "hlg" for HDR video, None for SDR

    @property
    def pyav_only(self) -> bool:
        """decord cannot read it (transport streams) or convert it (HDR) well: PyAV decodes."""
        return self.transfer is not None or any(c in self.container.split(",") for c in _PYAV_ONLY_CONTAINERS)


def sample_video(
    path: str, *, interval: float = 2.0, max_frames: int = 600, target: int = 224, exact: bool = False
) -> VideoSample:
    """Sample one frame every `interval` seconds (at most `max_frames`) at a short side of ~`target`.

    A planned time with a keyframe within `KEYFRAME_TOLERANCE` of the step (at most
    `MAX_KEYFRAME_SHIFT_S`) is sampled at that keyframe, which PyAV decodes on its own (about twice
    as fast as decord seeking there); `exact` turns that off. The other times are decoded exactly
    with decord; a file that decord cannot index (typically truncated) is read sequentially with
    PyAV instead, keeping the frames before the damage and setting `error`. Raises `MediaError` when
    no frame at all can be read.
    """
    if interval <= 0 or max_frames < 1:
        raise ValueError("interval must be > 0 and max_frames >= 1")
    path = os.fspath(path)
    keyed = None if exact else _sample_keyframes(path, interval, max_frames, target)
    probe = keyed.probe if keyed is not None else _probe_video(path)
    try:
        if keyed is None:
            frames, duration, error = _sample_frames(path, probe, interval, max_frames, target)
        else:
            frames, duration, error = _complete_keyframes(path, keyed, interval, max_frames, target)
    except MediaError:
        raise
    except Exception as exc:  # keep the promise: one MediaError per bad file, nothing else
        raise MediaError(f"cannot decode video: {_one_line(str(exc)) or type(exc).__name__}") from exc
    if not frames:
        raise MediaError(error or "no video frame could be decoded")
    lat, lon = probe.place or (None, None)
    meta = MediaMeta(probe.width, probe.height, probe.date, probe.camera, duration, lat=lat, lon=lon)
    return VideoSample(frames=frames, meta=meta, error=error)


def _sample_frames(
    path: str, probe: _Probe, interval: float, max_frames: int, target: int, times: Sequence[float] | None = None
) -> tuple[list[Frame], float | None, str | None]:
    """The frames shown at the planned times (or at `times`), exactly."""
    if probe.pyav_only:
        return _sample_with_pyav(path, probe, interval, max_frames, target, times)
    try:
        reader = _open_decord(path, probe, target)
    except Exception:  # decord missing, or it cannot index the file: PyAV copes with damage
        return _sample_with_pyav(path, probe, interval, max_frames, target, times)
    try:
        frames, duration, error = _sample_with_decord(reader, interval, max_frames, times)
    finally:
        del reader  # releases the decoder and the file now, not at some later collection
    if not frames:  # decord indexed the file but could read none of it: PyAV may still
        return _sample_with_pyav(path, probe, interval, max_frames, target, times)
    return frames, duration, error


def _probe_video(path: str) -> _Probe:
    """Open the container with PyAV: fails cleanly (and quietly) on files that are not video."""
    import av

    formats.quiet_libav()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            stream = container.streams.video[0]
            return _probe_of(container, stream, _first_frame_rotation(container, stream))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot open video: {_av_reason(exc)}") from exc


def _probe_of(container: Any, stream: Any, rotation: int) -> _Probe:
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    metadata = dict(container.metadata)
    return _Probe(
        width=width,
        height=height,
        rotation=rotation,
        duration=_stream_duration(container, stream),
        fps=float(stream.average_rate) if stream.average_rate else None,
        date=_video_date(metadata),
        camera=_video_camera(metadata),
        place=_video_place(metadata),
        container=str(getattr(container.format, "name", "") or ""),
        transfer=formats.hdr_transfer(getattr(stream.codec_context, "color_trc", None)),
    )


def _first_frame_rotation(container: Any, stream: Any) -> int:
    """The display rotation of the first frame (phones record portrait video as rotated landscape)."""
    import av

    try:
        for frame in container.decode(stream):
            return int(round(frame.rotation)) % 360
    except av.FFmpegError:
        pass
    return 0


def _stream_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _video_date(metadata: Mapping[str, str]) -> float | None:
    for key in _VIDEO_DATE_KEYS:
        value = metadata.get(key)
        if value:
            stamp = _parse_iso_datetime(value)
            if stamp is not None:
                return stamp
    return None


def _video_place(metadata: Mapping[str, str]) -> tuple[float, float] | None:
    """Where a phone recorded the video: the ISO 6709 decimal-degree location phones write."""
    for key in _VIDEO_PLACE_KEYS:
        match = _ISO6709.match(metadata.get(key) or "")
        if match is not None:
            lat, lon = float(match.group(1)), float(match.group(2))
            if -90 <= lat <= 90 and -180 <= lon <= 180 and not lat == lon == 0:
                return lat, lon
    return None


def _parse_iso_datetime(text: str) -> float | None:
    """ISO 8601 as written by cameras ("...Z", "...+0200", naive = local time)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    text = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _unix_time(moment)


def _video_camera(metadata: Mapping[str, str]) -> str | None:
    return _camera(_first_key(metadata, _VIDEO_MAKE_KEYS), _first_key(metadata, _VIDEO_MODEL_KEYS))


def _first_key(metadata: Mapping[str, str], keys: Sequence[str]) -> str | None:
    return next((metadata[k] for k in keys if metadata.get(k)), None)


def _av_reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return _one_line(str(strerror or exc) or type(exc).__name__).lower()


@functools.cache
def _decord() -> Any:
    """decord, with its bundled FFmpeg's log output turned off (it would clutter progress bars)."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


def _open_decord(path: str, probe: _Probe, target: int) -> Any:
    decord = _decord()
    width, height = _scaled_size(probe.width, probe.height, target)
    return decord.VideoReader(path, width=width, height=height)


def _scaled_size(width: int, height: int, target: int) -> tuple[int, int]:
    """Output size with the short side at `target` and the aspect kept; (-1, -1) = no scaling.

    decord applies the display rotation first, so these are displayed dimensions.
    """
    short = min(width, height)
    if target <= 0 or short <= target:
        return -1, -1
    if width <= height:
        return target, max(1, round(height * target / width))
    return max(1, round(width * target / height)), target


def _sample_with_decord(
    reader: Any, interval: float, max_frames: int, times: Sequence[float] | None = None
) -> tuple[list[Frame], float, str | None]:
    """Batched decode of the planned frames; a batch that fails is retried frame by frame."""
    import numpy as np
    from PIL import Image

    starts, duration = _frame_times(reader)
    planned = list(times) if times is not None else plan_timestamps(duration, interval, max_frames)
    picks = np.searchsorted(starts, np.asarray(planned) + 1e-6, side="right") - 1
    indices = sorted({int(i) for i in np.clip(picks, 0, len(starts) - 1)})
    frames: list[Frame] = []
    for chunk in _chunks(indices, _BATCH_FRAMES):
        for index, array in _read_frames(reader, chunk):
            frames.append(Frame(round(float(starts[index]), 6), Image.fromarray(array)))
    lost = len(indices) - len(frames)
    error = f"video partly unreadable: {lost} of {len(indices)} sampled frames could not be decoded"
    return frames, duration, (error if lost else None)


def _frame_times(reader: Any) -> tuple[Any, float]:
    """Start time of every frame (from 0) and the duration; frame count / fps if the PTS look wrong."""
    import numpy as np

    count = len(reader)
    fps = float(reader.get_avg_fps() or 0.0)
    try:
        pts = np.asarray(reader.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        starts = pts[:, 0] - pts[0, 0]
        duration = float(pts[-1, 1] - pts[0, 0])
        # MPEG program streams can give the first frame a "no timestamp" value (about -1e14).
        plausible = pts[0, 0] >= 0 and (fps <= 0 or duration <= 2 * count / fps + 1)
        if plausible and duration > 0 and np.all(np.diff(starts) >= 0):
            return starts, duration
    except Exception:  # odd containers: fall back to a constant frame rate
        pass
    step = 1.0 / fps if fps > 0 else 0.0
    return np.arange(count) * step, count * step


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read_frames(reader: Any, indices: Sequence[int]) -> Iterable[tuple[int, Any]]:
    """(index, HxWx3 uint8 array) for each frame that decodes."""
    try:
        batch = _as_numpy(reader.get_batch(list(indices)))
    except Exception:  # a damaged stretch: the frames around it may still decode one by one
        return list(_read_one_by_one(reader, indices))
    return zip(indices, batch, strict=True)


def _read_one_by_one(reader: Any, indices: Sequence[int]) -> Iterator[tuple[int, Any]]:
    for index in indices:
        try:
            reader.seek_accurate(index)
            yield index, _as_numpy(reader.next())
        except Exception:
            continue


def _as_numpy(data: Any) -> Any:
    """decord returns its own NDArray unless someone changed its (global) bridge."""
    import numpy as np

    return data.asnumpy() if hasattr(data, "asnumpy") else np.asarray(data)


def _sample_with_pyav(
    path: str, probe: _Probe, interval: float, max_frames: int, target: int, times: Sequence[float] | None = None
) -> tuple[list[Frame], float | None, str | None]:
    """Sequential PyAV decode that skips damaged packets and stops where the data ends."""
    import av

    planned = list(times) if times is not None else plan_timestamps(probe.duration or 0.0, interval, max_frames)
    frames: list[Frame] = []
    damaged = False
    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            damaged = _collect_av_frames(container, stream, probe, planned, target, frames)
    except av.FFmpegError:
        damaged = True
    if len(frames) == len(planned) and not damaged:
        return frames, probe.duration, None
    if not frames:
        return frames, probe.duration, "no video frame could be decoded"
    return frames, probe.duration, _truncated(frames, probe.duration)


def _truncated(frames: Sequence[Frame], duration: float | None) -> str:
    """The one-line reason for a video read only up to its last good frame."""
    shown = f"{frames[-1].timestamp:.1f}"
    total = f" of {duration:.1f}" if duration else ""
    return f"video truncated or corrupt: frames read up to {shown} s{total} s"


def _collect_av_frames(
    container: Any, stream: Any, probe: _Probe, planned: list[float], target: int, out: list[Frame]
) -> bool:
    """Append the frame shown at each planned time to `out`; True if damaged data was skipped."""
    import av

    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    slack = 0.5 / probe.fps if probe.fps else 0.0  # take the frame nearest to each planned time
    pending = iter(planned)
    due = next(pending, None)
    damaged = False
    for packet in container.demux(stream):
        try:
            decoded = packet.decode()
        except av.FFmpegError:
            damaged = True
            continue
        for frame in decoded:
            when = None if frame.time is None else float(frame.time) - start
            if due is None or when is None or when + slack < due:
                continue
            out.append(Frame(round(when, 6), _av_frame_image(frame, probe, target)))
            while due is not None and due <= when + slack:
                due = next(pending, None)
        if due is None:
            break
    return damaged


def _av_frame_image(frame: Any, probe: _Probe, target: int) -> Image.Image:
    """RGB PIL image of a PyAV frame, scaled like decord's output and rotated for display."""
    from PIL import Image

    width, height = _scaled_size(probe.width, probe.height, target)
    if probe.rotation in (90, 270):
        width, height = height, width
    image = frame_image(frame, width, height)
    turns = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    method = turns.get(probe.rotation)
    return image.transpose(method) if method is not None else image


def frame_image(frame: Any, width: int = -1, height: int = -1) -> Image.Image:
    """A PyAV frame as an 8-bit RGB image, at `width` x `height` when given (coded orientation).

    SDR frames of any bit depth convert with the matrix they are tagged with; HDR (PQ, HLG) frames
    are tone-mapped, so that they do not come out flat and washed out.
    """
    size = {} if width < 0 else {"width": width, "height": height}
    transfer = formats.hdr_transfer(getattr(frame, "color_trc", None))
    if transfer is not None:
        return formats.hdr_frame_image(frame, transfer, **size)
    return frame.to_image(**size)


# ------------------------------------------------------------------------------------- keyframes


@dataclass
class _Keyframes:
    """Planned times that a keyframe stands in for (decoded), and the times none is near."""

    probe: _Probe
    frames: list[Frame]
    missed: list[float]


def _sample_keyframes(path: str, interval: float, max_frames: int, target: int) -> _Keyframes | None:
    """The keyframe shortcut; None where it does not apply or anything looks wrong (the exact path,
    with its careful handling of damaged files, then does the whole file)."""
    import av

    formats.quiet_libav()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            duration = _stream_duration(container, stream)
            if not duration or duration <= 0 or stream.time_base is None:
                return None
            planned = plan_timestamps(duration, interval, max_frames)
            step = planned[1] - planned[0] if len(planned) > 1 else interval
            tolerance = min(KEYFRAME_TOLERANCE * step, MAX_KEYFRAME_SHIFT_S)
            chosen = _nearest_keyframes(container, stream, planned, tolerance)
            if not chosen:
                return None
            return _decode_keyframes(container, stream, chosen, planned, target)
    except Exception:  # not a video, damaged, odd timestamps: the exact path says what is wrong
        return None


def _nearest_keyframes(container: Any, stream: Any, planned: list[float], tolerance: float) -> dict[int, Any]:
    """Demux (no decoding) and keep, per planned time, the nearest keyframe packet within tolerance."""
    import bisect

    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    best: dict[int, tuple[float, Any]] = {}
    for packet in container.demux(stream):
        if not packet.is_keyframe or packet.pts is None or packet.size == 0:
            continue
        when = float(packet.pts * stream.time_base) - start
        slot = bisect.bisect_left(planned, when)
        for j in (slot - 1, slot):
            distance = abs(when - planned[j]) if 0 <= j < len(planned) else math.inf
            if distance <= tolerance and distance < best.get(j, (math.inf, None))[0]:
                best[j] = (distance, packet)
    return {j: packet for j, (_, packet) in best.items()}


def _decode_keyframes(
    container: Any, stream: Any, chosen: dict[int, Any], planned: list[float], target: int
) -> _Keyframes | None:
    """Decode each chosen keyframe packet on its own; None if one of them yields no picture."""
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    codec = stream.codec_context
    codec.thread_type = "AUTO"
    wanted = {int(packet.pts) for packet in chosen.values()}
    probe: _Probe | None = None
    frames: dict[int, Frame] = {}

    def pictures() -> Iterator[Any]:  # one at a time: each becomes a small image before the next
        for j in sorted(chosen):
            yield from codec.decode(chosen[j])
        yield from codec.decode(None)  # the decoder may hold some back until it is flushed

    for frame in pictures():
        if frame.pts not in wanted or frame.pts in frames:
            continue
        if probe is None:
            probe = _probe_of(container, stream, int(round(frame.rotation)) % 360)
        when = round(float(frame.pts * stream.time_base) - start, 6)
        frames[frame.pts] = Frame(when, _av_frame_image(frame, probe, target))
    if probe is None or len(frames) != len(wanted):
        return None
    missed = [t for j, t in enumerate(planned) if j not in chosen]
    return _Keyframes(probe, sorted(frames.values(), key=lambda f: f.timestamp), missed)


def _complete_keyframes(
    path: str, keyed: _Keyframes, interval: float, max_frames: int, target: int
) -> tuple[list[Frame], float | None, str | None]:
    """The keyframes plus the planned times no keyframe was near, decoded exactly."""
    if not keyed.missed:
        return keyed.frames, keyed.probe.duration, None
    more, _, error = _sample_frames(path, keyed.probe, interval, max_frames, target, keyed.missed)
    by_time = {f.timestamp: f for f in [*keyed.frames, *more]}
    frames = [by_time[t] for t in sorted(by_time)]
    if error is not None and not more and frames:  # the keyframes were read, the damage came after them
        error = _truncated(frames, keyed.probe.duration)
    return frames, keyed.probe.duration, error


# ----------------------------------------------------------------------------- for the enrichers


def read_metadata(path: str, kind: str) -> MediaMeta:
    """A file's metadata without decoding its pixels: an image's EXIF, a video's container tags.

    (The duration of a video is the container's here; ``sample_video`` measures it while decoding.)"""
    from PIL import Image

    path = os.fspath(path)
    if kind == "video":
        probe = _probe_video(path)
        lat, lon = probe.place or (None, None)
        return MediaMeta(probe.width, probe.height, probe.date, probe.camera, probe.duration, lat=lat, lon=lon)
    formats.quiet_logs()
    try:
        if formats.extension(path) in formats.RAW_EXTS:
            return _decode_raw(path, 64)[1]
        with formats.warnings_to_debug(), Image.open(path, formats=_image_formats(path)) as im:
            return _image_meta(im.size, im.getexif())
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(_image_failure(exc)) from exc


def frames_at(path: str, times: Sequence[float], *, target: int = 224) -> VideoSample:
    """The frames a video shows at exactly ``times`` (seconds), at a short side of ~``target``; raises
    MediaError when none can be read."""
    path = os.fspath(path)
    probe = _probe_video(path)
    try:
        frames, duration, error = _sample_frames(path, probe, 1.0, max(1, len(times)), target, list(times))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot decode video: {_one_line(str(exc)) or type(exc).__name__}") from exc
    if not frames:
        raise MediaError(error or "no video frame could be decoded")
    lat, lon = probe.place or (None, None)
    meta = MediaMeta(probe.width, probe.height, probe.date, probe.camera, duration, lat=lat, lon=lon)
    return VideoSample(frames=frames, meta=meta, error=error)
