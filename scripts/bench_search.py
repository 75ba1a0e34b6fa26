#!/usr/bin/env python
"""Benchmark: the embedded store's search at N points, an exact scan against the HNSW graph.

    python scripts/bench_search.py                      # 20,000 and 100,000 points, 512-d
    python scripts/bench_search.py --points 50000 --dim 768

For each size: a fresh store (float16 vectors, as mediasearch keeps them) of unit vectors around 1,000
centres (a library's embeddings are grouped by what they show), and again of independent random unit
vectors (all about equally far apart: the graph's worst case). Times a search for 80 points with
payloads, exact and through the graph (built with the store's own `optimize`), p50 of 30 in one
process, and the graph's recall of the exact top 10 over 50 queries near the points.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mediasearch.store.base import PointIn, point_id
from mediasearch.store.collections import open_store


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def vectors(rng: np.random.Generator, count: int, dim: int, clustered: bool) -> np.ndarray:
    if not clustered:
        return unit(rng.standard_normal((count, dim)))
    centres = unit(rng.standard_normal((1000, dim)))
    return unit(centres[rng.integers(0, 1000, count)] + 0.6 * rng.standard_normal((count, dim)) / np.sqrt(dim))


def p50_ms(fn: object, runs: int = 30) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return sorted(times)[runs // 2] * 1000


def measure(folder: Path, points: int, dim: int, clustered: bool) -> tuple[float, float, float, float]:
    rng = np.random.default_rng(0)
    data = vectors(rng, points, dim, clustered)
    store = open_store(home=folder, collection="media_bench", dim=dim, create=True)
    try:
        for start in range(0, points, 2000):
            batch = range(start, min(points, start + 2000))
            store.upsert([PointIn(point_id(f"/b/{i}.jpg", None), data[i], {"path": f"/b/{i}.jpg"}) for i in batch])
        started = time.perf_counter()
        store.optimize()
        built = time.perf_counter() - started
        queries = unit(data[rng.integers(0, points, 50)] + 0.3 * rng.standard_normal((50, dim)) / np.sqrt(dim))
        recall = np.mean([
            len({r.id for r in store.search(q, 10, exact=True)} & {r.id for r in store.search(q, 10, exact=False)}) / 10
            for q in queries
        ])
        exact = p50_ms(lambda: store.search(queries[0], 80, exact=True))
        graph = p50_ms(lambda: store.search(queries[0], 80, exact=False))
    finally:
        store.close()
    return exact, graph, float(recall), built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    print("| points | vectors | exact scan p50 ms | graph p50 ms | graph recall@10 | graph built in s |")
    print("|--:|---|--:|--:|--:|--:|")
    for points in args.points:
        for clustered in (True, False):
            with tempfile.TemporaryDirectory(prefix="mediasearch-bench-search-") as tmp:
                exact, graph, recall, built = measure(Path(tmp), points, args.dim, clustered)
            kind = "clustered" if clustered else "random"
            print(f"| {points:,} | {kind} | {exact:.2f} | {graph:.2f} | {recall:.3f} | {built:.0f} |", flush=True)


if __name__ == "__main__":
    main()
