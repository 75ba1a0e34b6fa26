"""Indexing on Ray (index/distributed.py): a local 2-CPU cluster builds exactly the sequential index."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_index import shape_photos

from mediasearch import Library
from mediasearch.index.distributed import EncoderActor, _groups
from mediasearch.index.options import IndexOptions
from mediasearch.index.pipeline import decode_file
from mediasearch.media.discover import discover
from mediasearch.store.server import forget_memory_servers

pytest.importorskip("ray")

Points = dict[str, tuple[dict[str, Any], np.ndarray]]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray of 2 CPUs whose workers import this checkout; shut down after the module."""
    import ray

    import mediasearch

    here = os.path.dirname(os.path.dirname(os.path.abspath(mediasearch.__file__)))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": here}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(autouse=True)
def _fresh_memory_server() -> Iterator[None]:
    forget_memory_servers()
    yield
    forget_memory_servers()


@pytest.fixture
def media_library(tmp_path: Path, make_video: Callable[..., Path]) -> Path:
    """Eight shape photos in three formats, a nested folder, and a 6-second video."""
    lib = tmp_path / "lib"
    shape_photos(lib / "photos", 6)
    shape_photos(lib / "photos" / "more", 2, seed=1)
    make_video(lib / "clips" / "colours.mp4", seconds=6.0)
    return lib


def all_points(lib: Library) -> Points:
    """id → (payload, vector) of everything in the library's index collection."""
    store = lib.backend.index_side.store
    return {r.id: (r.payload, r.vector) for r in store.scroll(with_vectors=True)}


def assert_same_points(got: Points, want: Points) -> None:
    assert set(got) == set(want)
    for pid, (payload, vector) in want.items():
        assert got[pid][0] == payload, pid
        np.testing.assert_allclose(got[pid][1], vector, atol=1e-4)


def build(settings: Any, lib_dir: Path, **kwargs: Any) -> tuple[dict[str, Any], Points, list[str]]:
    """Index ``lib_dir``; the report (without seconds), every point, and the top 10 for a query."""
    with Library.open(settings=settings, use_daemon=False) as lib:
        report = lib.index([lib_dir], **kwargs).to_json()
        points = all_points(lib)
        top = [h.path for h in lib.query("a red circle", limit=10)]
    report.pop("seconds")
    return report, points, top


