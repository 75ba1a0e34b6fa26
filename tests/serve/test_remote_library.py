"""`Library` through a daemon (`RemoteLibrary`): an index run the daemon does reaches the caller's progress as
a local run does, and every answer comes back as the same typed result."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import photos
from served_library import Served, served_library

import mediasearch as ms
from mediasearch.library import roots


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served_library(tmp_path_factory.mktemp("remote")) as daemon:
        yield daemon


class Recorder:
    """A progress that remembers what it was told."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.files: list[int] = []  # files done, per phase
        self.frames: list[int] = []
        self.finished = 0

    def start(self, files: int) -> None:
        self.started.append(files)
        self.files.append(0)
        self.frames.append(0)

    def advance(self, files: int = 0, frames: int = 0) -> None:
        self.files[-1] += files
        self.frames[-1] += frames

    def finish(self) -> None:
        self.finished += 1


def test_a_daemon_run_index_reports_its_progress_to_the_caller(served: Served, tmp_path: Path) -> None:
    extra = served.lib.parent / "more"
    added = photos(extra, [("orange", "triangle")] * 12, seed=21)
    roots.record(served.home, [str(extra)])
    progress = Recorder()
    with ms.Library.open(home=served.home, model="demo") as lib:
        assert lib.daemon is not None  # answered by the daemon
        report = lib.index([extra], progress=progress)
        assert isinstance(report, ms.IndexReport) and report.added == len(added)
        hits = lib.query("an orange triangle", limit=3, folder=extra)
        assert all(isinstance(h, ms.Hit) and Path(h.path).parent == extra for h in hits)
        assert lib.forget(extra) == len(added)
    # A run of a dozen pictures may end between two looks (the next test scripts the looks): then nothing
    # is shown, never a wrong count.
    # Each phase seen (the CLIP pass, then the enrichers) is started with its files and finished.
    assert progress.started in ([], [len(added)], [len(added), len(added)]), progress.started
    assert progress.finished == len(progress.started)
    assert all(0 <= done <= len(added) for done in progress.files)


def test_explain_through_the_daemon_reads_the_text_there(served: Served) -> None:
    with ms.Library.open(home=served.home, model="demo") as lib:
        assert lib.daemon is not None
        read: Any = lib.query("a red circle in Paris in 2023", explain=True, kind="image")
    assert isinstance(read, ms.library.types.Explanation)
    assert (read.text, read.after, read.before, read.kind) == ("a red circle", "2023-01-01", "2024-01-01", "image")
    assert read.place is not None and read.place.name == "Paris"


class ScriptedDaemon:
    """The HTTP boundary's stand-in: a status whose ``indexing`` part moves on at each look."""

    def __init__(self, looks: list[dict[str, Any] | None], answered: Any) -> None:
        self.looks, self.answered = looks, answered

    def status(self) -> dict[str, Any]:
        if len(self.looks) > 1:
            return {"daemon": {"indexing": self.looks.pop(0)}}
        self.answered.set()  # the last look: the run is over, the index request gets its answer
        return {"daemon": {"indexing": self.looks[0]}}


def test_the_progress_follows_the_daemon_s_run_of_these_paths_only(tmp_path: Path) -> None:
    import threading

    from mediasearch.library import client

    mine, other = str(tmp_path / "mine"), str(tmp_path / "other")
    looks: list[dict[str, Any] | None] = [
        None,
        {"paths": [other], "phase": 1, "files": 50, "done": 10, "frames": 10},  # a watched folder's run
        {"paths": [mine], "phase": 1, "files": 4, "done": 1, "frames": 3},
        {"paths": [mine], "phase": 1, "files": 4, "done": 1, "frames": 3},
        {"paths": [mine], "phase": 1, "files": 4, "done": 4, "frames": 9},
        {"paths": [mine], "phase": 2, "files": 3, "done": 2, "frames": 2},
    ]
    answered = threading.Event()
    worker = threading.Thread(target=lambda: answered.wait(60))  # the thread waiting for the index answer
    worker.start()
    daemon = ScriptedDaemon(looks, answered)
    progress = Recorder()
    client.follow_progress(daemon, [mine], progress, worker)  # type: ignore[arg-type]
    assert progress.started == [4, 3] and progress.files == [4, 2] and progress.frames == [9, 2]
    assert progress.finished == 2
