"""Sample frames from videos: keyframes near the planned times with PyAV, exact frames with decord,
a sequential PyAV read for damaged files, HDR frames tone-mapped, the display matrix applied.

Every failure is a `MediaError` with a one-line reason; nothing else escapes `sample_video`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mediasearch.errors import MediaError
from mediasearch.media import formats
from mediasearch.media.metadata import MediaMeta, one_line, video_camera, video_date, video_place

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Frame", "VideoSample", "frame_image", "plan_timestamps", "sample_video"]

_PYAV_ONLY_CONTAINERS = ("mpegts",)  # decord cannot seek in them (B-frames make every read fail)
_BATCH_FRAMES = 32  # frames per decord get_batch call: bounds memory and the cost of one failure
KEYFRAME_TOLERANCE = 0.25  # a keyframe this close to a planned time (a fraction of the step) stands in for it
MAX_KEYFRAME_SHIFT_S = 1.0  # ... but never further away than this


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
    orientation: Orientation  # how the coded frames are turned and mirrored for display
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
        special = self.transfer is not None or self.orientation.mirrored  # decord would turn a mirror by 180°
        return special or any(c in self.container.split(",") for c in _PYAV_ONLY_CONTAINERS)


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
    with contextlib.suppress(OSError):  # a missing file: PyAV says so below
        if os.path.getsize(path) == 0:
            raise MediaError(formats.EMPTY_FILE)
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
        raise MediaError(f"cannot decode video: {one_line(str(exc)) or type(exc).__name__}") from exc
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
            if stream.codec_context is None:  # a codec this FFmpeg has no decoder for (Dolby Vision 'dav1')
                raise MediaError("unsupported video codec (no decoder for its video stream)")
            return _probe_of(container, stream, _first_frame_orientation(container, stream))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot open video: {_av_reason(exc)}") from exc


def _probe_of(container: Any, stream: Any, orientation: Orientation) -> _Probe:
    width, height = stream.codec_context.width, stream.codec_context.height
    if orientation.swapped:
        width, height = height, width
    metadata = dict(container.metadata)
    return _Probe(
        width=width,
        height=height,
        orientation=orientation,
        duration=_stream_duration(container, stream),
        fps=float(stream.average_rate) if stream.average_rate else None,
        date=video_date(metadata),
        camera=video_camera(metadata),
        place=video_place(metadata),
        container=str(getattr(container.format, "name", "") or ""),
        transfer=formats.hdr_transfer(getattr(stream.codec_context, "color_trc", None)),
    )


def _first_frame_orientation(container: Any, stream: Any) -> Orientation:
    """The display orientation of the first frame (phones record portrait video as rotated landscape)."""
    import av

    try:
        for frame in container.decode(stream):
            return orientation_of(frame)
    except av.FFmpegError:
        pass
    return Orientation()


@dataclass(frozen=True)
class Orientation:
    """How to show a coded frame: PIL transposes in order; ``swapped`` when width and height trade places."""

    steps: tuple[int, ...] = ()
    swapped: bool = False

    @property
    def mirrored(self) -> bool:
        """A reflection (the display matrix's flip), which is not a rotation."""
        return len(self.steps) == 1 and self.steps[0] in (_FLIP_LR, _FLIP_TB, _TRANSPOSE, _TRANSVERSE)

    def apply(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        for step in self.steps:
            image = image.transpose(Image.Transpose(step))
        return image


# PIL's Image.Transpose values, without importing Pillow here
_FLIP_LR, _FLIP_TB, _ROTATE_90, _ROTATE_180, _ROTATE_270, _TRANSPOSE, _TRANSVERSE = range(7)


def orientation_of(frame: Any) -> Orientation:
    """The orientation a decoded frame's display matrix asks for, rotation and reflection, as FFmpeg's
    own command line applies it (fftools: transpose, hflip, vflip by the matrix's angle and signs)."""
    import struct

    theta = (-round(float(getattr(frame, "rotation", 0) or 0))) % 360  # clockwise degrees
    matrix = None
    side_data = getattr(frame, "side_data", ())
    # PyAV up to 18.1.0 gives a sequence of SideData; 18.1.1 a mapping from their types to them
    for data in side_data.values() if isinstance(side_data, Mapping) else side_data:
        if str(getattr(data, "type", "")).endswith("DISPLAYMATRIX"):
            with contextlib.suppress(struct.error, TypeError, ValueError):
                matrix = struct.unpack_from("<9i", bytes(data))
    if matrix is None:
        steps = {90: (_ROTATE_270,), 180: (_ROTATE_180,), 270: (_ROTATE_90,)}.get(theta, ())
        return Orientation(steps, theta in (90, 270))
    if abs(theta - 90) < 1:
        return Orientation((_TRANSPOSE,) if matrix[3] > 0 else (_ROTATE_270,), True)
    if abs(theta - 270) < 1:
        return Orientation((_TRANSVERSE,) if matrix[3] < 0 else (_ROTATE_90,), True)
    flips = (_FLIP_LR,) * (matrix[0] < 0) + (_FLIP_TB,) * (matrix[4] < 0)
    if abs(theta - 180) < 1:
        return Orientation((_ROTATE_180,) if len(flips) == 2 else flips)
    return Orientation((_FLIP_TB,) if matrix[4] < 0 else ())


def _stream_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _av_reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return one_line(str(strerror or exc) or type(exc).__name__).lower()


_DECORD_IMPORT = threading.Lock()


@functools.cache
def _decord() -> Any:
    """decord, with its bundled FFmpeg's log output turned off (it would clutter progress bars).

    decord2 loads its library, and every CUDA library of the nvidia-* packages it finds (those torch
    installs, NVBLAS among them), with RTLD_GLOBAL: NVBLAS then takes over the BLAS calls of every
    library loaded later, and torch loaded after a video was decoded crashed (SIGSEGV, "[NVBLAS] CPU
    Blas library need to be provided") in its first matrix product. They are loaded with RTLD_LOCAL
    instead; libdecord still finds what it links to (the loader matches them by name), and where decord
    cannot be imported at all, PyAV decodes.
    """
    import ctypes

    with _DECORD_IMPORT:
        real = ctypes.CDLL

        class _Local(real):  # type: ignore[misc, valid-type]
            def __init__(self, name: str | None, mode: int = ctypes.RTLD_LOCAL, *args: Any, **kwargs: Any) -> None:
                super().__init__(name, ctypes.RTLD_LOCAL, *args, **kwargs)

        ctypes.CDLL = _Local  # type: ignore[misc]
        try:
            import decord
        finally:
            ctypes.CDLL = real  # type: ignore[misc]

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

    width, height = _scaled_size(probe.width, probe.height, target)
    if probe.orientation.swapped:
        width, height = height, width
    return probe.orientation.apply(frame_image(frame, width, height))


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
            probe = _probe_of(container, stream, orientation_of(frame))
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


def frames_at(path: str, times: Sequence[float], *, target: int = 224) -> VideoSample:
    """The frames a video shows at exactly ``times`` (seconds), at a short side of ~``target`` (the
    enrichers read a file's frames at their stored times); raises MediaError when none can be read."""
    path = os.fspath(path)
    probe = _probe_video(path)
    try:
        frames, duration, error = _sample_frames(path, probe, 1.0, max(1, len(times)), target, list(times))
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot decode video: {one_line(str(exc)) or type(exc).__name__}") from exc
    if not frames:
        raise MediaError(error or "no video frame could be decoded")
    lat, lon = probe.place or (None, None)
    meta = MediaMeta(probe.width, probe.height, probe.date, probe.camera, duration, lat=lat, lon=lon)
    return VideoSample(frames=frames, meta=meta, error=error)


def video_meta(path: str) -> MediaMeta:
    """A video's metadata from its container, without decoding a frame (the duration is the container's)."""
    probe = _probe_video(os.fspath(path))
    lat, lon = probe.place or (None, None)
    return MediaMeta(probe.width, probe.height, probe.date, probe.camera, probe.duration, lat=lat, lon=lon)
