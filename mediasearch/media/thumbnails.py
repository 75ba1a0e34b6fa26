"""Thumbnails for the web page: JPEGs of indexed files, made on demand and cached on disk.

An image is decoded oriented (EXIF) and scaled; a video gives the frame shown at the requested
time (the hit's best moment), rotated for display. Each thumbnail is kept under the home
(``cache/thumbnails``), keyed by the file's identity (path, size, mtime) and the request, so an
edited file gets a new one; a small in-memory LRU in front saves the disk reads of a grid redraw.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from mediasearch.errors import MediaError

if TYPE_CHECKING:
    from PIL import Image

    from mediasearch.media.decode_pool import DecoderPool

JPEG_QUALITY = 82
MEMORY_ITEMS = 256
DISK_ITEMS = 20000  # about 0.5 GB of grid-sized JPEGs; the oldest go first
PRUNE_EVERY = 200  # writes between two checks of the disk cache's size


VIDEO_THUMBNAIL = "mediasearch.media.thumbnails:video_thumbnail"  # what a decoder-pool worker runs


def make_thumbnail(
    path: str,
    kind: str,
    size: int,
    at: float | None = None,
    *,
    fd: int | None = None,
    videos: DecoderPool | None = None,
) -> bytes:
    """A JPEG of at most ``size`` px a side: the image, or the video's frame at ``at`` seconds.

    With ``fd`` (the file, already open and checked), an image is read from that descriptor, and a
    video's worker (``videos``: decoded there under the pool's time limit) refuses any other file."""
    if kind == "video" and videos is not None:
        identity = _identity(os.fstat(fd)) if fd is not None else None
        return bytes(videos.call(path, VIDEO_THUMBNAIL, {"size": size, "at": at or 0.0, "identity": identity}))
    if kind == "video":
        image = video_frame(path, at or 0.0, size)
    elif fd is not None:
        with os.fdopen(os.dup(fd), "rb") as source:
            source.seek(0)
            image = _image_from(source, path, size)
    else:
        from mediasearch.media.decode import load_image

        image, _ = load_image(path, target=size)
    return _jpeg(image, size)


def video_thumbnail(path: str, *, size: int, at: float, identity: Sequence[int] | None = None) -> bytes:
    """In a decoder-pool worker: the video's thumbnail, from the file ``identity`` names (device, inode,
    size, mtime) and no other (a path re-pointed since the daemon checked it is refused)."""
    try:
        source = open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
    except OSError as exc:
        raise MediaError(f"cannot read file: {exc.strerror or exc}") from None
    with source:
        if identity is not None and _identity(os.fstat(source.fileno())) != tuple(identity):
            raise MediaError("the file changed since it was checked: not served")
        os.set_blocking(source.fileno(), True)
        return _jpeg(video_frame(source, at, size), size)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _image_from(source: BinaryIO, path: str, size: int) -> Image.Image:
    """An image decoded from an open file exactly as ``load_image`` decodes one by path (every format,
    camera RAW included, chosen by the name and the content)."""
    from mediasearch.media.decode import load_image

    return load_image(path, target=size, source=source)[0]


def _jpeg(image: Image.Image, size: int) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
    return buffer.getvalue()


def video_frame(path: str | BinaryIO, at: float, size: int) -> Image.Image:
    """The frame of ``path`` shown at ``at`` seconds (the last one past the end), display-rotated.

    Seeks to the keyframe before ``at`` and decodes forward, so it costs at most one GOP.
    """
    import av

    from mediasearch.media.formats import quiet_libav

    quiet_libav()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frame = _frame_at(container, stream, max(0.0, at))
            return _frame_image(frame, size)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"cannot decode video frame: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc


def _frame_at(container: Any, stream: Any, at: float) -> Any:
    import av

    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    slack = 0.5 / float(stream.average_rate) if stream.average_rate else 0.0
    if at > 0 and stream.time_base is not None:
        with contextlib.suppress(av.FFmpegError):  # unseekable: decode from the start
            container.seek(int((start + at) / stream.time_base), stream=stream, backward=True)
    chosen = None
    for frame in container.decode(stream):
        chosen = frame
        if frame.time is None or float(frame.time) - start + slack >= at:
            break
    if chosen is None:
        raise MediaError("no video frame could be decoded")
    return chosen


def _frame_image(frame: Any, size: int) -> Image.Image:

    from mediasearch.media.video import frame_image, orientation_of

    width, height = frame.width, frame.height
    scale = min(1.0, 2 * size / max(width, height, 1))  # thumbnail() finishes the job with a good filter
    image = frame_image(frame, max(2, round(width * scale)), max(2, round(height * scale)))  # HDR tone-mapped
    return orientation_of(frame).apply(image)


class ThumbnailCache:
    """Thumbnails by (file, size, time): memory, then ``folder`` on disk, then made and stored."""

    def __init__(self, folder: Path, memory_items: int = MEMORY_ITEMS, disk_items: int = DISK_ITEMS) -> None:
        self.folder = folder
        self.memory_items, self.disk_items = memory_items, disk_items
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._writes = 0

    def get(
        self,
        path: str,
        kind: str,
        size: int,
        at: float | None = None,
        *,
        fd: int | None = None,
        videos: DecoderPool | None = None,
    ) -> bytes:
        """The thumbnail's JPEG bytes; ``OSError`` when the file cannot be read, ``MediaError`` when it
        cannot be decoded. ``fd`` and ``videos``: see `make_thumbnail`."""
        stat = os.fstat(fd) if fd is not None else os.stat(path)
        at = round(at, 2) if kind == "video" and at is not None else None
        key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{size}\0{at}".encode()).hexdigest()
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
                return data
        data = self._read(key)
        if data is None:
            data = make_thumbnail(path, kind, size, at, fd=fd, videos=videos)
            self._write(key, data)
        with self._lock:
            self._memory[key] = data
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)
        return data

    def _file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.jpg"

    def _read(self, key: str) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except OSError:
            return None

    def _write(self, key: str, data: bytes) -> None:
        """Atomically (a reader never sees half a JPEG); a cache that cannot be written is no error."""
        target = self._file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        except OSError:
            return
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self.prune()

    def prune(self) -> int:
        """Delete the oldest thumbnails beyond ``disk_items``; returns how many went."""
        try:
            files = [(e.stat().st_mtime, e.path) for d in os.scandir(self.folder) if d.is_dir() for e in os.scandir(d)]
        except OSError:
            return 0
        files.sort()
        extra = files[: max(0, len(files) - self.disk_items)]
        for _, name in extra:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return len(extra)
