#!/usr/bin/env python
"""Benchmark: search at library size — the graph's recall for CLIP text queries, filtered queries,
the graph build, memory and disk.

    python scripts/bench_search.py                          # 20,000 and 100,000 points
    python scripts/bench_search.py --points 1000000         # a million (about an hour on 2 cores)
    python scripts/bench_search.py --ef 256 512 1024 2048   # recall at other search-time ef too
    python scripts/bench_search.py --dim 512                # a ViT-B-32-sized store (time, memory, disk)

Vectors are the bundled demo model's: it embeds ``--seeds`` rendered shapes (images) and 58 text
queries ("a photo of a red circle", "red circle", "red", "a star", ...). A library holds many pictures
of each subject, so the store's points are those image embeddings with noise (a cosine of ~0.9 to
their seed), as many as asked. A text query lies far from every image vector (the modality gap): the
graph's hard case, which queries built as a point plus noise do not show. ``--dim 512`` rotates the
128-d embeddings into 512 dimensions (orthonormal columns: every score is kept), so that times, memory
and disk are those of a ViT-B-32 store.

The graph walks the store's int8 copy of the vectors and re-scores its best on the stored ones; each
``--ef`` row is also measured with the copy ignored (the same graph on the float16 vectors, as before
the copy existed). Each size runs in three processes, as mediasearch runs them: one writes the points (``index``), one
builds the graph (the daemon's child: ``open_store`` + ``optimize``), one searches (the daemon). Each
reports its own peak RSS. Rows: recall@10 of the graph against the exact scan over the 58 texts (at
the store's own ef, and at each ``--ef``); search time p50/p95 (graph and exact scan); filtered
queries at 1 % selectivity (a tag; a recognised-text word) and 50 % (a date range), with their
recall against an exact filtered scan; a new text end to end (demo model encode + search); disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 5000
SPREAD = 0.5  # noise around a seed: cosine ~0.9 to it


def texts() -> list[str]:
    from mediasearch.lab.shapes import CLASSES, COLOURS, SHAPES, class_name

    names = [class_name(c, s) for c, s in CLASSES]
    return [f"a photo of a {n}" for n in names] + names + list(COLOURS) + [f"a {s}" for s in SHAPES]


def embed(seeds: int, out: str, dim: int) -> dict[str, Any]:
    """The demo model's embeddings of ``seeds`` rendered shapes and of the query texts, saved to ``out``."""
    from mediasearch.clip.loading import load_model
    from mediasearch.clip.spec import ModelSpec
    from mediasearch.lab.shapes import CLASSES, render

    model = load_model(ModelSpec("demo"), device="cpu")
    rng = np.random.default_rng(1)
    classes = [CLASSES[i % len(CLASSES)] for i in range(seeds)]
    images = [render(c, s, rng=rng, size=(128, 96)) for c, s in classes]
    vectors = np.concatenate([model.encode_images(images[i : i + 256]) for i in range(0, seeds, 256)])
    # Into more dimensions by orthonormal columns: every inner product is kept.
    basis, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((dim, vectors.shape[1])))
    np.savez(out, images=vectors, texts=model.encode_texts(texts()), basis=basis.astype(np.float32))
    return {}


def library_batch(seeds: np.ndarray, start: int, count: int) -> np.ndarray:
    """Points ``start`` .. ``start + count`` of the library (the same for every run and batch size)."""
    rng = np.random.default_rng(start)
    vectors = seeds[rng.integers(0, len(seeds), count)]
    vectors = vectors + SPREAD * rng.standard_normal(vectors.shape).astype(np.float32) / np.sqrt(seeds.shape[1])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def payload(i: int) -> dict[str, Any]:
    """1 % of the points carry the tag "rare" and the word "exit"; dates split them in halves."""
    rare = i % 100 == 0
    return {
        "path": f"/lib/{i // 1000}/{i}.jpg",
        "kind": "image",
        "tags": ["rare"] if rare else [],
        "date": float(i % 2),
        "ocr_text": "exit sign" if rare else "menu",
    }


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would carry a parent's peak over fork and exec)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_write(home: str, embeddings: str, points: int) -> dict[str, Any]:
    from mediasearch.store.base import PointIn, point_id
    from mediasearch.store.collections import open_store

    saved = np.load(embeddings)
    seeds, basis = saved["images"], saved["basis"]
    started = time.perf_counter()
    with open_store(home=Path(home), collection="media_bench", dim=len(basis)) as store:
        for start in range(0, points, BATCH):
            vectors = library_batch(seeds, start, min(BATCH, points - start)) @ basis.T
            store.upsert(
                [PointIn(point_id(f"/lib/{start + i}.jpg", None), v, payload(start + i)) for i, v in enumerate(vectors)]
            )
    return {"seconds": time.perf_counter() - started, "rss_mib": peak_rss_mib()}


