"""Decode videos in worker processes with a time limit per file.

decord can hang forever on some broken files (upstream bugs) and can crash the process on others; a
thread stuck in C code cannot be interrupted. So videos are decoded in small worker processes
(``python -m mediasearch.media.decode_pool``, importing only the decoders): a worker that overruns its
time limit is killed and the file reported, one that crashes costs only that file. Workers are
started on demand, re-used for file after file, and stopped with the pool.

The limit is ``timeout`` seconds to open the file and plan its frames, then ``timeout`` plus
``PER_FRAME_S`` per planned frame for the decoding itself, so a long video is never cut short. A new
worker's start (Python and the decoders' imports) counts for no file: it says when it is ready.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from mediasearch.errors import MediaError

__all__ = ["DEFAULT_DECODER", "PER_FRAME_S", "DecoderPool", "DecodeTimeoutError"]

DEFAULT_DECODER = "mediasearch.media.decode:sample_video"
PER_FRAME_S = 0.5
STARTUP_S = 60.0  # for a new worker to start and import the decoders (a loaded machine is slow at it)
_STOP_WAIT_S = 2.0


class DecodeTimeoutError(MediaError):
    """A file took longer than its time limit to decode: its worker was stopped."""


class _Worker:
    """One worker process and the two pipes to it."""

    def __init__(self, preload: tuple[str, ...] = (), nice: int = 0) -> None:
        paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}  # an empty entry means "."
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mediasearch.media.decode_pool", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # FFmpeg's complaints about broken files: the reason is reported
            env=env,
            close_fds=True,
        )
        if nice > 0:  # below this process's priority: background work gives the cores to what waits on them
            with contextlib.suppress(OSError, AttributeError):
                current = os.getpriority(os.PRIO_PROCESS, 0)
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, min(19, current + nice))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.send = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.recv = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        self.close_pipes()

    def stop(self) -> None:
        """Ask it to leave (end of input), kill it if it does not."""
        self.close_pipes()
        try:
            self.proc.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def close_pipes(self) -> None:
        for conn in (self.send, self.recv):
            with contextlib.suppress(OSError):
                conn.close()


class DecoderPool:
    """Up to ``size`` worker processes that run ``decoder`` ("module:function") on one file each."""

    def __init__(
        self,
        size: int,
        timeout: float,
        decoder: str = DEFAULT_DECODER,
        who: str = "the video decoder",
        preload: tuple[str, ...] = (),
        nice: int = 0,
    ) -> None:
        self.size, self.timeout, self.decoder = max(1, size), timeout, decoder
        self.nice = nice  # how far below this process the workers run (the enrichment pass: background work)
        self.who = who  # what the messages call the workers ("the face finder")
        self.preload = preload  # modules a new worker imports before it is ready (default: the video decoders)
        self._idle: list[_Worker] = []
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(self.size)
        self._closed = False

    def sample_video(self, path: str, *, interval: float, max_frames: int, target: int, exact: bool = False) -> Any:
        """``decode.sample_video`` in a worker: its VideoSample, or MediaError (time limit, crash, bad file)."""
        kwargs: dict[str, Any] = {"interval": interval, "max_frames": max_frames, "target": target}
        if exact:  # only when asked: a custom decoder need not know the option
            kwargs["exact"] = True
        request = {"decoder": self.decoder, "sys_path": list(sys.path), "path": path, "kwargs": kwargs}
        with self._slots:
            worker = self._take()
            try:
                result = self._run(worker, request, max_frames)
            except BaseException:
                self._discard(worker)
                raise
            self._give_back(worker)
        return result

    def call(self, path: str, decoder: str, kwargs: dict[str, Any], frames: int = 1) -> Any:
        """Any ``decoder`` ("module:function", called as ``function(path, **kwargs)``) in a worker, under
        the limit of a video of ``frames`` frames (the daemon's video thumbnails use it)."""
        request = {"decoder": decoder, "sys_path": list(sys.path), "path": path, "kwargs": kwargs, "plan": False}
        if self.who != "the video decoder":
            request["fails"] = f"{self.who} failed"
        with self._slots:
            worker = self._take()
            try:
                result = self._run(worker, request, frames)
            except BaseException:
                self._discard(worker)
                raise
            self._give_back(worker)
        return result

    def _run(self, worker: _Worker, request: dict[str, Any], max_frames: int) -> Any:
        try:
            worker.send.send_bytes(pickle.dumps(request))
        except OSError as exc:
            raise MediaError(f"{self.who} could not start: {exc.strerror or exc}") from None
        if not request.get("plan", True):
            limit = self.timeout + PER_FRAME_S * max_frames
            kind, value = self._answer(worker, limit, f"decoding {max_frames} frames")
            if kind == "error":
                raise MediaError(str(value))
            return value
        kind, value = self._answer(worker, self.timeout, "opening it")
        if kind == "plan":
            frames = min(int(value), max_frames)
            limit = self.timeout + PER_FRAME_S * frames
            kind, value = self._answer(worker, limit, f"decoding {frames} frames")
        if kind == "error":
            raise MediaError(str(value))
        return value

    def _answer(self, worker: _Worker, limit: float, doing: str) -> tuple[str, Any]:
        """The worker's next message, or MediaError when it overruns ``limit`` seconds or dies."""
        if not worker.recv.poll(limit):
            raise DecodeTimeoutError(f"decoding took too long ({doing}: over {limit:.0f} s); the file may be damaged")
        try:
            kind, value = pickle.loads(worker.recv.recv_bytes())
        except (EOFError, OSError, pickle.UnpicklingError, ValueError):
            code = worker.proc.wait()
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            raise MediaError(f"{self.who} crashed on this file ({how})") from None
        return str(kind), value

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise MediaError("the decoder pool is closed")
            if self._idle:
                return self._idle.pop()
        worker = _Worker(self.preload, self.nice)
        with self._lock:
            self._live.add(worker)
        limit = max(STARTUP_S, self.timeout)
        try:  # a new worker's start (Python, the decoders' imports) is not part of any file's time limit
            if not worker.recv.poll(limit):
                raise MediaError(f"{self.who} did not start within {limit:.0f} s")
            worker.recv.recv_bytes()  # ("ready", None)
        except (EOFError, OSError):
            self._discard(worker)
            raise MediaError(f"{self.who} could not start") from None
        except MediaError:
            self._discard(worker)
            raise
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._live.discard(worker)

    def close(self) -> None:
        """Stop every worker (a busy one is killed)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = self._live - set(idle)
            self._live = set()
        for worker in idle:
            worker.stop()
        for worker in busy:
            worker.kill()

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- the worker process -----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """A worker stuck in C code must not outlive the indexer (Linux: the kernel kills it)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _planned_frames(path: str, interval: float, max_frames: int) -> int:
    """How many frames the decoder will sample (from the container's duration; quick)."""
    import av

    from mediasearch.media.decode import plan_timestamps

    try:
        with av.open(path, metadata_errors="ignore") as container:
            duration = container.duration / 1_000_000 if container.duration else 0.0
    except Exception:  # the decoder itself will say what is wrong
        return 1
    return len(plan_timestamps(duration, interval, max_frames))


def _resolve(spec: str, sys_path: list[str]) -> Callable[..., Any]:
    for entry in sys_path:
        if entry not in sys.path:
            sys.path.append(entry)
    module, _, name = spec.partition(":")
    decoder: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return decoder


def _serve(requests: Connection, answers: Connection) -> None:
    while True:
        try:
            request = pickle.loads(requests.recv_bytes())
        except (EOFError, OSError):
            return
        kwargs = request["kwargs"]
        try:
            decoder = _resolve(request["decoder"], request["sys_path"])
            if request.get("plan", True):
                planned = _planned_frames(request["path"], kwargs["interval"], kwargs["max_frames"])
                answers.send_bytes(pickle.dumps(("plan", planned)))
            answer: tuple[str, Any] = ("done", decoder(request["path"], **kwargs))
        except MediaError as exc:
            answer = ("error", str(exc))
        except Exception as exc:  # keep the promise: one line per bad file, never a traceback
            fails = request.get("fails", "cannot decode video")
            answer = ("error", f"{fails}: {' '.join(str(exc).split()) or type(exc).__name__}")
        answers.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


def _main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints from C libraries must not corrupt the answers
    preload = sys.argv[1:] or ("numpy", "PIL.Image", "av", "decord", DEFAULT_DECODER.partition(":")[0])
    for module in preload:
        with contextlib.suppress(Exception):  # the decoders' imports, before the first file's clock starts
            importlib.import_module(module)  # (half a second idle, seconds on a loaded machine)
    answers.send_bytes(pickle.dumps(("ready", None)))
    _serve(Connection(os.dup(0), writable=False), answers)


if __name__ == "__main__":
    _main()
