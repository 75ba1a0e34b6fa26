"""``store migrate`` and ``store create``: Edge ⇄ server copies (resumable), cluster layouts, bulk load.

The server is the in-process ":memory:" one; with MEDIASEARCH_TEST_QDRANT_URL set (a real Qdrant, see
README "Testing against a Qdrant server"), the contract tests run the same round trip against it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch import Library
from mediasearch.errors import StoreError
from mediasearch.store.collections import open_store
from mediasearch.store.migrate import copy_points
from mediasearch.store.server import forget_memory_servers

SERVER = os.environ.get("MEDIASEARCH_TEST_QDRANT_URL")
Points = dict[str, tuple[dict[str, Any], np.ndarray]]


def shape_photos(folder: Path, n: int) -> None:
    from mediasearch.lab.shapes import render, save_image

    rng = np.random.default_rng(0)
    kinds = [("red", "circle"), ("blue", "star"), ("green", "square")]
    for i in range(n):
        colour, shape = kinds[i % 3]
        path = folder / f"{colour}_{shape}_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(render(colour, shape, rng=rng, size=(96, 72)), path, "png")


@pytest.fixture(autouse=True)
def _fresh_memory_server() -> Iterator[None]:
    forget_memory_servers()
    yield
    forget_memory_servers()


@pytest.fixture
def indexed(tmp_path: Path, demo_settings: Callable[..., Any], make_video: Callable[..., Path]) -> Any:
    """Settings of a home whose Edge store holds six photos and a short video, and the library folder."""
    lib = tmp_path / "lib"
    shape_photos(lib, 6)
    make_video(lib / "clip.mp4", seconds=4.0)
    settings = demo_settings(tmp_path / "home")
    with Library.open(settings=settings, use_daemon=False) as library:
        library.index([lib], tag=True)
    return settings


def points_of(settings: Any) -> tuple[Points, dict[str, Any] | None, list[str]]:
    """Every point of the active collection, its metadata, and the top 5 for a query."""
    with Library.open(settings=settings, use_daemon=False) as library:
        top = [h.path for h in library.query("a blue star", limit=5)]  # first: it opens the model too
        store = library.backend._store_only()
        points = {r.id: (r.payload, r.vector) for r in store.scroll(with_vectors=True)}
        meta = store.get_meta()
    return points, meta, top


def assert_identical(got: Points, want: Points) -> None:
    assert set(got) == set(want) and want
    for pid, (payload, vector) in want.items():
        assert got[pid][0] == payload
        np.testing.assert_array_equal(got[pid][1], vector)


def round_trip(indexed: Any, demo_settings: Callable[..., Any], tmp_path: Path, url: str) -> None:
    want, want_meta, want_top = points_of(indexed)
    with Library.open(settings=indexed, use_daemon=False) as library:
        out = library.migrate(url)
    assert out.collections[0]["copied"] == len(want) and out.active == out.collections[0]["collection"]
    on_server = demo_settings(indexed.home, qdrant_url=url)
    server_points, _, server_top = points_of(on_server)
    back_home = demo_settings(tmp_path / "back", qdrant_url=url)
    with Library.open(settings=back_home, use_daemon=False) as library:
        back = library.migrate("edge")
    assert back.target == f"edge:{tmp_path / 'back'}"
    got, got_meta, got_top = points_of(demo_settings(tmp_path / "back"))
    assert_identical(got, want)  # Edge keeps float16: the values survive float32 on the server exactly
    assert set(server_points) == set(want) and server_top == want_top == got_top
    assert got_meta == want_meta and want_meta is not None and want_meta["model"]["name"] == "demo"


def test_migrate_round_trip_edge_server_edge(indexed: Any, demo_settings: Callable[..., Any], tmp_path: Path) -> None:
    round_trip(indexed, demo_settings, tmp_path, ":memory:")


def test_migrate_resumes_after_a_kill(indexed: Any) -> None:
    kwargs: dict[str, Any] = {"home": indexed.home}
    with Library.open(settings=indexed, use_daemon=False) as library:
        collection = library.status().collection
    pages = []

    def die_after_two(n: int) -> None:
        pages.append(n)
        if len(pages) == 2:
            raise KeyboardInterrupt

    with open_store(collection=collection, dim=None, create=False, **kwargs) as src:
        total = src.count()
        with open_store(collection=collection, dim=src.dim, qdrant_url=":memory:", **kwargs) as dst:
            with pytest.raises(KeyboardInterrupt):
                copy_points(src, dst, batch=3, on_page=die_after_two)
            assert dst.count() == 6 < total
            assert dst.in_bulk_load  # left in bulk-load mode by the kill: the re-run finishes it
            again = copy_points(src, dst, batch=3)
            assert (again.skipped, again.copied, dst.count()) == (6, total - 6, total)
            assert not dst.in_bulk_load
            # A point whose payload changed at the source is copied again; the others are not.
            first = next(src.scroll())
            src.set_payload([first.id], {"tags": ["changed"]})
            third = copy_points(src, dst, batch=3)
            assert (third.copied, third.skipped) == (1, total - 1)
            assert dst.retrieve([first.id])[0].payload["tags"] == ["changed"]


def test_migrate_refuses_where_it_already_is(indexed: Any) -> None:
    with Library.open(settings=indexed, use_daemon=False) as library, pytest.raises(StoreError, match="already"):
        library.migrate("edge")


def test_store_create_lays_out_a_server_collection(
    demo_settings: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process server keeps no layout (shards, HNSW, quantization): check what reaches the client
    (the contract test below checks what a real server keeps)."""
    from qdrant_client import QdrantClient

    calls: list[tuple[str, dict[str, Any]]] = []
    for name in ("create_collection", "update_collection"):
        real = getattr(QdrantClient, name)

        def record(self: Any, *args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, kwargs))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(QdrantClient, name, record)
    settings = demo_settings(qdrant_url=":memory:")
    with Library.open(settings=settings, use_daemon=False) as library:
        layout = {"on_disk": True, "quantization": "int8", "float16": True, "bulk_load": True}
        made = library.create_store(shards=3, replicas=2, **layout)
        store = library.backend.index_side.store
        created = next(kw for name, kw in calls if name == "create_collection")
        assert (created["shard_number"], created["replication_factor"], created["on_disk_payload"]) == (3, 2, True)
        assert created["hnsw_config"].m == 0 and created["quantization_config"].scalar.type == "int8"
        vectors = created["vectors_config"]["clip"]
        assert vectors.datatype == "float16" and vectors.on_disk and vectors.size == made.dim
        assert store.in_bulk_load and (store.get_meta() or {})["model"]["name"] == "demo"  # ready to index
        assert made.store == f"qdrant::memory:/{made.collection}" and made.shards == 3
        calls.clear()
        assert store.set_bulk_load(False) and not store.in_bulk_load
        assert [kw["hnsw_config"].m for name, kw in calls if "hnsw_config" in kw] == [16]
    with Library.open(settings=settings, use_daemon=False) as library, pytest.raises(StoreError, match="exists"):
        library.create_store()


