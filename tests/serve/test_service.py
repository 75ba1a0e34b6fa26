"""The daemon's service in-process: reads that share a lock, status counts kept current, the HNSW build
(when it starts, what a failed reopen does), files served from the descriptor that was checked, and a
watched folder inside the home."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fault_helpers import wait_until

from mediasearch.errors import MediaError, StoreError
from mediasearch.lab.shapes import render, save_image
from mediasearch.library import home as home_module
from mediasearch.library import search_graph
from mediasearch.library.requests import IndexOptions, Query, StoredFile, Term
from mediasearch.media import thumbnails
from mediasearch.media.decode_pool import DecoderPool, DecodeTimeoutError
from mediasearch.serve import service as daemon_service
from mediasearch.serve.changes import points_changed
from mediasearch.serve.options import DaemonOptions
from mediasearch.serve.rwlock import LockTimeout, ReadWriteLock
from mediasearch.serve.service import NotIndexedError, NotReadyError, Service
from mediasearch.settings import Settings


def photo(path: Path, colour: str = "red", shape: str = "circle", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(render(colour, shape, rng=np.random.default_rng(seed), size=(96, 96)), path, "png")
    return path


Start = Callable[..., Service]


@pytest.fixture
def start(demo_settings: Callable[..., Settings], demo_model: Any, tmp_path: Path) -> Iterator[Start]:
    """Factory: a started Service for ``roots`` on the test's home (stopped after the test)."""
    started: list[Service] = []

    def make(*roots: Path, home: Path | None = None, **options: Any) -> Service:
        settings = demo_settings(home)
        settings.home.mkdir(parents=True, exist_ok=True)
        opts = DaemonOptions(roots=tuple(str(r) for r in roots), rescan_every=0, debounce=0.1, **options)
        service = Service(settings, opts, logging.getLogger(f"test-service-{len(started)}"))
        started.append(service)
        service.start()
        wait_until(lambda: service.last_scan is not None and not service.busy, 120, "the first rescan")
        return service

    yield make
    for service in started:
        service.stop()


# -- the readers-writer lock ----------------------------------------------------------------------------


def test_readers_share_the_lock_and_a_waiting_writer_holds_new_readers_back() -> None:
    lock = ReadWriteLock()
    both_in = threading.Barrier(2, timeout=30)

    def reader() -> None:
        with lock.read(timeout=30):
            both_in.wait()  # only passes if the two readers hold the lock at the same time

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not both_in.broken

    got_write = threading.Event()
    release_reader = threading.Event()
    reading = threading.Event()

    def long_reader() -> None:
        with lock.read():
            reading.set()
            release_reader.wait(30)

    def writer() -> None:
        with lock.write():
            got_write.set()

    holder = threading.Thread(target=long_reader)
    holder.start()
    reading.wait(30)
    waiting = threading.Thread(target=writer)
    waiting.start()
    wait_until(lambda: lock._writers_waiting == 1, 30, "the writer waits")
    with pytest.raises(LockTimeout), lock.read(timeout=0.05):
        pass  # a new reader queues behind the waiting writer
    assert not got_write.is_set()  # the reader in place still holds it
    release_reader.set()
    holder.join()
    waiting.join()
    assert got_write.is_set()
    with lock.read(timeout=1):
        assert lock.readers == 1


