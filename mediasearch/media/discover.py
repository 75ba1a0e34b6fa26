"""Walk the watched folders and list the media files in them (stdlib only).

Paths are kept in ``os.fsdecode`` form: a name that is not valid UTF-8 holds surrogate escapes, so
the string still opens the real file. Anything shown to a user or stored as JSON goes through
`display_path` / `path_payload` first.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mediasearch.errors import MediaError
from mediasearch.media.formats import RAW_EXTS

__all__ = [
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "FileEntry",
    "ancestor_dirs",
    "discover",
    "display_path",
    "fingerprint",
    "media_kind",
    "path_from_payload",
    "path_payload",
    "root_status",
]

MediaKind = Literal["image", "video"]
ErrorCallback = Callable[[str, str], None]
SkipCallback = Callable[[str], None]

# Extensions are lower case, without the dot; use `media_kind` rather than testing them by hand.
# A format whose optional package is missing (JPEG XL) is still listed: the file is reported with
# what to install, instead of being passed over in silence. README's table of formats lists them all.
_BASE_IMAGE_EXTS = frozenset(
    {"jpg", "jpeg", "mpo", "png", "webp", "gif", "bmp", "tif", "tiff", "jp2", "j2k", "jpf", "jpx"}
)
_PLUGIN_IMAGE_EXTS = frozenset({"avif", "heic", "heif", "hif", "jxl"})
IMAGE_EXTS: frozenset[str] = _BASE_IMAGE_EXTS | _PLUGIN_IMAGE_EXTS | RAW_EXTS
VIDEO_EXTS: frozenset[str] = frozenset(
    {"mp4", "mov", "m4v", "mkv", "webm", "avi", "mts", "m2ts", "m2t", "ts", "3gp", "3g2", "wmv", "asf", "flv"}
    | {"mpg", "mpeg"}
)
_TS_PACKET = 188  # MPEG transport stream packets start with the sync byte 0x47

_FINGERPRINT_CHUNK = 64 * 1024

# Characters a terminal would act on: C0/C1 controls, DEL, line/paragraph separators, bidi controls.
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass(frozen=True)
class FileEntry:
    """One media file found under a root; `path` is absolute and opens the file."""

    path: str
    root: str
    kind: MediaKind
    size: int
    mtime: float


def media_kind(name: str) -> MediaKind | None:
    """Return "image" or "video" from a file name's extension (any case), or None."""
    ext = os.path.splitext(name)[1][1:].lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def discover(
    roots: Sequence[str | Path],
    *,
    include_hidden: bool = False,
    on_error: ErrorCallback | None = None,
    on_skip: SkipCallback | None = None,
    exclude: Sequence[str | Path] = (),
) -> Iterator[FileEntry]:
    """Yield the media files under `roots`, sorted by name at every level, depth first.

    Symbolic links are followed; a directory reached twice is walked once, across roots too (a
    symlinked root and its target, given together, give one copy of each file). Problems are passed to
    `on_error(path, reason)` and never raised; `on_skip(path)` hears of each (visible) file passed
    over for its extension. A file reachable from several roots is yielded once, under the first
    root (roots are walked in sorted order, so an outer root comes first). Folders in `exclude` (the
    home's own: its thumbnail cache holds JPEGs) are never entered, by whatever path they are reached.
    """
    report = on_error or _ignore_error
    skip = on_skip or _ignore_skip
    yielded: set[str] = set()
    excluded = set()
    for folder in exclude:
        with contextlib.suppress(OSError):
            st = os.stat(folder)
            excluded.add((st.st_dev, st.st_ino))
    visited = set(excluded)  # shared by the roots: a folder reached from two of them is walked once
    for root in sorted({os.path.abspath(os.fspath(r)) for r in roots}):
        for entry in _walk_root(root, include_hidden, report, skip, visited):
            if entry.path not in yielded:
                yielded.add(entry.path)
                yield entry


def root_status(root: str | Path) -> Literal["ok", "missing", "empty"]:
    """Say whether a root can be trusted: "missing" (or unreadable), "empty" (maybe unmounted), "ok".

    An empty or missing root must never be read as "every file under it was deleted".
    """
    path = os.path.abspath(os.fspath(root))
    try:
        if not os.path.isdir(path):
            return "ok" if os.path.isfile(path) else "missing"
        with os.scandir(path) as it:
            return "ok" if next(it, None) is not None else "empty"
    except OSError:
        return "missing"


def fingerprint(path: str, size: int) -> str:
    """Content fingerprint: blake2b over the size and the first and last 64 KiB (hex)."""
    digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    try:
        # Non-blocking open: a FIFO put in the file's place since discovery would block a plain open.
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise MediaError("not a regular file any more (replaced while being indexed?)")
            if size <= 2 * _FINGERPRINT_CHUNK:
                digest.update(f.read(size))
            else:
                digest.update(f.read(_FINGERPRINT_CHUNK))
                f.seek(size - _FINGERPRINT_CHUNK)
                digest.update(f.read(_FINGERPRINT_CHUNK))
    except OSError as exc:
        raise MediaError(f"cannot read file: {_reason(exc)}") from exc
    return digest.hexdigest()


def fingerprint_fd(fd: int, size: int) -> str:
    """`fingerprint` of a file already open (the daemon checks what it serves on the descriptor it serves
    from); read with pread, so the descriptor's offset is left alone. OSError as it comes."""
    digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    if size <= 2 * _FINGERPRINT_CHUNK:
        digest.update(_read_at(fd, 0, size))
    else:
        digest.update(_read_at(fd, 0, _FINGERPRINT_CHUNK))
        digest.update(_read_at(fd, size - _FINGERPRINT_CHUNK, _FINGERPRINT_CHUNK))
    return digest.hexdigest()