def child_build(home: str) -> dict[str, Any]:
    from mediasearch.store.collections import open_store

    started = time.perf_counter()
    with open_store(home=Path(home), collection="media_bench", dim=None, create=False) as store:
        store.optimize()
        graph = store.graph_points()
    return {"seconds": time.perf_counter() - started, "rss_mib": peak_rss_mib(), "graph_points": graph}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def quantiles(seconds: list[float]) -> tuple[float, float]:
    ordered = sorted(seconds)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000


def compare(store: Any, queries: np.ndarray, flt: Any = None, rounds: int = 3) -> dict[str, float]:
    """The graph's search against the exact scan: recall@10 and p50/p95 of each (``rounds`` passes)."""
    graph_s: list[float] = []
    exact_s: list[float] = []
    recalls = []
    for _ in range(rounds):
        for q in queries:
            t_graph, graph = timed(lambda q=q: store.search(q, 10, flt, exact=None))
            t_exact, exact = timed(lambda q=q: store.search(q, 10, flt, exact=True))
            graph_s.append(t_graph)
            exact_s.append(t_exact)
            recalls.append(len({r.id for r in graph} & {r.id for r in exact}) / max(1, len(exact)))
    (g50, g95), (e50, e95) = quantiles(graph_s), quantiles(exact_s)
    return {
        "recall": float(np.mean(recalls)),
        "worst": float(np.min(recalls)),
        "graph_p50": g50,
        "graph_p95": g95,
        "exact_p50": e50,
        "exact_p95": e95,
    }


def new_text_ms(store: Any, basis: np.ndarray, rounds: int = 30) -> tuple[float, float]:
    """A text never seen before, end to end: the demo model's encoding (warm) and the search."""
    from mediasearch.clip.loading import load_model
    from mediasearch.clip.spec import ModelSpec

    model = load_model(ModelSpec("demo"), device="cpu")
    model.encode_texts(["warm up"])
    seconds = [
        timed(lambda i=i: store.search(basis @ model.encode_texts([f"a photo of a red circle {i}"])[0], 10))[0]
        for i in range(rounds)
    ]
    return quantiles(seconds)


@contextlib.contextmanager
def stored_vectors_only() -> Iterator[None]:
    """Graph searches that walk the stored (float16) vectors instead of the int8 copy: the same graph,
    searched as before the copy existed (``store.base.QUANTIZATION``)."""
    import qdrant_edge as qe

    from mediasearch.store import edge

    searched_with = edge._search_params
    ignored = qe.QuantizationSearchParams(ignore=True)
    edge._search_params = lambda exact, ef: qe.SearchParams(exact=exact, hnsw_ef=ef, quantization=ignored)
    try:
        yield
    finally:
        edge._search_params = searched_with


def child_search(home: str, embeddings: str, efs: list[int]) -> dict[str, Any]:
    from mediasearch.store import base
    from mediasearch.store.base import Filter
    from mediasearch.store.collections import open_store

    saved = np.load(embeddings)
    queries = saved["texts"] @ saved["basis"].T
    out: dict[str, Any] = {"ef": base.SEARCH_EF}
    with open_store(home=Path(home), collection="media_bench", dim=None, create=False) as store:
        out["rss_open_mib"] = peak_rss_mib()
        out["plain"] = compare(store, queries)
        out["filters"] = {
            "tag, 1 %": compare(store, queries, Filter(tags=("rare",))),
            "recognised word, 1 %": compare(store, queries, Filter(ocr=("exit",))),
            "date range, 50 %": compare(store, queries, Filter(after=0.5)),
        }
        out["new_text"] = new_text_ms(store, saved["basis"])
        out["by_ef"] = {}
        for ef in efs:
            base.SEARCH_EF = ef
            out["by_ef"][ef] = compare(store, queries, rounds=1)
            with stored_vectors_only():
                out["by_ef"][f"{ef}, int8 copy ignored"] = compare(store, queries, rounds=1)
    out["rss_mib"] = peak_rss_mib()
    return out