def test_a_query_in_progress_does_not_hold_up_status_or_files(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old daemon took one plain lock for every read: status waited for the query (then 503)."""
    lib = tmp_path / "lib"
    photo(lib / "a.png")
    service = start(lib)
    monkeypatch.setattr(daemon_service, "QUERY_WAIT_S", 0.5)
    assert service.lib is not None
    entered, release = threading.Event(), threading.Event()
    real_search = service.lib.search

    def blocking_search(query: Query) -> Any:
        entered.set()
        release.wait(60)
        return real_search(query)

    monkeypatch.setattr(service.lib, "search", blocking_search)
    answers: list[Any] = []
    query = threading.Thread(target=lambda: answers.append(service.query(Query(terms=(Term("text", "a red circle"),)))))
    query.start()
    try:
        assert entered.wait(60)
        assert service.status()["files"] == 1  # while the query still holds its read
        served = service.media(str(lib / "a.png"))
        served.close()
        assert service.tags() == {}
    finally:
        release.set()
        query.join()
    assert answers and answers[0][0]["path"] == str(lib / "a.png")


# -- status from counts kept current --------------------------------------------------------------------


def test_status_counts_follow_runs_and_forgets_without_a_scroll(
    start: Start, tmp_path: Path, make_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "star"), ("green", "square")]):
        photo(lib / f"p{i}.png", colour, shape, i)
    video = make_video(lib / "clips" / "v.mp4", seconds=6.0)
    service = start(lib)
    real_count = home_module.count_store

    def no_scroll(store: Any) -> Any:
        raise AssertionError("status scrolled the store")

    monkeypatch.setattr(home_module, "count_store", no_scroll)
    counts = {k: service.status()[k] for k in ("files", "images", "videos", "frames")}
    assert counts == {"files": 4, "images": 3, "videos": 1, "frames": 3}

    assert service.lib is not None
    store = service.lib.index_side.store

    def counted() -> dict[str, int]:
        status = service.status()
        truth = asdict(real_count(store))
        assert {k: status[k] for k in truth} == truth
        return truth

    photo(lib / "more" / "p3.png", "yellow", "triangle", 3)
    photo(lib / "more" / "p4.png", "orange", "circle", 4)
    service.index([str(lib)], IndexOptions())
    assert counted() == {"files": 6, "images": 5, "videos": 1, "frames": 3}
    assert service.forget(str(video))["files"] == 1
    assert counted() == {"files": 5, "images": 5, "videos": 0, "frames": 0}
    (lib / "p0.png").unlink()
    service.index([str(lib)], IndexOptions())  # the video is still there: indexed again
    assert counted() == {"files": 5, "images": 4, "videos": 1, "frames": 3}


# -- the HNSW build ---------------------------------------------------------------------------------------


def _stored(path: str, kind: str, ids: list[str], size: int = 1, mtime: float = 1.0) -> StoredFile:
    return StoredFile(path, size, mtime, "f", len(ids), kind, list(ids))


def test_points_changed_counts_points_not_files() -> None:
    before = {
        "/v.mp4": _stored("/v.mp4", "video", ["v1", "v2", "v3"]),
        "/a.png": _stored("/a.png", "image", ["a"]),
        "/gone.png": _stored("/gone.png", "image", ["g"]),
    }
    after = {
        "/v.mp4": _stored("/v.mp4", "video", ["v1", "v2", "v3", "v4"], size=2),  # re-encoded: 4 points
        "/a.png": _stored("/a.png", "image", ["a"]),  # unchanged: nothing
        "/new.mp4": _stored("/new.mp4", "video", ["n1", "n2"]),
    }
    assert points_changed(before, after) == 4 + 1 + 2
    assert points_changed(after, after) == 0


def test_a_collection_indexed_without_its_graph_gets_it_when_served(cli: Any, start: Start, tmp_path: Path) -> None:
    """`mediasearch index`, then `serve` with no change at all: the big collection is built once."""
    lib = tmp_path / "lib"
    for i in range(4):
        photo(lib / f"p{i}.png", seed=i)
    cli.json("index", str(lib))
    service = start(home=cli.home, optimize_min_points=2)
    assert service.lib is not None
    lib_side = service.lib
    wait_until(lambda: lib_side.search_index_built() == 4 and service.state == "ready", 120, "the HNSW build")
    assert service.status()["files"] == 4


def test_a_graph_built_with_other_settings_is_rebuilt_when_served(cli: Any, start: Start, tmp_path: Path) -> None:
    """A store whose graph an older release built (other m / ef_construct) gets today's graph once served."""
    from mediasearch.library.local import SEARCH_INDEX_KEY
    from mediasearch.store.base import GRAPH_SETTINGS
    from mediasearch.store.collections import active_collection, open_store

    lib = tmp_path / "lib"
    for i in range(4):
        photo(lib / f"p{i}.png", seed=i)
    cli.json("index", str(lib))
    collection = active_collection(home=cli.home)
    assert collection is not None
    with open_store(home=cli.home, collection=collection, dim=None, create=False) as store:
        store.set_meta({**(store.get_meta() or {}), SEARCH_INDEX_KEY: {"points": 4, "graph": {"m": 16}}})
    service = start(home=cli.home, optimize_min_points=2)
    assert service.lib is not None
    lib_side = service.lib

    def rebuilt() -> bool:
        record = (lib_side.index_side.store.get_meta() or {}).get(SEARCH_INDEX_KEY, {})
        return record.get("graph") == GRAPH_SETTINGS and service.state == "ready"

    wait_until(rebuilt, 120, "the HNSW rebuild")
    assert lib_side.search_index_built() == 4


def test_a_store_that_cannot_be_reopened_after_a_build_is_an_error_state_then_recovers(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    photo(lib / "a.png")
    service = start(lib)
    monkeypatch.setattr(daemon_service, "RECOVER_EVERY_S", 0.2)
    real_reopen, fail = search_graph.reopen_store, threading.Event()
    fail.set()

    def reopen(settings: Settings, collection: str, wait_s: float = 60.0) -> Any:
        if fail.is_set():
            raise StoreError("the store is in use by another process")
        return real_reopen(settings, collection, wait_s)

    monkeypatch.setattr(search_graph, "reopen_store", reopen)
    service._submit(service._optimize_job).result(timeout=120)
    assert service.state == "error" and "cannot open the store" in service.message
    with pytest.raises(NotReadyError, match="cannot open the store"):
        service.query(Query(terms=(Term("text", "a red circle"),)))
    fail.clear()
    wait_until(lambda: service.state == "ready", 60, "the daemon recovers")
    assert service.query(Query(terms=(Term("text", "a red circle"),)))[0]["path"] == str(lib / "a.png")


# -- files served from the descriptor that was checked -----------------------------------------------------


def test_media_is_served_from_the_descriptor_checked_not_the_path(start: Start, tmp_path: Path) -> None:
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    target = photo(outside / "indexed.png")
    secret = photo(outside / "secret.png", "blue", "star", 1)
    link = lib / "link.png"
    lib.mkdir()
    link.symlink_to(target)
    service = start(lib)
    served = service.media(str(link))
    try:
        link.unlink()
        link.symlink_to(secret)  # re-pointed between the check and the reading
        assert os.pread(served.fd, served.stat.st_size + 1, 0) == target.read_bytes()
    finally:
        served.close()
    with pytest.raises(NotIndexedError, match="changed since it was indexed"):
        service.media(str(link))


def test_video_thumbnails_are_decoded_in_a_worker_for_the_checked_file_only(
    start: Start, tmp_path: Path, make_video: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    video = make_video(lib / "v.mp4", seconds=2.0)
    service = start(lib)

    def not_here(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a video thumbnail was decoded in the HTTP thread")

    monkeypatch.setattr(thumbnails, "video_frame", not_here)  # the worker process is not patched
    assert service.thumbnail(str(video), 64, 1.0)[:2] == b"\xff\xd8"  # a JPEG
    st = os.stat(video)
    wrong = (st.st_dev, st.st_ino + 1, st.st_size, st.st_mtime_ns)
    with pytest.raises(MediaError, match="changed since it was checked"):
        thumbnails.video_thumbnail(str(video), size=64, at=0.0, identity=wrong)


def test_a_decoder_call_has_the_indexing_time_limit(tmp_path: Path) -> None:
    with DecoderPool(1, timeout=0.5) as pool:
        assert pool.call(str(tmp_path), "fault_helpers:sleep_then_answer", {"seconds": 0.0}) == str(tmp_path)
        with pytest.raises(DecodeTimeoutError):
            pool.call(str(tmp_path), "fault_helpers:sleep_then_answer", {"seconds": 60.0})


def test_background_workers_run_below_the_caller(tmp_path: Path) -> None:
    """The enrichment pass's workers (``nice`` > 0) run below the daemon, so its queries come first; the
    decoders that indexing and thumbnails wait on run at the caller's own priority."""
    from mediasearch.index.enrich import LANE_NICE

    own = os.getpriority(os.PRIO_PROCESS, 0)
    with DecoderPool(1, timeout=30.0, nice=LANE_NICE) as pool:
        assert pool.call(str(tmp_path), "fault_helpers:niceness", {}) == min(19, own + LANE_NICE)
    with DecoderPool(1, timeout=30.0) as pool:
        assert pool.call(str(tmp_path), "fault_helpers:niceness", {}) == own


PLANNER = "mediasearch.media.decode_pool:_planned_frames"


def test_a_new_worker_s_start_counts_for_no_file(tmp_path: Path) -> None:
    """Starting a worker imports the decoders (half a second idle, seconds on a loaded machine): that is
    not part of the first file's time limit, which here is far shorter than the start."""
    with DecoderPool(1, timeout=0.05) as pool:
        planned = pool.call(str(tmp_path), PLANNER, {"interval": 2.0, "max_frames": 5}, frames=0)  # imports av
        assert planned == 1  # (not a video: one frame, for the decoder to refuse)


# -- a watched folder inside the home --------------------------------------------------------------------


def test_a_folder_inside_the_home_is_watched_and_the_home_s_own_files_are_not(start: Start, tmp_path: Path) -> None:
    """`serve HOME/inner` used to ignore every event under the home: nothing new was ever indexed."""
    home = tmp_path / "home"
    inner = home / "inner"
    photo(inner / "a.png")
    service = start(inner, home=home)  # no scheduled rescan: only events index what comes
    assert service.status()["files"] == 1
    photo(inner / "b.png", "blue", "star", 1)
    wait_until(lambda: service.status()["files"] == 2, 60, "the new photo is indexed from its event")

    service.coalescer.set_roots([str(home)])  # a root holding the whole home: its own files are not media
    for own in (service.settings.cache_dir / "thumbnails" / "ab" / "x.jpg", home / "store" / "y.jpg",
                home / "logs" / "z.jpg"):
        service.coalescer.add("created", str(own))
    assert service.coalescer.pending() == 0
    service.coalescer.add("created", str(home / "elsewhere" / "c.png"))
    assert service.coalescer.pending() == 1
