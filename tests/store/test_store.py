"""The store, over both backends: an Edge shard in a temporary home and the ":memory:" server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch import store as st
from mediasearch.errors import ModelMismatchError, StoreError, StoreLockedError
from mediasearch.media.discover import ancestor_dirs
from mediasearch.store.base import AUTO_FLUSH_S, Filter, PointIn, Store
from mediasearch.store.server import forget_memory_servers

DIM = 8
REPO = Path(__file__).resolve().parents[2]
OpenStore = Callable[..., Store]


def _make_home() -> Path:
    # Edge fsyncs on every create, payload-index creation and flush: on a busy shared disk that is
    # ~20 s for this file against ~4 s on tmpfs, and nothing here depends on the medium.
    fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="mediasearch-store-", dir=fast))


@pytest.fixture
def home() -> Iterator[Path]:
    """An empty MEDIASEARCH_HOME, on tmpfs when there is one."""
    path = _make_home()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_memory_server() -> Iterator[None]:
    forget_memory_servers()
    yield
    forget_memory_servers()


@pytest.fixture(params=["edge", "memory"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(home: Path, backend: str) -> Iterator[OpenStore]:
    """Factory: open a store of the parametrized backend; everything opened is closed after."""
    opened: list[Store] = []
    url = ":memory:" if backend == "memory" else None

    def factory(collection: str = "media_test", dim: int | None = DIM, **kwargs: object) -> Store:
        store = st.open_store(home=home, collection=collection, dim=dim, qdrant_url=url, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def unit(*hot: int) -> np.ndarray:
    vec = np.zeros(DIM, dtype=np.float32)
    for i, axis in enumerate(hot):
        vec[axis] = 1.0 / (i + 1)
    return vec / np.linalg.norm(vec)


def payload(
    path: str, root: str, kind: str = "image", tags: tuple[str, ...] = (), date: float = 0.0
) -> dict[str, Any]:
    return {
        "path": path,
        "dirs": ancestor_dirs(path),  # what the indexer writes
        "root": root,
        "kind": kind,
        "size": 10,
        "mtime": date,
        "fingerprint": "f" + path,
        "frames_total": 1,
        "timestamp": 0.0 if kind == "video" else None,
        "duration": 5.0 if kind == "video" else None,
        "width": 4,
        "height": 3,
        "date": date,
        "camera": None,
        "tags": list(tags),
    }


LIBRARY = {  # name -> (vector axes, payload)
    "a": ((0,), payload("/r1/x/a.jpg", "/r1", tags=("cat", "red"), date=100.0)),
    "b": ((1,), payload("/r1/x/y/b.mp4", "/r1", kind="video", tags=("cat",), date=200.0)),
    "c": ((2,), payload("/r1/z/c.png", "/r1", tags=("dog", "red"), date=300.0)),
    "d": ((3,), payload("/r2/d.jpg", "/r2", date=400.0)),
    "e": ((4,), payload("/r1/xx/e.jpg", "/r1", tags=("dog",), date=500.0)),
}
IDS = {name: st.point_id(f"file:{name}", None) for name in LIBRARY}
NAMES = {pid: name for name, pid in IDS.items()}


def fill(store: Store) -> Store:
    store.upsert([PointIn(IDS[n], unit(*axes), pl) for n, (axes, pl) in LIBRARY.items()])
    return store


@pytest.fixture
def library(open_store: OpenStore) -> Store:
    """The sample library in a fresh store, for tests that change it."""
    return fill(open_store())


@pytest.fixture(scope="module", params=["edge", "memory"])
def shared(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The sample library, shared by the read-only tests of a backend (creating a shard costs ~1 s)."""
    url = ":memory:" if request.param == "memory" else None
    home = _make_home()
    store = fill(st.open_store(home=home, collection="media_shared", dim=DIM, qdrant_url=url))
    yield store
    store.close()
    shutil.rmtree(home, ignore_errors=True)


def names(records: list[st.Record]) -> set[str]:
    return {NAMES[r.id] for r in records}


def test_point_id_is_deterministic_uuid() -> None:
    a = st.point_id("/x/v.mp4", 1.5)
    assert a == st.point_id("/x/v.mp4", 1.5) == st.point_id("/x/v.mp4", 1.5000001)
    assert a != st.point_id("/x/v.mp4", 2.0) != st.point_id("/x/v.mp4", None)
    assert str(uuid.UUID(a)) == a
    assert st.point_id("/x/a.jpg", None) == "bb96c629-2b43-53e5-9c77-d7f52944092d"  # never changes