def _read_at(fd: int, offset: int, size: int) -> bytes:
    parts = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(parts)


def display_path(path: str) -> str:
    """A path safe to print or store as UTF-8: bad bytes become U+FFFD, controls are escaped."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate that no file system name can produce
        raw = path.encode("utf-8", "replace")
    return _UNSAFE_CHARS.sub(_escape_char, raw.decode("utf-8", "replace"))


def path_payload(path: str) -> dict[str, str]:
    """JSON-safe form of a path: "path" to show, plus "path_raw" (base64 bytes) when that is lossy."""
    shown = display_path(path)
    if shown == path:
        return {"path": path}
    return {"path": shown, "path_raw": base64.b64encode(os.fsencode(path)).decode("ascii")}


def path_from_payload(payload: dict[str, str]) -> str:
    """Inverse of `path_payload`: the file-system path that opens the file."""
    raw = payload.get("path_raw")
    if raw is not None:
        return os.fsdecode(base64.b64decode(raw, validate=True))
    return payload["path"]


def ancestor_dirs(path: str) -> list[str]:
    """Every directory above `path`, nearest first, in display form (the payload for prefix filters).

    A query prefix must go through `display_path` too, so that both sides compare alike.
    """
    dirs: list[str] = []
    current = os.path.dirname(os.path.normpath(path))
    while current:
        dirs.append(display_path(current))
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return dirs


def _walk_root(
    root: str, include_hidden: bool, report: ErrorCallback, skip: SkipCallback, visited: set[tuple[int, int]]
) -> Iterator[FileEntry]:
    """Depth-first walk of one root with an explicit stack (no recursion limit on deep trees); folders
    whose (device, inode) is in ``visited`` (walked already, or excluded) are passed over, and the
    ones this walk enters are added to it."""
    try:
        st = os.stat(root)
    except OSError as exc:
        report(root, _reason(exc))
        return
    if not stat.S_ISDIR(st.st_mode):
        kind = _kind_of(root, root) if stat.S_ISREG(st.st_mode) else None
        if kind is not None:
            yield FileEntry(root, root, kind, st.st_size, st.st_mtime)
        elif stat.S_ISREG(st.st_mode):
            skip(root)
        return
    if (st.st_dev, st.st_ino) in visited:  # the same folder as one walked already (a link to it)
        return
    visited.add((st.st_dev, st.st_ino))
    stack = [iter(_scan(root, report))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif include_hidden or not entry.name.startswith("."):
            if _is_dir(entry, report):
                subdir = _enter_dir(entry, visited, report)
                if subdir is not None:
                    stack.append(iter(subdir))
            else:
                found = _file_entry(entry, root, report, skip)
                if found is not None:
                    yield found


def _scan(directory: str, report: ErrorCallback) -> list[os.DirEntry[str]]:
    """The entries of one directory, sorted by name; [] (reported) if it cannot be read."""
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except OSError as exc:
        report(directory, _reason(exc))
        return []
    entries.sort(key=lambda e: e.name)
    return entries


def _is_dir(entry: os.DirEntry[str], report: ErrorCallback) -> bool:
    try:
        return entry.is_dir()  # no syscall for plain entries: the type comes from readdir
    except OSError as exc:
        report(entry.path, _reason(exc))
        return False


def _enter_dir(
    entry: os.DirEntry[str], visited: set[tuple[int, int]], report: ErrorCallback
) -> list[os.DirEntry[str]] | None:
    """The sorted entries of a subdirectory, or None if it was already walked (a link loop)."""
    try:
        st = entry.stat()
    except OSError as exc:
        report(entry.path, _reason(exc))
        return None
    key = (st.st_dev, st.st_ino)
    if key in visited:
        return None
    visited.add(key)
    return _scan(entry.path, report)


def _file_entry(entry: os.DirEntry[str], root: str, report: ErrorCallback, skip: SkipCallback) -> FileEntry | None:
    """A FileEntry for a media file (one stat), None for anything else."""
    kind = _kind_of(entry.path, entry.name)
    if kind is None:
        if _is_file(entry):
            skip(entry.path)
        return None
    try:
        st = entry.stat()
    except FileNotFoundError:
        if entry.is_symlink():
            report(entry.path, "broken symbolic link")
        return None  # otherwise it was deleted while we looked: not an error
    except OSError as exc:
        report(entry.path, _reason(exc))
        return None
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device named like a photo would block a reader
        return None
    return FileEntry(entry.path, root, kind, st.st_size, st.st_mtime)


def _kind_of(path: str, name: str) -> MediaKind | None:
    """`media_kind`, except that a ".ts" file must look like an MPEG transport stream (and not
    like TypeScript) to count as a video."""
    kind = media_kind(name)
    if kind == "video" and name.lower().endswith(".ts") and not _looks_like_mpegts(path):
        return None
    return kind


def _looks_like_mpegts(path: str) -> bool:
    """A sync byte at the start of the first two packets: 188 bytes, or 192 with a timestamp first."""
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            head = f.read(2 * _TS_PACKET + 8)
    except OSError:
        return True  # let the decoder say what is wrong with it
    return any(head[i : i + 1] == head[i + step : i + step + 1] == b"\x47" for i, step in ((0, _TS_PACKET), (4, 192)))


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    """A one-line, lower-case reason for an OSError ("permission denied")."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split()).lower()


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _ignore_error(path: str, reason: str) -> None:
    del path, reason


def _ignore_skip(path: str) -> None:
    del path
