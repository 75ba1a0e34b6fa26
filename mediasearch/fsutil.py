"""Atomic, durable writes of small state files (the ground floor: every layer may use it).

A state file is written to a temporary file with a unique name in the same folder, flushed to disk
(fsync), renamed over the target, and the folder is flushed too, so that the rename itself survives a
power cut. A reader sees the old content or the new one, never a torn file; a kill at any moment
leaves at most a stray ``.NAME.*.tmp`` file next to the target, and never the target half-written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "fsync_dir"]


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder: nothing to do
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that wants a file name (``torch.save``,
    ``safetensors``); once the block ends without error it is fsynced and renamed over ``path``.

    ``mode`` sets the permissions before the rename (``0o600`` for a file holding a secret); by
    default the file gets the usual ``0o666 & ~umask``. OSError propagates; the temporary is removed.
    """
    target = Path(path)
    tmp, fd = _create_temporary(target, 0o666 if mode is None else mode)
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # exactly, whatever the umask
        os.close(fd)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8) atomically and durably; see `atomic_path`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(raw)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temporary(target: Path, mode: int) -> tuple[Path, int]:
    """A new file next to ``target`` under a name no other writer (thread or process) uses; created by
    the kernel with ``mode & ~umask``, as ``open()`` would (``mkstemp`` would force 0o600)."""
    while True:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        except FileExistsError:
            continue