def test_names_and_dirs() -> None:
    name = st.collection_name("ViT-B-32/laion2b_s34b_b79k")
    assert name == st.collection_name("ViT-B-32/laion2b_s34b_b79k") and name.startswith("media_vit_b_32")
    assert name != st.collection_name("ViT-B-32/openai")
    assert st.normalize_dir("/a/b/") == "/a/b"


def test_upsert_retrieve_roundtrip(shared: Store) -> None:
    [rec] = shared.retrieve([IDS["b"]], with_vectors=True)
    assert rec.id == IDS["b"] and rec.payload == LIBRARY["b"][1]
    assert rec.vector is not None and rec.vector.dtype == np.float32
    np.testing.assert_allclose(rec.vector, unit(1), atol=1e-6)
    assert shared.retrieve([IDS["a"]])[0].vector is None
    assert shared.retrieve([str(uuid.uuid4())]) == []
    assert shared.count() == 5


def test_upsert_replaces_by_id(library: Store) -> None:
    library.upsert([PointIn(IDS["a"], unit(5), payload("/r1/x/a.jpg", "/r1", date=1.0))])
    assert library.count() == 5
    assert library.retrieve([IDS["a"]])[0].payload["tags"] == []


def test_upsert_rejects_wrong_dim(library: Store) -> None:
    with pytest.raises(StoreError, match="8-d"):
        library.upsert([PointIn(IDS["a"], np.ones(3, dtype=np.float32), {})])


def test_edge_keeps_vectors_in_half_precision(home: Path) -> None:
    vec = np.full(DIM, 1 / np.sqrt(DIM), dtype=np.float32) + np.linspace(0, 1e-3, DIM, dtype=np.float32)
    vec /= np.linalg.norm(vec)
    with st.open_store(home=home, collection="media_half", dim=DIM) as store:
        store.upsert([PointIn(IDS["a"], vec, {})])
        [rec] = store.retrieve([IDS["a"]], with_vectors=True)
        [hit] = store.search(vec, limit=1)
    assert rec.vector is not None and rec.vector.dtype == np.float32
    np.testing.assert_array_equal(rec.vector, vec.astype(np.float16).astype(np.float32))
    assert not np.array_equal(rec.vector, vec)  # float32 would have kept it as written
    assert hit.score == pytest.approx(1.0, abs=1e-3)


def test_search_best_first(shared: Store) -> None:
    hits = shared.search(unit(2, 0), limit=3, with_vectors=True)
    assert [NAMES[h.id] for h in hits][:2] == ["c", "a"]
    scores = [h.score for h in hits]
    tolerance = 1e-3 if shared.location.startswith("edge:") else 1e-5  # edge keeps float16 vectors
    assert scores == pytest.approx([2 / np.sqrt(5), 1 / np.sqrt(5), 0.0], abs=tolerance)
    assert hits[0].vector is not None and hits[0].payload["path"] == "/r1/z/c.png"
    assert [NAMES[h.id] for h in shared.search(unit(2, 0), limit=2, exact=False)] == ["c", "a"]


def test_scroll_pages_and_fields(shared: Store) -> None:
    records = list(shared.scroll(batch=2))
    assert names(records) == set(LIBRARY) and len(records) == 5
    slim = list(shared.scroll(fields=["path", "size"], with_vectors=True))
    assert all(set(r.payload) == {"path", "size"} and r.vector is not None for r in slim)
    assert all(r.payload == {} for r in shared.scroll(fields=[]))


FILTER_CASES = [
    (Filter(kind="video"), {"b"}),
    (Filter(kind="image"), {"a", "c", "d", "e"}),
    (Filter(dir_prefix="/r1/x"), {"a", "b"}),  # not /r1/xx
    (Filter(dir_prefix="/r1/x/"), {"a", "b"}),
    (Filter(dir_prefix="/r1/x/y"), {"b"}),
    (Filter(dir_prefix="/r1"), {"a", "b", "c", "e"}),
    (Filter(path="/r1/z/c.png"), {"c"}),
    (Filter(root="/r2"), {"d"}),
    (Filter(tags=("cat",)), {"a", "b"}),
    (Filter(tags=("cat", "red")), {"a"}),
    (Filter(after=200.0), {"b", "c", "d", "e"}),
    (Filter(before=300.0), {"a", "b"}),
    (Filter(after=200.0, before=400.0), {"b", "c"}),
    (Filter(exclude_ids=(IDS["a"], IDS["e"])), {"b", "c", "d"}),
    (Filter(kind="image", root="/r1", tags=("red",)), {"a", "c"}),
    (Filter(), set(LIBRARY)),
]


