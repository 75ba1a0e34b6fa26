"""Indexed files as the daemon serves them: opened once, checked on that descriptor, served from it.

Checking a file by path and then opening it again by path lets whoever can re-point a symbolic link
(or rename a file into place) in between get any file the daemon can read served. So a file is opened
once (non-blocking: a FIFO put in its place does not hang the thread), the descriptor is ``fstat``-ed
and its content checked against the index (regular file, size, fingerprint), and everything served —
the bytes of ``/media``, an image thumbnail — is read from that same descriptor. A video thumbnail is
decoded in a worker process (under the indexing time limit), which reopens the file and refuses it
unless it is the very file checked here (device, inode, size and modification time).

``O_NOFOLLOW`` is not used: discovery follows symbolic links, so an indexed path may be one; what is
served is pinned by the descriptor, wherever the link pointed when it was opened.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mediasearch.media.discover import display_path, fingerprint_fd


class FileChangedError(Exception):
    """The file is not what was indexed any more (or cannot be read)."""


@dataclass
class ServedFile:
    """An indexed file open for serving: its descriptor (owned), what ``fstat`` said, its kind."""

    path: str
    fd: int
    stat: os.stat_result
    kind: str

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """What a worker compares a file it reopens with: device, inode, size, mtime (ns)."""
        return (self.stat.st_dev, self.stat.st_ino, self.stat.st_size, self.stat.st_mtime_ns)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def open_checked(path: str, payload: dict[str, Any]) -> ServedFile:
    """Open ``path`` once and check the descriptor against its stored ``payload``; FileChangedError when
    it is not a regular file of the indexed size and fingerprint. The caller closes what it gets."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise _changed(path) from None
    try:
        st = os.fstat(fd)
        same = (
            stat.S_ISREG(st.st_mode)
            and st.st_size == payload.get("size")
            and fingerprint_fd(fd, st.st_size) == payload.get("fingerprint")
        )
        if not same:
            raise _changed(path)
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise _changed(path) from None
    except BaseException:
        os.close(fd)
        raise
    return ServedFile(path, fd, st, str(payload.get("kind", "image")))


@contextlib.contextmanager
def opened_checked(path: str, payload: dict[str, Any]) -> Iterator[ServedFile]:
    """`open_checked`, closed when the block ends."""
    served = open_checked(path, payload)
    try:
        yield served
    finally:
        served.close()


def _changed(path: str) -> FileChangedError:
    return FileChangedError(f"{display_path(path)} has changed since it was indexed, or cannot be read: not served")


def descriptor_response(served: ServedFile, headers: dict[str, str]) -> Any:
    """A FileResponse (ranges, ETag, HEAD) that reads the descriptor the daemon checked, never the path
    again; the descriptor is closed when the response is done (or abandoned)."""
    import mimetypes

    import anyio
    from fastapi.responses import FileResponse

    class DescriptorResponse(FileResponse):
        @contextlib.asynccontextmanager
        async def _open_file(self) -> Any:
            source = os.fdopen(os.dup(served.fd), "rb")
            source.seek(0)
            file = anyio.wrap_file(source)
            try:
                yield file
            finally:
                with anyio.CancelScope(shield=True):
                    await file.aclose()

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            extensions = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
            try:
                await super().__call__({**scope, "extensions": extensions}, receive, send)
            finally:
                served.close()

    kind = mimetypes.guess_type(served.path)[0] or "application/octet-stream"
    return DescriptorResponse(served.path, media_type=kind, headers=headers, stat_result=served.stat)
