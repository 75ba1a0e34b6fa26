"""The int8 copy the graph search walks (``store.base.QUANTIZATION``): on both backends a new store has
it; the graph's answers are re-scored on the stored vectors; an exact scan ignores it; and a shard made
before it opens, answers as before, and gets it at its next optimise."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.store import base as store_base
from mediasearch.store import edge
from mediasearch.store.base import PointIn, Store, point_id
from mediasearch.store.collections import open_store
from mediasearch.store.server import forget_memory_servers

DIM = 64
SWITCH = 400  # the graph switch, lowered so that a small store has a graph (as test_graph's size test)
POINTS = 900


@pytest.fixture
def home() -> Iterator[Path]:
    fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="mediasearch-quant-", dir=fast))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _small_switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(store_base, "EXACT_SEARCH_MAX_POINTS", SWITCH)
    forget_memory_servers()
    yield
    forget_memory_servers()


def _vectors(seed: int, count: int) -> np.ndarray:
    """Unit vectors around 30 centres (a library's pictures are grouped by what they show)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 30, count)] + 0.4 * rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _fill(store: Store, vectors: np.ndarray) -> None:
    store.upsert(
        [PointIn(point_id(f"/lib/{i}.jpg", None), v, {"path": f"/lib/{i}.jpg"}) for i, v in enumerate(vectors)]
    )


def _answers(store: Store, queries: np.ndarray, exact: bool | None) -> list[list[tuple[str, float]]]:
    return [[(r.id, r.score) for r in store.search(q, 10, exact=exact)] for q in queries]


def _quantized_segments(home: Path, collection: str) -> int:
    """Segments of an Edge shard whose vectors have an int8 copy (by the engine's own segment files)."""
    segments = edge.edge_store_dir(home) / collection / "segments"
    return sum(1 for seg in segments.iterdir() if (seg / "vector_storage-clip" / "quantized.data").is_file())


def _segment_quantization(home: Path, collection: str) -> list[Any]:
    segments = edge.edge_store_dir(home) / collection / "segments"
    configs = [json.loads((seg / "segment.json").read_text())["config"] for seg in segments.iterdir()]
    return [c["vector_data"]["clip"].get("quantization_config") for c in configs]


def _same_ranking(graph: list[list[tuple[str, float]]], exact: list[list[tuple[str, float]]]) -> None:
    """The graph's top 10 is the exact scan's, with the exact scan's scores (re-scored on the stored
    vectors: an int8 score would be off by ~1e-2)."""
    for got, want in zip(graph, exact, strict=True):
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_an_edge_store_walks_an_int8_copy_and_returns_the_exact_scores(home: Path) -> None:
    vectors, queries = _vectors(1, POINTS), _vectors(2, 12)
    with open_store(home=home, collection="media_q", dim=DIM) as store:
        _fill(store, vectors)
        store.optimize()
        assert store.graph_points() == POINTS
        graph, exact = _answers(store, queries, None), _answers(store, queries, True)
    assert _quantized_segments(home, "media_q") >= 1
    assert {str(q) for q in _segment_quantization(home, "media_q") if q} == {
        str({"scalar": {"type": "int8", "quantile": store_base.QUANTILE, "memory": "cold"}})
    }
    _same_ranking(graph, exact)
    # the exact cosines: the stored (float16) vectors against the query
    for q, hits in zip(queries, exact, strict=True):
        stored = vectors.astype(np.float16).astype(np.float32)
        best = np.sort(stored @ q)[::-1][:10]
        np.testing.assert_allclose([s for _, s in hits], best, atol=1e-3)


def test_an_edge_store_made_without_the_copy_answers_as_before_and_gets_it_at_its_next_optimise(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard made by the release before (its config had no quantization) keeps answering, the same,
    and its next optimise (the daemon's graph build: ``GRAPH_SETTINGS`` changed) adds the int8 copy."""
    today = edge._edge_config

    def before(dim: int) -> Any:
        import qdrant_edge as qe

        config = today(dim)
        return qe.EdgeConfig(vectors=config.vectors, hnsw_config=config.hnsw_config, optimizers=config.optimizers)

    vectors, queries = _vectors(3, POINTS), _vectors(4, 12)
    monkeypatch.setattr(edge, "_edge_config", before)
    with open_store(home=home, collection="media_old", dim=DIM) as store:
        _fill(store, vectors)
        store.optimize()
        then = _answers(store, queries, None)
    assert _quantized_segments(home, "media_old") == 0
    monkeypatch.setattr(edge, "_edge_config", today)
    with open_store(home=home, collection="media_old", dim=None, create=False) as store:
        assert store.count() == POINTS
        _same_ranking(_answers(store, queries, None), then)  # searched on its stored vectors meanwhile
        assert store.optimize()  # the new config makes the optimiser rewrite the segments
        assert store.graph_points() == POINTS
        _same_ranking(_answers(store, queries, None), _answers(store, queries, True))
        _same_ranking(_answers(store, queries, None), then)
    assert _quantized_segments(home, "media_old") >= 1


def test_a_server_collection_is_made_with_the_int8_copy(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The qdrant-client backend creates its collections with the same int8 copy (here the in-process
    ":memory:" server, which keeps no quantization: it is always exact, and answers as the exact scan)."""
    from qdrant_client import QdrantClient, models

    made: list[dict[str, Any]] = []
    create = QdrantClient.create_collection

    def spy(self: Any, collection_name: str, **kwargs: Any) -> Any:
        made.append(kwargs)
        return create(self, collection_name, **kwargs)

    monkeypatch.setattr(QdrantClient, "create_collection", spy)
    vectors, queries = _vectors(5, POINTS), _vectors(6, 6)
    with open_store(home=home, collection="media_mem", dim=DIM, qdrant_url=":memory:") as store:
        _fill(store, vectors)
        _same_ranking(_answers(store, queries, None), _answers(store, queries, True))
    [kwargs] = made
    quantization = kwargs["quantization_config"]
    assert isinstance(quantization, models.ScalarQuantization)
    assert quantization.scalar.type == models.ScalarType.INT8 and quantization.scalar.quantile == store_base.QUANTILE


def test_the_search_params_ignore_the_copy_for_an_exact_scan_and_rescore_the_graph() -> None:
    """Both backends ask for the same thing: an exact scan on the stored vectors alone; a graph search
    re-scored on them, over ``OVERSAMPLING`` x limit candidates."""
    from mediasearch.store import server

    for params in (edge._search_params(True, 2048), server._search_params(True, 2048)):
        assert params.exact and params.quantization.ignore
    for params in (edge._search_params(False, 2048), server._search_params(False, 2048)):
        assert not params.exact and params.hnsw_ef == 2048
        assert params.quantization.rescore and params.quantization.oversampling == store_base.OVERSAMPLING
        assert not params.quantization.ignore
