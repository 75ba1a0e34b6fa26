"""One thread for the process's multi-threaded torch work on the CPU (the daemon's main thread).

Torch's CPU thread pool is GNU OpenMP, which gives every thread that starts a parallel region a team
of workers of its own. Once a process holds more such threads than it has CPUs, libgomp stops letting
idle workers spin between regions: they sleep, and each of the hundreds of small regions in a forward
pass pays a wake-up (~40 us here). Measured on 2 cores with ViT-B-32's text tower: one text 11 ms on
the thread that owns the only team, 18 ms once a second thread has one; 7 texts 30 vs 50 ms. The
daemon encodes on several threads (the index worker, the HTTP handlers), so it runs that work here.

`tune_openmp` shortens how long idle workers spin: it must run before torch is first imported.

`run` hands a job to the lane while one is serving (`serve`) and runs it in place otherwise, or when
the caller is the lane itself. `run_if_idle` hands it over only when the lane has nothing else to do,
so that a query never waits behind a batch of indexing (it runs on its own thread, on one core).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

__all__ = ["SPIN_COUNT", "Lane", "run", "run_if_idle", "serving", "spare_cpus", "tune_openmp", "usable_cpus"]

T = TypeVar("T")
_TICK_S = 0.5
SPIN_COUNT = "30000"  # libgomp's default is 300000


def tune_openmp(env: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Let idle OpenMP workers spin a tenth of libgomp's default before they sleep (unless the user
    chose a policy). While indexing, decode threads share the cores with inference, and a worker
    spinning at a barrier for a preempted partner burns the time a decoder needed: 12 MP indexing
    on 2 cores 4.4-4.6 s -> 4.1-4.3 s per 96 files, with the text tower's small operations (which
    follow each other within microseconds) as fast as before. Only takes effect before torch loads."""
    if "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env:
        env["GOMP_SPINCOUNT"] = SPIN_COUNT


class Lane:
    """A queue of jobs that the thread which created the lane runs in `serve`."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object], int | None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # jobs queued or running
        self._open = True
        self.completed = 0  # jobs run here

    def submit(
        self, fn: Callable[[], T], threads: int | None = None, *, only_if_idle: bool = False
    ) -> Future[T] | None:
        """Queue ``fn`` (at ``threads`` torch threads; None: the lane's own); None when closed, or busy
        and ``only_if_idle``."""
        future: Future[T] = Future()
        with self._lock:
            if not self._open or (only_if_idle and self._pending):
                return None
            self._pending += 1
            self._jobs.put((fn, future, threads))  # type: ignore[arg-type]
        return future

    def serve(self, stop: threading.Event) -> None:
        """Run jobs on this (the creating) thread until ``stop`` is set; then run what is queued, close."""
        if threading.get_ident() != self.owner:
            raise RuntimeError("a lane is served by the thread that created it")
        try:
            while not stop.is_set():
                with contextlib.suppress(queue.Empty):
                    self._run_one(self._jobs.get(timeout=_TICK_S))
        finally:
            self.close()

    def close(self) -> None:
        """Take no more jobs (`run` then runs them in place) and run those already queued."""
        with self._lock:
            self._open = False
        while True:  # nothing is queued once closed, so this ends
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            self._run_one(job)

    def _run_one(self, job: tuple[Callable[[], object], Future[object], int | None]) -> None:
        fn, future, threads = job
        try:
            if future.set_running_or_notify_cancel():
                try:
                    with _torch_threads(threads):
                        result = fn()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            with self._lock:
                self._pending -= 1
                self.completed += 1


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    if saved == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


_ACTIVE: list[Lane] = []  # the serving lane, if any (OpenMP's teams are per process, so is this)


@contextlib.contextmanager
def serving() -> Iterator[Lane]:
    """Make a lane owned by this thread the process's lane; `Lane.serve` it inside the block."""
    lane = Lane()
    _ACTIVE.append(lane)
    try:
        yield lane
    finally:
        lane.close()
        _ACTIVE.remove(lane)


def _lane() -> Lane | None:
    lane = _ACTIVE[-1] if _ACTIVE else None
    if lane is None or lane.owner == threading.get_ident():
        return None
    return lane


def run(fn: Callable[[], T], threads: int | None = None) -> T:
    """``fn()`` on the lane (at ``threads`` torch threads) when one serves, else here."""
    lane = _lane()
    future = lane.submit(fn, threads) if lane is not None else None
    return fn() if future is None else future.result()


def run_if_idle(fn: Callable[[], T], otherwise: Callable[[], T]) -> T:
    """``fn()`` on the lane when one serves and is idle; else ``otherwise()`` here."""
    lane = _lane()
    future = lane.submit(fn, only_if_idle=True) if lane is not None else None
    return otherwise() if future is None else future.result()


def spare_cpus() -> int:
    """CPUs that no other task wants right now: those this process may use, less the tasks the kernel
    counts as running or runnable besides the caller (Linux's /proc/loadavg; 0 where it is unknown).

    Work split across threads waits at every step for its slowest thread: on a machine whose other
    cores are taken, a descheduled worker made 7 query texts on 2 threads 2x slower than on one."""
    try:
        with open("/proc/loadavg", "rb") as fh:
            running = int(fh.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, usable_cpus() - running)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform says, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
