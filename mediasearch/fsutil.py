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
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "filesystem_type", "fsync_dir", "make_private"]

PRIVATE_DIR = 0o700


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


def make_private(folder: str | os.PathLike[str]) -> bool:
    """Create ``folder`` readable by its owner only (0700), or tighten an existing one that others could
    enter: it and everything in it lose the group's and others' rights (folders 0700, files 0600 or
    0700). Returns whether it tightened anything, and says so in one log line. A folder that belongs to
    another user is left alone."""
    import logging
    import stat

    target = Path(folder)
    if not target.exists():
        target.mkdir(parents=True, mode=PRIVATE_DIR, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(target, PRIVATE_DIR)  # exactly, whatever the umask
        return False
    info = target.stat()
    owner = os.getuid() if hasattr(os, "getuid") else info.st_uid  # no owners to compare on Windows
    if not stat.S_ISDIR(info.st_mode) or info.st_mode & 0o077 == 0 or info.st_uid != owner:
        return False
    os.chmod(target, PRIVATE_DIR)
    for path in target.rglob("*"):
        with contextlib.suppress(OSError):
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                os.chmod(path, stat.S_IMODE(mode) & 0o700)
    logging.getLogger("mediasearch.home").warning(
        "%s could be read by other users: made it private (0700, its files 0600)", target
    )
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that wants a file name (``torch.save``,
    ``safetensors``); once the block ends without error it is fsynced and renamed over ``path``.

    ``mode`` sets the permissions before the rename (``0o600`` for a file holding a secret); by
    default the file gets the usual ``0o666 & ~umask``, or 0600 in a folder only its owner may enter.
    OSError propagates; the temporary is removed.
    """
    target = Path(path)
    if mode is None and _private(target.parent):
        mode = 0o600  # a state file in a private folder (the home) stays private when rewritten
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


def _private(folder: Path) -> bool:
    try:
        return folder.stat().st_mode & 0o077 == 0
    except OSError:
        return False


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


def under(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or inside it, compared as written (no link is resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def outermost(paths: Sequence[str]) -> list[str]:
    """``paths`` without those inside another of them (each once), in their order."""
    unique = list(dict.fromkeys(paths))
    return [p for p in unique if not any(p != q and under(p, q) for q in unique)]


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by another user
        return True
    return True


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type of the file system holding ``path`` (``"ext4"``, ``"tmpfs"``, ...), read from this
    process's mount table by device number; None where it cannot tell (not Linux, a btrfs subvolume)."""
    try:
        device = os.stat(path).st_dev
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(device)}:{os.minor(device)}".encode()
    for line in lines:
        fields = line.split(b" ")
        # id parent major:minor root mount-point options [optional fields...] - type source super-options
        if len(fields) > 7 and fields[2] == wanted and b"-" in fields[6:]:
            return fields[fields.index(b"-", 6) + 1].decode("utf-8", "replace")
    return None