@pytest.mark.parametrize(("flt", "expected"), FILTER_CASES)
def test_filter(shared: Store, flt: Filter, expected: set[str]) -> None:
    assert names(list(shared.scroll(flt))) == expected
    assert shared.count(flt) == len(expected)
    assert names(shared.search(unit(0), limit=10, flt=flt)) == expected


def test_set_payload_merges(library: Store) -> None:
    library.set_payload([IDS["a"], IDS["d"]], {"tags": ["sunset"], "camera": "X100"})
    a = library.retrieve([IDS["a"]])[0].payload
    assert a["tags"] == ["sunset"] and a["camera"] == "X100" and a["path"] == "/r1/x/a.jpg"
    assert library.count(Filter(tags=("sunset",))) == 2


def test_delete_and_delete_where(library: Store) -> None:
    library.delete([IDS["a"], str(uuid.uuid4())])
    assert library.count() == 4
    library.delete_where(Filter(dir_prefix="/r1"))
    assert names(list(library.scroll())) == {"d"}
    library.delete_where(Filter())  # an empty filter is not "everything"
    assert library.count() == 1


def test_facet(shared: Store) -> None:
    assert shared.facet("tags") == {"cat": 2, "red": 2, "dog": 2}
    assert shared.facet("tags", Filter(root="/r1", kind="image")) == {"red": 2, "cat": 1, "dog": 2}
    assert shared.facet("kind") == {"image": 4, "video": 1}


def test_meta_roundtrip(open_store: OpenStore) -> None:
    store = open_store()
    assert store.get_meta() is None
    meta = {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "dim": DIM, "complete": False}
    store.set_meta(meta)
    store.set_meta({**meta, "complete": True})
    assert store.get_meta() == {**meta, "complete": True}
    store.set_meta({"model": "demo"})  # replaces, does not merge
    assert store.get_meta() == {"model": "demo"}


def test_active_collection_roundtrip(open_store: OpenStore, home: Path, backend: str) -> None:
    url = ":memory:" if backend == "memory" else None
    assert st.active_collection(home=home, qdrant_url=url) is None
    for name in ("media_one", "media_two"):
        open_store(name).close()
    assert st.list_collections(home=home, qdrant_url=url) == ["media_one", "media_two"]
    st.set_active_collection(home=home, collection="media_one", qdrant_url=url)
    st.set_active_collection(home=home, collection="media_two", qdrant_url=url)
    assert st.active_collection(home=home, qdrant_url=url) == "media_two"
    with pytest.raises(StoreError, match="media_nope"):
        st.set_active_collection(home=home, collection="media_nope", qdrant_url=url)


def test_reopen_checks_dim(open_store: OpenStore, library: Store) -> None:
    library.close()
    again = open_store(dim=None)
    assert again.dim == DIM and again.count() == 5
    again.close()
    with pytest.raises(ModelMismatchError, match="8-d"):
        open_store(dim=16)
    with pytest.raises(StoreError, match="no"):
        open_store("media_missing", create=False)


def test_optimize_keeps_search_working(library: Store, backend: str) -> None:
    """Edge: a store with most of its points deleted is vacuumed (True), then has nothing left to do
    (False). A server optimises by itself: always False. Search answers the same throughout."""
    rng = np.random.default_rng(0)
    filler = [
        PointIn(st.point_id(f"filler:{i}", None), v / np.linalg.norm(v), payload(f"/r3/{i}.jpg", "/r3"))
        for i, v in enumerate(rng.standard_normal((3000, DIM)).astype(np.float32))
    ]
    library.upsert(filler)
    library.delete([p.id for p in filler[:2500]])
    assert library.optimize() is (backend == "edge")
    assert library.optimize() is False
    assert library.count() == 5 + 500
    assert names(library.search(unit(3), limit=1, flt=Filter(root="/r2"))) == {"d"}


def test_closed_store_raises(library: Store) -> None:
    library.close()
    library.close()
    with pytest.raises(StoreError, match="closed"):
        library.count()


# --- Edge only -----------------------------------------------------------------------------------


