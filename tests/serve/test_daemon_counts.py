"""Model-based test of the daemon's kept-current counts (issue 15: "status from counters kept current,
not a full scroll").

The daemon counts its store once at start; after that every index run and every `forget` adjusts the
counts by what it changed, so that /status never scrolls every point. A hypothesis state machine drives
the daemon's service (in this process, the session's demo model; no HTTP: the counts live below it)
through files added, rewritten, deleted and moved, `index` of folders, nested folders and single files
(present or deleted), `forget` of folders and files (present or deleted), and the search-graph build
(which closes and reopens the store), with readers querying
and asking for /status from other threads all along. After each command /status must say exactly what
a full count of the store says, and no reader may have failed.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from mediasearch.errors import NotIndexedError
from mediasearch.library import home
from mediasearch.library.roots import record as record_roots
from mediasearch.search.query import Query, Term
from mediasearch.serve.options import DaemonOptions
from mediasearch.serve.service import NotReadyError, Service
from mediasearch.settings import load_settings

FOLDERS = ("a", "a/inner", "b")
COLOURS = [(200, 30, 30), (30, 30, 200), (30, 160, 30), (220, 200, 40)]


class Readers:
    """Threads that query and read the status while the machine's commands run: any error is kept."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.reads = 0
        self.busy = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(2)]
        for thread in self.threads:
            thread.start()

    def run(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                if i == 0:
                    self.service.query(Query(terms=(Term("text", "a red circle"),), limit=5))
                else:
                    counts = self.service.status()
                    assert min(counts[k] for k in ("files", "images", "videos", "frames")) >= 0, counts
                self.reads += 1
            except NotReadyError:  # 503 while the search graph is built: the answer the API documents
                self.busy += 1
            except BaseException as exc:  # noqa: BLE001 - a reader's failure is the test's finding
                self.errors.append(exc)
                return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


class DaemonCounts(RuleBasedStateMachine):
    def __init__(self, base: Path, make_image: Any, make_video: Any) -> None:
        super().__init__()
        for name in ("lib", "home"):
            shutil.rmtree(base / name, ignore_errors=True)
        self.lib = base / "lib"
        self.lib.mkdir()
        self.make_image, self.make_video = make_image, make_video
        self.names = 0
        config = load_settings({"home": base / "home", "model": "demo", "device": "cpu"}, env={})
        # The library's folder is a root its owner indexed on the machine (HOME/roots.json), but the daemon
        # watches nothing and has no schedule: it changes the store only when the machine tells it to.
        record_roots(base / "home", [str(self.lib)])
        options = DaemonOptions(rescan_every=0, debounce=3600)
        self.service = Service(config, options, logging.getLogger("mediasearch.test.counts"))
        self.service.start()
        assert self.service.state == "ready", self.service.message
        self.readers = Readers(self.service)

    def teardown(self) -> None:
        self.readers.close()
        self.service.stop()

    def files(self) -> list[Path]:
        return sorted(p for p in self.lib.rglob("*") if p.is_file())

    def picked(self, pick: int) -> Path | None:
        """The library's file number ``pick`` (modulo their count), None when there is none."""
        files = self.files()
        return files[pick % len(files)] if files else None

    def path(self, folder: str) -> Path:
        return self.lib / folder if folder != "." else self.lib

    # -- the library --

    @rule(folder=st.sampled_from(FOLDERS), colour=st.integers(0, len(COLOURS) - 1), video=st.booleans())
    def add(self, folder: str, colour: int, video: bool) -> None:
        self.names += 1
        if video:
            path = self.make_video(self.path(folder) / f"v{self.names}.mp4", seconds=3.0 + colour, fps=4)
        else:
            path = self.make_image(self.path(folder) / f"p{self.names}.png", color=COLOURS[colour])
        note(f"add {path.relative_to(self.lib)}")

    @rule(pick=st.integers(0, 50), colour=st.integers(0, len(COLOURS) - 1))
    def rewrite(self, pick: int, colour: int) -> None:
        """New content (a video gets another length: other frames)."""
        path = self.picked(pick)
        if path is None:
            return
        if path.suffix == ".mp4":
            self.make_video(path, seconds=2.0 + colour, fps=4)
        else:
            self.make_image(path, color=COLOURS[colour], size=(48 + 8 * colour, 40))
        note(f"rewrite {path.relative_to(self.lib)}")

    @rule(pick=st.integers(0, 50))
    def delete(self, pick: int) -> None:
        path = self.picked(pick)
        if path is not None:
            path.unlink()
            note(f"delete {path.relative_to(self.lib)}")

    @rule(pick=st.integers(0, 50), folder=st.sampled_from(FOLDERS))
    def move(self, pick: int, folder: str) -> None:
        path = self.picked(pick)
        if path is not None:
            target = self.path(folder) / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            note(f"move {path.relative_to(self.lib)} -> {target.relative_to(self.lib)}")

    # -- the daemon's commands --

    @rule(folders=st.lists(st.sampled_from((*FOLDERS, ".")), min_size=1, max_size=2))
    def index(self, folders: list[str]) -> None:
        """`index` of folders (nested or not, present or not)."""
        self.run_index([str(self.path(f)) for f in folders])

    @rule(pick=st.integers(0, 50), with_folder=st.sampled_from((None, *FOLDERS)))
    def index_file(self, pick: int, with_folder: str | None) -> None:
        """`index FILE`, maybe beside a folder."""
        path = self.picked(pick)
        if path is not None:
            self.run_index([str(path)] + ([str(self.path(with_folder))] if with_folder else []))

    def run_index(self, paths: list[str]) -> None:
        report = self.service.index(paths, self.service.options.index)
        note(f"index {[os.path.relpath(p, self.lib) for p in paths]}: {report}")

    @rule(pick=st.integers(0, 50))
    def index_deleted_file(self, pick: int) -> None:
        """`index FILE` of a file that is gone: a missing root, which changes nothing."""
        path = self.picked(pick)
        if path is not None:
            path.unlink()
            note(f"delete {path.relative_to(self.lib)}, then index it")
            self.run_index([str(path)])

    @rule(folder=st.sampled_from((*FOLDERS, ".")), remove_first=st.booleans())
    def forget_folder(self, folder: str, remove_first: bool) -> None:
        """`forget FOLDER` (removed first, or not: a stored path is forgotten either way)."""
        path = self.path(folder)
        if remove_first and folder != "." and path.is_dir():
            shutil.rmtree(path)
        try:
            dropped = self.service.forget(str(path))["files"]
        except NotIndexedError:  # forget takes indexed paths only; the invariant checks nothing moved
            dropped = "refused: nothing indexed there"
        note(f"forget {folder}{' (removed first)' if remove_first else ''}: {dropped}")

    @rule(pick=st.integers(0, 50), remove_first=st.booleans())
    def forget_file(self, pick: int, remove_first: bool) -> None:
        """`forget FILE` (deleted first, or not)."""
        path = self.picked(pick)
        if path is None:
            return
        if remove_first:
            path.unlink()
        try:
            dropped = self.service.forget(str(path))["files"]
        except NotIndexedError:  # forget takes indexed paths only; the invariant checks nothing moved
            dropped = "refused: not indexed"
        note(f"forget {path.relative_to(self.lib)}{' (deleted first)' if remove_first else ''}: {dropped}")

    @rule()
    def build_search_graph(self) -> None:
        """The HNSW build the daemon runs on a big store (here on a small one): the store is closed, built
        in a child process and opened again; reads wait meanwhile, or are told the daemon is busy."""
        self.service._wait(self.service._submit(self.service._optimize_job))
        assert self.service.state == "ready", (self.service.state, self.service.message)
        note("build the search graph")

    # -- the invariant --

    @invariant()
    def status_counts_what_the_store_holds(self) -> None:
        lib = self.service.lib
        assert lib is not None
        counted = asdict(home.count_store(lib.index_side.store))
        status = self.service.status()
        kept = {k: status[k] for k in counted}
        assert kept == counted, f"/status says {kept}, a full count of the store {counted}"
        assert not self.readers.errors, f"a reader failed: {self.readers.errors[0]!r}"


def test_status_counts_stay_exact(tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any) -> None:
    """After any sequence of changes, index runs and forgets, /status counts what the store holds."""
    machines: list[DaemonCounts] = []

    def machine() -> DaemonCounts:
        machines.append(DaemonCounts(tmp_path, make_image, make_video))
        return machines[-1]

    budget = settings(
        max_examples=20,
        stateful_step_count=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    run_state_machine_as_test(machine, settings=budget)
    assert sum(m.readers.reads for m in machines) > 0, "the readers never ran"


def test_forget_of_a_deleted_file_keeps_status_exact(
    tmp_path: Path, make_image: Any, make_video: Any, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sequence the machine first shrank a defect to, driven through it: an indexed file deleted,
    then forgotten (the daemon looked its path up as a folder and kept counting it)."""
    monkeypatch.setattr(sys.modules[__name__], "note", print)
    machine = DaemonCounts(tmp_path, make_image, make_video)
    try:
        machine.add("a", 0, False)
        machine.add("a", 1, True)
        machine.index(["a"])
        machine.status_counts_what_the_store_holds()
        machine.forget_file(0, remove_first=True)
        machine.status_counts_what_the_store_holds()
        machine.index_deleted_file(0)
        machine.status_counts_what_the_store_holds()
    finally:
        machine.teardown()