def test_store_create_needs_a_server(demo_settings: Callable[..., Any]) -> None:
    with Library.open(settings=demo_settings(), use_daemon=False) as library:
        with pytest.raises(StoreError, match="--qdrant-url"):
            library.create_store(shards=2)
        with pytest.raises(StoreError, match="quantization"):
            library.backend.create_store(_options(quantization="pq"))


def _options(**kwargs: Any) -> Any:
    from mediasearch.store.server import CollectionOptions

    return CollectionOptions(**kwargs)


def test_cli_store_create_and_migrate(cli: Any, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    shape_photos(lib, 3)
    cli("index", str(lib))
    moved = cli.json("store", "migrate", "--to", ":memory:")
    assert moved["collections"][0]["copied"] == 3
    failed = cli("--qdrant-url", ":memory:", "store", "create", "--shards", "2", ok=False)
    assert failed.exit_code == 1 and "exists" in failed.output


@pytest.mark.skipif(not SERVER, reason="MEDIASEARCH_TEST_QDRANT_URL is not set")
def test_contract_round_trip_through_a_real_server(
    indexed: Any, demo_settings: Callable[..., Any], tmp_path: Path
) -> None:
    assert SERVER is not None
    _drop_demo_collections(SERVER)
    try:
        round_trip(indexed, demo_settings, tmp_path, SERVER)
    finally:
        _drop_demo_collections(SERVER)


@pytest.mark.skipif(not SERVER, reason="MEDIASEARCH_TEST_QDRANT_URL is not set")
def test_contract_create_layout_on_a_real_server(demo_settings: Callable[..., Any]) -> None:
    assert SERVER is not None
    _drop_demo_collections(SERVER)
    try:
        with Library.open(settings=demo_settings(qdrant_url=SERVER), use_daemon=False) as library:
            made = library.create_store(shards=2, quantization="binary", on_disk=True, bulk_load=True)
            config = library.backend.index_side.store._client.get_collection(made.collection).config
        assert config.params.shard_number == 2 and config.hnsw_config.m == 0
        assert config.quantization_config.binary is not None
    finally:
        _drop_demo_collections(SERVER)


def _drop_demo_collections(url: str) -> None:
    """The contract tests own the demo model's collections on that server (and the alias)."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=url, api_key=os.environ.get("MEDIASEARCH_TEST_QDRANT_API_KEY"))
    for c in client.get_collections().collections:
        if c.name.startswith("media_demo"):
            client.delete_collection(c.name)
    client.close()
