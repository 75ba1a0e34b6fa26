"""Opening an Edge shard takes no room it has not checked for: on tmpfs, where the engine's load fills
the holes of the files it maps, a shard's disk usage must not grow with each open, and an open that
would fill more than is free is refused in one line instead of dying of SIGBUS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from mediasearch import store as st
from mediasearch.fsutil import filesystem_type
from mediasearch.store.base import PointIn
from mediasearch.store.edge import OPEN_MARGIN_BYTES, open_need

DIM = 16
REPO = Path(__file__).resolve().parents[2]
SLACK = 2 << 20  # what an open may write besides filled holes: its config, the id tracker's versions


def _points(n: int, seed: int = 0) -> list[PointIn]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payload = {"kind": "image", "ocr_text": "exit"}
    return [
        PointIn(str(uuid.UUID(int=seed * 10_000 + i + 1)), v, {"path": f"/lib/{i}.jpg", **payload})
        for i, v in enumerate(vectors)
    ]


def allocated(folder: Path) -> int:
    """Bytes the files under ``folder`` take on their disk (allocated blocks, not apparent sizes)."""
    return sum(os.lstat(Path(d) / f).st_blocks * 512 for d, _, files in os.walk(folder) for f in files)


@pytest.fixture(params=["disk", "tmpfs"])
def medium(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A folder on the test machine's disk, or on a tmpfs (where the test may mount one; 1 GiB: a graph
    build wants room for a copy of the segments it merges)."""
    return tmp_path if request.param == "disk" else Path(request.getfixturevalue("make_tmpfs")(1024))


def test_opening_a_shard_again_and_again_does_not_grow_it(medium: Path) -> None:
    home = medium / "home"
    with st.open_store(home=home, collection="media_t", dim=DIM) as store:
        store.upsert(_points(30))
    shard = home / "store" / "media_t"
    written = allocated(shard)
    sizes = []
    for _ in range(6):
        with st.open_store(home=home, collection="media_t", dim=None, create=False) as store:
            assert store.count() == 30
        sizes.append(allocated(shard))
    assert max(sizes) - written <= SLACK, (written, sizes)
    if filesystem_type(shard) == "tmpfs":  # elsewhere holes stay holes: a load reads them as page cache
        assert open_need(shard) <= SLACK  # nothing left for a later open to fill


def test_a_graph_build_leaves_nothing_for_the_next_open_to_fill(medium: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimise makes new segments (the graph's, a fresh appendable one): their first load happens in
    the process that built them, so the command that opens the store next takes no room."""
    from mediasearch.store import base as store_base

    monkeypatch.setattr(store_base, "EXACT_SEARCH_MAX_POINTS", 400)  # a graph from 400 points
    home = medium / "home"
    with st.open_store(home=home, collection="media_g", dim=DIM) as store:
        store.upsert(_points(480))
        assert store.optimize() and store.graph_points() == 480
        assert store.count() == 480  # still usable after its reload
    shard = home / "store" / "media_g"
    built = allocated(shard)
    for _ in range(3):
        with st.open_store(home=home, collection="media_g", dim=None, create=False) as store:
            assert store.graph_points() == 480
    assert allocated(shard) - built <= SLACK, (built, allocated(shard))


def test_an_open_that_would_fill_more_than_is_free_is_refused_in_one_line(small_disk: Path) -> None:
    """A shard as the last release left it (its files never loaded since they were made): on a tmpfs
    with less free than its load fills, the open says the disk is full; with room, it opens."""
    import qdrant_edge as qe

    from mediasearch.store import edge

    assert filesystem_type(small_disk) == "tmpfs"
    shard = small_disk / "home" / "store" / "media_old"
    engine = qe.EdgeShard.create(str(shard), edge._edge_config(DIM))
    edge._ensure_edge_indexes(engine, None)
    engine.close()
    need = open_need(shard)
    assert need > 32 << 20  # the engine populates the payload indexes' sparse pages
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(small_disk).free - need // 2)
    before = allocated(shard)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from mediasearch.errors import StoreFullError
        from mediasearch.store.collections import open_store
        try:
            open_store(home=Path({str(shard.parents[1])!r}), collection="media_old", dim=None, create=False).close()
        except StoreFullError as exc:
            raise SystemExit(str(exc))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)  # not -SIGBUS
    line = done.stderr.strip().splitlines()[-1]  # (before it, a line may say the home was made private)
    assert "is full" in line and "needed to open the store" in line, line
    assert allocated(shard) - before <= OPEN_MARGIN_BYTES  # the refused open filled nothing
    filler.unlink()
    with st.open_store(home=shard.parents[1], collection="media_old", dim=None, create=False) as store:
        store.upsert(_points(5))
        assert store.count() == 5
    assert open_need(shard) <= SLACK


def test_the_faces_shard_indexes_only_what_faces_are_found_by(tmp_path: Path) -> None:
    """A faces shard as the last release made it (with the media's eleven indexes) keeps only path and
    people once opened, with its faces; an open that finds them so changes nothing."""
    import qdrant_edge as qe

    from mediasearch.store.faces import FACES_COLLECTION, FACES_DIM, FaceRecord, faces_home, open_faces

    folder = faces_home(tmp_path)
    st.open_store(home=folder, collection=FACES_COLLECTION, dim=FACES_DIM).close()  # every media index
    shard = folder / "store" / FACES_COLLECTION
    face = FaceRecord("0" * 8 + "-0000-0000-0000-" + "0" * 12, "/a.jpg", "p1", 0, (0, 0, 1, 1), 0.9, "7", np.ones(128))
    with open_faces(home=tmp_path) as faces:
        faces.add([face])

    def schema() -> set[str]:
        engine = qe.EdgeShard.load(str(shard))
        try:
            return set(engine.info().payload_schema)
        finally:
            engine.close()

    assert schema() == {"path", "people"}
    configs = sorted(shard.glob("segments/*/payload_index/config.json"))
    stamps = [p.stat().st_mtime_ns for p in configs]
    with open_faces(home=tmp_path) as faces:
        assert [f.path for f in faces.faces(person="7")] == ["/a.jpg"]
    assert [p.stat().st_mtime_ns for p in configs] == stamps
