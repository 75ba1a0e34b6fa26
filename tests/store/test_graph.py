"""Search past the switch to the graph: a store of the demo model's image vectors, large enough for
the HNSW graph, answers CLIP *text* queries (far from every image vector) with the exact scan's top 10."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.lab.shapes import CLASSES, COLOURS, SHAPES, class_name, render
from mediasearch.store import base as store_base
from mediasearch.store.base import EXACT_SEARCH_MAX_POINTS, PointIn, Store, point_id
from mediasearch.store.collections import open_store

POINTS = EXACT_SEARCH_MAX_POINTS + 1_000
CLASS_QUERIES = [f"a photo of a {class_name(c, s)}" for c, s in CLASSES]
OTHER_QUERIES = [class_name(c, s) for c, s in CLASSES] + list(COLOURS) + [f"a {s}" for s in SHAPES]


def _library_vectors(model: Any, rng: np.random.Generator) -> np.ndarray:
    """POINTS unit vectors around the embeddings of 192 rendered shapes (8 per class), as a library
    holds many pictures of each subject."""
    images = [render(c, s, rng=rng, size=(128, 96)) for _ in range(8) for c, s in CLASSES]
    seeds = model.encode_images(images)
    vectors = seeds[rng.integers(0, len(seeds), POINTS)]
    vectors = vectors + 0.5 * rng.standard_normal(vectors.shape).astype(np.float32) / np.sqrt(vectors.shape[1])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def graph_store(demo_model: Any) -> Iterator[Store]:
    """An Edge store of POINTS demo-model image vectors with its graph built (as the daemon builds it)."""
    fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    home = Path(tempfile.mkdtemp(prefix="mediasearch-graph-", dir=fast))
    vectors = _library_vectors(demo_model, np.random.default_rng(3))
    store = open_store(home=home, collection="media_graph", dim=demo_model.dim)
    try:
        for start in range(0, POINTS, 5000):
            batch = range(start, min(POINTS, start + 5000))
            store.upsert(
                [PointIn(point_id(f"/lib/{i}.jpg", None), vectors[i], {"path": f"/lib/{i}.jpg"}) for i in batch]
            )
        store.optimize()
        yield store
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)


def _top10(store: Store, query: np.ndarray, exact: bool | None) -> set[str]:
    return {record.id for record in store.search(query, 10, exact=exact)}


def _recall(store: Store, queries: np.ndarray) -> float:
    return float(np.mean([len(_top10(store, q, None) & _top10(store, q, True)) / 10 for q in queries]))


def test_store_past_the_switch_has_a_graph(graph_store: Store) -> None:
    """The engine's own threshold agrees with ours for the demo model's 128-d vectors: every point
    is in the graph (left to the engine's default, 128-d stores got none below 40k points)."""
    assert graph_store.count() == POINTS > EXACT_SEARCH_MAX_POINTS
    assert graph_store.graph_points() == POINTS


def test_class_queries_get_the_exact_top_10_from_the_graph(graph_store: Store, demo_model: Any) -> None:
    """The demo's 24 class queries: the graph's top 10 is the exact scan's, query by query."""
    queries = demo_model.encode_texts(CLASS_QUERIES)
    for text, query in zip(CLASS_QUERIES, queries, strict=True):
        assert _top10(graph_store, query, None) == _top10(graph_store, query, True), text


def test_text_query_recall_at_10_of_the_graph(
    graph_store: Store, demo_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text queries of every form (class names, bare colours and shapes) keep >= 0.99 of the exact top 10;
    and the search really is the graph's: starved of candidates (ef 10) it loses some of them."""
    queries = demo_model.encode_texts(CLASS_QUERIES + OTHER_QUERIES)
    assert _recall(graph_store, queries) >= 0.99
    monkeypatch.setattr(store_base, "SEARCH_EF", 10)
    assert _recall(graph_store, queries) < 0.99


@pytest.mark.parametrize("dim", [64, 512, 768])
def test_the_engine_builds_a_graph_from_the_same_count_at_every_vector_size(
    dim: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's indexing threshold is in bytes of vectors: set from our count, the graph appears
    past the same number of points whatever the model's dimension (here with a switch at 400 points)."""
    monkeypatch.setattr(store_base, "EXACT_SEARCH_MAX_POINTS", 400)
    rng = np.random.default_rng(dim)
    for count, graph in ((360, False), (440, True)):
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with open_store(home=tmp_path / str(count), collection="media_switch", dim=dim) as store:
            store.upsert([PointIn(point_id(f"/{i}.jpg", None), v, {}) for i, v in enumerate(vectors)])
            store.optimize()
            assert store.graph_points() == (count if graph else 0), (dim, count)