def edge(home: Path, dim: int | None = DIM, wait_s: float = 5.0) -> Store:
    return st.open_store(home=home, collection="media_test", dim=dim, wait_s=wait_s)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from mediasearch.store.base import PointIn, point_id
    from mediasearch.store.collections import open_store
    store = open_store(home=Path(sys.argv[1]), collection="media_test", dim=8)
    vecs = np.eye(8, dtype=np.float32)
    store.upsert([PointIn(point_id(str(i), None), vecs[i % 8], {"i": i}) for i in range(20)])
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_edge_second_process_is_locked_out_and_kill_loses_nothing(home: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(home)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with pytest.raises(
            StoreLockedError, match=f"in use by another mediasearch process \\(pid {holder.pid}"
        ):
            edge(home, wait_s=0.3)
        assert time.monotonic() - started >= 0.3
    finally:
        holder.kill()  # SIGKILL: no flush, no close
        holder.wait()
    with edge(home, wait_s=2.0) as store:
        assert store.count() == 20  # written, not flushed, survived kill -9


def test_edge_second_open_in_same_process(home: Path) -> None:
    with edge(home):
        with pytest.raises(StoreLockedError, match="same process"):
            edge(home, wait_s=0.1)
    edge(home).close()  # released by close


def test_edge_engine_lock_without_owner_file(home: Path) -> None:
    import qdrant_edge

    edge(home).close()
    shard = qdrant_edge.EdgeShard.load(str(home / "store" / "media_test"))  # holds only the WAL lock
    try:
        with pytest.raises(StoreLockedError, match="in use"):
            edge(home, wait_s=0.2)
    finally:
        shard.close()
    edge(home).close()


def test_edge_clears_temp_segments_and_keeps_data(home: Path) -> None:
    with edge(home) as store:
        store.upsert([PointIn(IDS["a"], unit(0), LIBRARY["a"][1])])
        store.set_meta({"model": "m"})
    leftover = home / "store" / "media_test" / "temp_segments" / "segment_builder_x"
    leftover.mkdir(parents=True)
    (leftover / "junk").write_bytes(b"x")
    with edge(home, dim=None) as store:
        assert not leftover.exists()
        assert store.count() == 1 and store.get_meta() == {"model": "m"}
        assert store.location == f"edge:{home / 'store' / 'media_test'}"
    assert (home / "store" / "media_test.owner").read_text() == ""


def test_server_unreachable() -> None:
    with pytest.raises(StoreError, match="cannot reach Qdrant at http://127.0.0.1:9"):
        st.open_store(home=Path("."), collection="media_x", dim=DIM, qdrant_url="http://127.0.0.1:9")


def test_memory_server_shared_within_process(home: Path) -> None:
    a = st.open_store(home=home, collection="media_s", dim=DIM, qdrant_url=":memory:")
    a.upsert([PointIn(IDS["a"], unit(0), LIBRARY["a"][1])])
    a.close()
    b = st.open_store(home=home, collection="media_s", dim=None, qdrant_url=":memory:")
    assert b.count() == 1 and b.location == "qdrant::memory:/media_s"


def test_import_is_cheap() -> None:
    code = "import sys, mediasearch.store; print(any(m.startswith('qdrant') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_edge_writes_are_synced_at_most_auto_flush_s_apart(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README's power-cut paragraph rests on: while writing, a flush (the sync of the log) at
    least every AUTO_FLUSH_S; and close() flushes."""
    import types

    from mediasearch.store import edge as edge_module

    now = [1000.0]
    monkeypatch.setattr(edge_module, "time", types.SimpleNamespace(**{**vars(time), "monotonic": lambda: now[0]}))
    store = edge(home)
    flushes: list[float] = []
    real_flush = store.flush

    def flush() -> None:
        flushes.append(now[0])
        real_flush()

    monkeypatch.setattr(store, "flush", flush)
    vecs = np.eye(DIM, dtype=np.float32)
    for step in range(12):  # a write every second
        store.upsert([PointIn(st.point_id(f"w{step}", None), vecs[step % DIM], {"i": step})])
        now[0] += 1.0
    assert flushes and all(b - a <= AUTO_FLUSH_S for a, b in zip([1000.0, *flushes], flushes, strict=False))
    assert now[0] - 1.0 - flushes[-1] < AUTO_FLUSH_S  # the last write is at most that far from a flush
    written = len(flushes)
    store.close()
    assert len(flushes) == written + 1
