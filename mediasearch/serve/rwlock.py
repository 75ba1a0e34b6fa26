"""A readers-writer lock: many readers at once; a writer alone, and ahead of readers that come after it.

The daemon's reads (queries, thumbnails, files, tags, status) share it; the rare writes that replace
what the readers use (a switch of collection, the HNSW build that closes and reopens the store) take
it alone. A waiting writer holds back new readers, so a steady stream of queries cannot starve it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class LockTimeout(Exception):
    """The lock could not be had within the time asked for."""


class ReadWriteLock:
    """Shared (`read`) and exclusive (`write`) holds, each with an optional time limit."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @property
    def readers(self) -> int:
        """How many holds for reading are in place now."""
        return self._readers

    @contextlib.contextmanager
    def read(self, timeout: float | None = None) -> Iterator[None]:
        """Hold for reading; LockTimeout after ``timeout`` seconds while a writer holds or waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._writer or self._writers_waiting:
                if not self._cond.wait(_left(deadline)) and deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self, timeout: float | None = None) -> Iterator[None]:
        """Hold alone: waits for the readers in place to finish; LockTimeout after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    if not self._cond.wait(_left(deadline)) and deadline is not None and time.monotonic() >= deadline:
                        raise LockTimeout()
            finally:
                self._writers_waiting -= 1
                if not self._writers_waiting:
                    self._cond.notify_all()  # readers held back by this writer may go (if it gave up)
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