def test_ray_into_edge_gives_the_sequential_index(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    want_report, want, want_top = build(demo_settings(tmp_path / "seq"), media_library)
    got_report, got, got_top = build(demo_settings(tmp_path / "ray"), media_library, ray=True, ray_actors=2)
    assert want_report["added"] == 9 and want_report["frames"] > 1
    assert got_report == want_report
    assert_same_points(got, want)
    assert got_top == want_top


def test_ray_into_server_path_gives_the_sequential_index(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    want_report, want, _ = build(demo_settings(tmp_path / "seq", qdrant_url=":memory:"), media_library)
    forget_memory_servers()  # the same collection, from nothing
    got_report, got, _ = build(demo_settings(tmp_path / "ray", qdrant_url=":memory:"), media_library, ray=True)
    assert got_report == want_report
    assert_same_points(got, want)


class StopAfter:
    """A progress bar that interrupts the run (as a kill would) once ``files`` files are done."""

    def __init__(self, files: int) -> None:
        self.left = files

    def start(self, files: int) -> None:
        pass

    def advance(self, files: int = 0, frames: int = 0) -> None:
        self.left -= files
        if self.left <= 0:
            raise KeyboardInterrupt

    def finish(self) -> None:
        pass


def test_interrupted_ray_run_completes_on_rerun(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    _, want, _ = build(demo_settings(tmp_path / "seq"), media_library)
    settings = demo_settings(tmp_path / "ray")
    with Library.open(settings=settings, use_daemon=False) as lib, pytest.raises(KeyboardInterrupt):
        lib.index([media_library], ray=True, batch_size=2, progress=StopAfter(3))
    with Library.open(settings=settings, use_daemon=False) as lib:
        halfway = lib.backend.index_side.store.count()
        report = lib.index([media_library], ray=True, batch_size=2)
        got = all_points(lib)
    assert 0 < halfway < len(want)  # the first run stopped midway
    assert report.unchanged >= 2 and report.added + report.unchanged == 9 and report.failed == 0
    assert_same_points(got, want)


KILLED_DRIVER = """
import os, signal, sys
from mediasearch import Library
from mediasearch.settings import load_settings

class KillAfter:
    done = 0
    def start(self, files): pass
    def finish(self): pass
    def advance(self, files=0, frames=0):
        self.done += files
        if self.done >= 3:
            os.kill(os.getpid(), signal.SIGKILL)

home, folder, address = sys.argv[1:]
settings = load_settings({"home": home, "model": "demo", "device": "cpu"}, env={})
with Library.open(settings=settings, use_daemon=False) as lib:
    lib.index([folder], ray_address=address, batch_size=2, progress=KillAfter())
"""


def test_driver_killed_midway_completes_on_rerun(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    """``kill -9`` of the driver (a process of its own, joined to this Ray) midway; then the same command."""
    import signal
    import subprocess
    import sys

    import ray

    _, want, _ = build(demo_settings(tmp_path / "seq"), media_library)
    home = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, str(home), str(media_library), address],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    settings = demo_settings(home)
    with Library.open(settings=settings, use_daemon=False) as lib:
        halfway = lib.backend.index_side.store.count()
        report = lib.index([media_library], ray=True)
        got = all_points(lib)
    assert 0 < halfway < len(want)
    assert report.unchanged >= 2 and report.added + report.unchanged == 9 and report.failed == 0
    assert_same_points(got, want)


def test_ray_rerun_changes_nothing_and_sees_moves(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    settings = demo_settings(tmp_path / "ray")
    with Library.open(settings=settings, use_daemon=False) as lib:
        lib.index([media_library], ray=True)
        again = lib.index([media_library], ray=True)
        (media_library / "photos" / "more").rename(media_library / "moved")
        (media_library / "clips" / "colours.mp4").unlink()
        moved = lib.index([media_library], ray=True)
    assert again.unchanged == 9 and again.added == 0
    assert (moved.moved, moved.removed, moved.added) == (2, 1, 0)


def test_encoder_actor_writes_to_a_server_then_barrier(demo_model: Any, media_library: Path) -> None:
    """The actors' own write path (wait=False, then the barrier), in-process against the local server."""
    from mediasearch.store.collections import open_store

    store = open_store(home=None, collection="media_t", dim=demo_model.dim, qdrant_url=":memory:")  # type: ignore[arg-type]
    entries = list(discover([str(media_library)]))
    items = [decode_file(e, None, demo_model, IndexOptions()) for e in entries]
    actor = EncoderActor(lambda: demo_model, None, (":memory:", None, "media_t"))
    encoded = actor.encode(*items)
    ids = [i for e in encoded for i in e.ids]
    store.wait_applied(ids, timeout_s=5)
    assert all(e.points is None for e in encoded)  # written, not handed back
    assert store.count() == len(ids) == len(set(ids)) > len(entries)


def test_groups_keep_videos_alone(media_library: Path) -> None:
    entries = sorted(discover([str(media_library)]), key=lambda e: e.kind, reverse=True)
    groups = list(_groups([(e, None) for e in entries], 4))
    assert [len(g) for g in groups] == [1, 4, 4]
    assert groups[0][0][0].kind == "video"


def test_cli_index_ray(ray_cluster: None, media_library: Path, cli: Any) -> None:
    on_ray = cli.json("index", str(media_library), "--ray", "--ray-actors", "1")
    again = cli.json("index", str(media_library))  # the sequential indexer finds nothing left to do
    assert on_ray["added"] == 9 and on_ray["failed"] == 0 and again["unchanged"] == 9


def test_first_ray_load_leaves_bulk_load_mode(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any]
) -> None:
    with Library.open(settings=demo_settings(qdrant_url=":memory:"), use_daemon=False) as lib:
        lib.create_store(shards=2, bulk_load=True)
        store = lib.backend.index_side.store
        assert store.in_bulk_load
        report = lib.index([media_library], ray=True)
        assert report.added == 9 and not store.in_bulk_load


SERVER = os.environ.get("MEDIASEARCH_TEST_QDRANT_URL")


@pytest.mark.skipif(not SERVER, reason="MEDIASEARCH_TEST_QDRANT_URL is not set")
def test_contract_actors_write_to_a_real_server(
    ray_cluster: None, media_library: Path, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    """On a real server the actors write the points themselves (wait=False, then the barrier)."""
    from qdrant_client import QdrantClient

    assert SERVER is not None
    client = QdrantClient(url=SERVER, api_key=os.environ.get("MEDIASEARCH_TEST_QDRANT_API_KEY"))

    def drop() -> None:
        for c in client.get_collections().collections:
            if c.name.startswith("media_demo"):
                client.delete_collection(c.name)

    drop()
    try:
        want_report, want, _ = build(demo_settings(tmp_path / "seq", qdrant_url=":memory:"), media_library)
        got_report, got, _ = build(
            demo_settings(tmp_path / "ray", qdrant_url=SERVER), media_library, ray=True, ray_actors=2
        )
        assert got_report == want_report
        assert_same_points(got, want)
    finally:
        drop()
        client.close()


def test_a_decode_task_keeps_the_indexing_time_limit(
    tmp_path: Path, make_video: Any, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray decode task (run here in-process) decodes a video in a decoder process under the indexing
    time limit, as the sequential indexer does: a file that hangs the decoder is reported and the task
    ends; the next video is decoded by a new decoder process."""
    import functools

    import torch

    from mediasearch.index import distributed
    from mediasearch.media.decode_pool import DecoderPool

    hanging = functools.partial(DecoderPool, decoder="fault_helpers:hanging_decoder")
    monkeypatch.setattr(distributed, "DecoderPool", hanging)
    monkeypatch.setattr(distributed, "_VIDEOS", {})
    make_video(tmp_path / "a_hang.mp4", seconds=2.0)
    make_video(tmp_path / "b_good.mp4", seconds=2.0)
    entries = {Path(e.path).name: e for e in discover([str(tmp_path)])}
    prep = distributed.Preprocessor(demo_model.transform, demo_model.image_size)
    options = IndexOptions(decode_timeout=1.0)
    threads = torch.get_num_threads()  # a decode task sets its process's torch to one thread
    try:
        hung = distributed._decode(entries["a_hang.mp4"], None, prep, options)
        good = distributed._decode(entries["b_good.mp4"], None, prep, options)
    finally:
        torch.set_num_threads(threads)
        for pool in distributed._VIDEOS.values():
            pool.close()
    assert hung.fatal and "took too long" in (hung.error or ""), hung.error
    assert not good.fatal and good.error is None and len(good.tensors) == len(good.timestamps) >= 1