def run_child(step: str, **args: Any) -> dict[str, Any]:
    """One step in a process of its own (its peak RSS is its own); nice, the machine is shared."""
    command = [sys.executable, __file__, "--child", step, json.dumps(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"step {step} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def disk_mib(home: Path) -> float:
    """Space the store takes on disk (allocated blocks: the engine's files are partly sparse)."""
    return sum(p.stat().st_blocks * 512 for p in home.rglob("*") if p.is_file()) / 2**20


def measure(points: int, embeddings: Path, efs: list[int], workdir: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-search-", dir=workdir) as tmp:
        write = run_child("write", home=tmp, embeddings=str(embeddings), points=points)
        build = run_child("build", home=tmp)
        disk = disk_mib(Path(tmp))
        found = run_child("search", home=tmp, embeddings=str(embeddings), efs=efs)
    load = os.getloadavg()
    n = f"{points:,}"
    row(n, "write (index): points / s; peak RSS", f"{points / write['seconds']:,.0f}", write["rss_mib"])
    row(
        n,
        f"graph build: s ({build['graph_points']:,} points in the graph); peak RSS",
        f"{build['seconds']:.0f}",
        build["rss_mib"],
    )
    row(n, "disk: MiB (vectors float16, graph, payload, indexes)", f"{disk:,.0f}", None)
    plain = found["plain"]
    row(
        n,
        f"text queries, recall@10 of the graph (ef {found['ef']}; worst query)",
        f"{plain['recall']:.3f} ({plain['worst']:.1f})",
        None,
    )
    row(
        n,
        "text queries, search ms p50 / p95: graph | exact scan",
        f"{plain['graph_p50']:.2f} / {plain['graph_p95']:.2f} | {plain['exact_p50']:.2f} / {plain['exact_p95']:.2f}",
        found["rss_open_mib"],
    )
    for label, result in found["filters"].items():
        row(
            n,
            f"filter {label}: ms p50 / p95 (exact: p50); recall@10",
            f"{result['graph_p50']:.2f} / {result['graph_p95']:.2f} ({result['exact_p50']:.2f}); "
            f"{result['recall']:.3f}",
            None,
        )
    row(
        n,
        "new text, demo model encode + search: ms p50 / p95",
        f"{found['new_text'][0]:.1f} / {found['new_text'][1]:.1f}",
        found["rss_mib"],
    )
    for ef, result in found["by_ef"].items():
        row(
            n,
            f"text queries at ef {ef}: recall@10 (worst); graph ms p50",
            f"{result['recall']:.3f} ({result['worst']:.1f}); {result['graph_p50']:.2f}",
            None,
        )
    print(f"(load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end of {n})", flush=True)


def row(points: str, what: str, value: str, rss: float | None) -> None:
    print(f"| {points} | {what} | {value} | {'' if rss is None else f'{rss:,.0f}'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="+", default=[20_001, 100_000])
    parser.add_argument("--seeds", type=int, default=1200, help="rendered shapes the points spread around")
    parser.add_argument("--dim", type=int, default=128, help="more than 128: the embeddings rotated into more")
    parser.add_argument("--ef", type=int, nargs="*", default=[], help="also measure recall at these search ef")
    parser.add_argument("--workdir", default=None, help="where the stores are made (a temporary folder in it)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, params = args.child[0], json.loads(args.child[1])
        steps = {"embed": embed, "write": child_write, "build": child_build, "search": child_search}
        print(json.dumps(steps[step](**params)))
        return
    os.nice(5)
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-embed-") as tmp:
        embeddings = Path(tmp) / "embeddings.npz"
        run_child("embed", seeds=args.seeds, out=str(embeddings), dim=args.dim)
        print(
            f"mediasearch bench_search: demo model, {args.seeds} rendered shapes, {len(texts())} text queries, "
            f"{os.cpu_count()} CPUs"
        )
        print("| points | measure | value | peak RSS MiB |")
        print("|--:|---|--:|--:|")
        for points in args.points:
            measure(points, embeddings, args.ef, args.workdir)


if __name__ == "__main__":
    main()
