#!/usr/bin/env python
"""Benchmark: the modality gap on the graph — ways to keep CLIP text queries' recall@10 at library size.

    python scripts/bench_gap.py --points 400000 --home /tmp/gap-store   # builds the store once, keeps it
    python scripts/bench_gap.py --home /tmp/gap-store                    # searches the kept store again
    python scripts/bench_gap.py --points 400000 --m 64 --home /tmp/gap-m64  # another graph (m, ef_construct)

The store is ``scripts/bench_search.py``'s (the demo model's image embeddings of ``--seeds`` rendered
shapes spread with noise to ``--points`` points, 128-d, the store's own graph settings). Queries are its
58 CLIP texts. Each row is measured in one run on the same store against the exact scan: recall@10
(mean, worst query) and search p50 in ms. Rows:

- plain graph search at several ``ef`` (the store's own, and larger: 4096, 8192);
- gap-shifted traversal + exact re-score: the graph is walked with ``q' = normalise(q + g)`` where
  ``g = mean(image vectors) - mean(text vectors)``, its best ``N`` are re-scored with ``q`` (one Qdrant
  query: a prefetch with ``q'``, then ``q`` over the prefetched points). ``mean(image vectors)`` is
  estimated from a sample of stored points; ``mean(text vectors)`` from texts *other than* the queries
  (other templates and words), as a real model's would be from a fixed list of prompts;
- the same with the union of two prefetches (``q'`` and ``q``), re-scored with ``q``;
- a scan of the int8 copy (no graph) with its best re-scored on the stored vectors;
- pseudo-relevance feedback: a cheap first walk, then a walk from its best 10's mean beside ``q``;
- image queries (a stored point plus noise): plain, and (to show it must not be applied to them) shifted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def bench_search() -> Any:
    """``scripts/bench_search.py`` as a module: the same library, payloads and embeddings."""
    spec = importlib.util.spec_from_file_location("bench_search", HERE / "bench_search.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def graph_settings(home: Path, m: int | None = None, ef_construct: int | None = None) -> tuple[int, int]:
    """The graph's ``m`` / ``ef_construct`` for this store (recorded at its build; the store's own by
    default), set for this process's store code."""
    from mediasearch.store import base, edge

    record = home / "graph.json"
    if record.exists():
        m, ef_construct = json.loads(record.read_text(encoding="utf-8"))
    else:
        m, ef_construct = m or base.HNSW_M, ef_construct or base.HNSW_EF_CONSTRUCT
        record.write_text(json.dumps([m, ef_construct]), encoding="utf-8")
    edge.HNSW_M, edge.HNSW_EF_CONSTRUCT = m, ef_construct  # type: ignore[misc]
    return m, ef_construct


def build(bs: Any, home: Path, points: int, seeds: int, m: int | None, ef_construct: int | None) -> None:
    """Embeddings, the points and the graph, in ``home`` (kept for the next runs)."""
    home.mkdir(parents=True, exist_ok=True)
    embeddings = home / "embeddings.npz"
    if not embeddings.exists():
        bs.run_child("embed", seeds=seeds, out=str(embeddings), dim=128)
    graph_settings(home, m, ef_construct)
    started = time.perf_counter()
    bs.child_write(str(home / "store"), str(embeddings), points)
    wrote = time.perf_counter()
    made = bs.child_build(str(home / "store"))
    print(
        f"built {points:,} points: write {wrote - started:.0f} s, graph {made['seconds']:.0f} s "
        f"({made['graph_points']:,} points in the graph; peak RSS {made['rss_mib']:,.0f} MiB)",
        flush=True,
    )


RUNS = 3  # passes over the queries per row (p50 over all)
K = 10


def other_texts() -> dict[str, list[str]]:
    """Texts to estimate the text side's mean from, none of them a query: the demo's words in other
    templates, and captions of things the demo model never saw (as a real model's fixed prompt list)."""
    from mediasearch.lab.shapes import COLOURS, SHAPES

    templated = [f"an image of a {c} {s}" for c in COLOURS for s in SHAPES]
    templated += [f"a {c} {s} on a plain background" for c in COLOURS for s in SHAPES]
    templated += [f"a picture of a {s}" for s in SHAPES] + [f"something {c}" for c in COLOURS]
    generic = [
        "a dog on a beach",
        "a birthday cake with candles",
        "a city street at night",
        "two children playing",
        "a mountain lake",
        "a plate of pasta",
        "a selfie in a mirror",
        "a receipt",
        "a cat asleep on a sofa",
        "fireworks over a river",
        "a wedding",
        "a car in the snow",
        "a screenshot of a chat",
        "a forest path",
        "a football match",
        "an old church",
        "a bowl of fruit",
        "a train station",
        "a sunset at sea",
        "a group photo at a party",
    ]
    return {"other templates": templated, "unrelated captions": generic}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def ms_p50(seconds: list[float]) -> float:
    return sorted(seconds)[len(seconds) // 2] * 1000


def recall(found: list[Any], truth: list[Any]) -> float:
    return len({r.id for r in found} & {r.id for r in truth}) / max(1, len(truth))


class Searcher:
    """The ways to search one store: the store's own search, and multi-stage Qdrant queries on its shard."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def plain(self, q: np.ndarray, ef: int) -> list[Any]:
        from mediasearch.store import base

        base.SEARCH_EF = ef
        return list(self.store.search(q, K, exact=False))

    def staged(self, q: np.ndarray, walks: list[np.ndarray], n: int, ef: int) -> list[Any]:
        """Walk the graph with each of ``walks`` (its best ``n``), then score their union with ``q``."""
        import qdrant_edge as qe

        from mediasearch.store.base import to_record, vector_list
        from mediasearch.store.edge import VECTOR_NAME, _search_params

        dim = self.store.dim
        prefetches = [
            qe.Prefetch(
                limit=n,
                query=qe.Query.Nearest(vector_list(w, dim), using=VECTOR_NAME),
                params=_search_params(False, max(ef, n)),
            )
            for w in walks
        ]
        request = qe.QueryRequest(
            limit=K,
            query=qe.Query.Nearest(vector_list(q, dim), using=VECTOR_NAME),
            prefetches=prefetches,
            with_payload=False,
            params=_search_params(True, K),
        )
        return [to_record(h) for h in self.store._shard.query(request)]


def int8_scan(store: Any, q: np.ndarray, oversampling: float) -> list[Any]:
    """A scan of every point's int8 copy (no graph), its best ``10 x oversampling`` re-scored on the stored
    vectors: Qdrant's exact search with quantization left on."""
    import qdrant_edge as qe

    from mediasearch.store.base import to_record, vector_list
    from mediasearch.store.edge import VECTOR_NAME

    quantized = qe.QuantizationSearchParams(ignore=False, rescore=True, oversampling=oversampling)
    request = qe.QueryRequest(
        limit=K,
        query=qe.Query.Nearest(vector_list(q, store.dim), using=VECTOR_NAME),
        with_payload=False,
        params=qe.SearchParams(exact=True, quantization=quantized),
    )
    return [to_record(h) for h in store._shard.query(request)]


def feedback(searcher: Searcher, q: np.ndarray, n: int, ef: int, first_ef: int = 64) -> list[Any]:
    """Pseudo-relevance feedback: a cheap first walk with ``q``; its best 10's mean (an image-like point,
    where the graph is at home) is walked next, beside ``q``, and the union re-scored with ``q``."""
    from mediasearch.store import base

    base.SEARCH_EF = first_ef
    first = searcher.store.search(q, K, exact=False, with_vectors=True)
    centre = unit(np.mean([unit(np.asarray(r.vector)) for r in first], axis=0))
    return searcher.staged(q, [centre, q], n, ef)


def row(what: str, method: Any, queries: np.ndarray, truth: list[list[Any]]) -> dict[str, float]:
    seconds: list[float] = []
    recalls: list[float] = []
    for run in range(RUNS):
        for q, exact in zip(queries, truth, strict=True):
            started = time.perf_counter()
            found = method(q)
            seconds.append(time.perf_counter() - started)
            if run == 0:
                recalls.append(recall(found, exact))
    out = {"recall": float(np.mean(recalls)), "worst": float(np.min(recalls)), "p50": ms_p50(seconds)}
    print(f"| {what} | {out['recall']:.3f} | {out['worst']:.1f} | {out['p50']:.2f} |", flush=True)
    return out


def check_rescore(searcher: Searcher, q: np.ndarray, walk: np.ndarray) -> float:
    """The largest gap between a staged query's scores and the cosines of ``q`` with the stored vectors."""
    found = searcher.staged(q, [walk], 200, 256)
    vectors = {r.id: np.asarray(r.vector) for r in searcher.store.retrieve([r.id for r in found], with_vectors=True)}
    return max(abs(r.score - float(unit(vectors[r.id]) @ q)) for r in found)


def seeds_of(bs: Any, records: list[Any], seeds: int) -> set[int]:
    """The rendered shapes (clusters) these points were spread around (regenerated as written)."""
    out = set()
    for r in records:
        i = int(Path(r.payload["path"]).stem)
        start = i - i % bs.BATCH
        out.add(int(np.random.default_rng(start).integers(0, seeds, bs.BATCH)[i - start]))
    return out


def search(home: Path, sample: int, efs: list[int], ns: list[int], walk_ef: list[int]) -> None:
    bs = bench_search()
    from mediasearch.clip.loading import load_model
    from mediasearch.clip.spec import ModelSpec
    from mediasearch.store.base import point_id
    from mediasearch.store.collections import open_store

    m, ef_construct = graph_settings(home)
    saved = np.load(home / "embeddings.npz")
    seeds, basis = saved["images"], saved["basis"]
    texts = saved["texts"] @ basis.T
    model = load_model(ModelSpec("demo"), device="cpu")
    rng = np.random.default_rng(7)
    with open_store(home=home / "store", collection="media_bench", dim=None, create=False) as store:
        points = store.count()
        # The image side's mean from a sample of stored points (their vectors as stored).
        picked = sorted(rng.choice(points, size=min(sample, points), replace=False).tolist())
        records = store.retrieve([point_id(f"/lib/{i}.jpg", None) for i in picked], with_vectors=True)
        stored = {r.id: np.asarray(r.vector, dtype=np.float32) for r in records}
        mu_image = unit(np.stack(list(stored.values()))).mean(axis=0)
        gaps = {
            name: mu_image - unit(model.encode_texts(words) @ basis.T).mean(axis=0)
            for name, words in other_texts().items()
        }
        gaps["query texts themselves (in-sample)"] = mu_image - texts.mean(axis=0)
        # Image queries: stored points (the first batch, regenerated as written) plus noise.
        first = bs.library_batch(seeds, 0, bs.BATCH) @ basis.T
        images = unit(
            first[rng.choice(len(first), size=len(texts), replace=False)]
            + 0.3 * rng.standard_normal((len(texts), first.shape[1])).astype(np.float32) / np.sqrt(first.shape[1])
        )
        truth_t = [list(store.search(q, K, exact=True)) for q in texts]
        truth_i = [list(store.search(q, K, exact=True)) for q in images]
        searcher = Searcher(store)
        spans = [len(seeds_of(bs, t, len(seeds))) for t in truth_t]
        main_gap = gaps["other templates"]
        walk = unit(texts[0] + main_gap)
        print(
            f"mediasearch bench_gap: {points:,} points (128-d, graph m {m} / ef_construct "
            f"{ef_construct}), {len(texts)} text queries, {len(images)} image queries, "
            f"{RUNS} passes; image mean from {len(stored):,} stored points; |gap| "
            + ", ".join(f"{k}: {np.linalg.norm(g):.2f}" for k, g in gaps.items())
            + f"; cosine text->image before / after the shift: {float(np.mean(texts @ unit(mu_image))):.2f} / "
            f"{float(np.mean(unit(texts + main_gap) @ unit(mu_image))):.2f}; re-score check (max |score - cosine|): "
            f"{check_rescore(searcher, texts[0], walk):.1e}; a text's exact top 10 lies around "
            f"{np.mean(spans):.1f} rendered shapes (clusters) on average, up to {max(spans)}"
        )
        print("| method | recall@10 | worst | p50 ms |")
        print("|---|--:|--:|--:|")
        row("exact scan", lambda q: store.search(q, K, exact=True), texts, truth_t)
        for oversampling in (4, 20):
            row(
                f"text: scan of the int8 copy, best {K * oversampling} re-scored",
                lambda q, o=oversampling: int8_scan(store, q, o),
                texts,
                truth_t,
            )
        for ef in efs:
            row(f"text: graph, ef {ef}", lambda q, ef=ef: searcher.plain(q, ef), texts, truth_t)
        for ef in walk_ef:
            for n in ns:
                for name, g in gaps.items():
                    if name != "other templates" and (n != max(ns) or ef != max(walk_ef)):
                        continue
                    row(
                        f"text: shifted walk (gap from {name}), best {n} re-scored, ef {max(ef, n)}",
                        lambda q, g=g, n=n, ef=ef: searcher.staged(q, [unit(q + g)], n, ef),
                        texts,
                        truth_t,
                    )
                row(
                    f"text: shifted walk, half the gap, best {n} re-scored, ef {max(ef, n)}",
                    lambda q, n=n, ef=ef: searcher.staged(q, [unit(q + 0.5 * main_gap)], n, ef),
                    texts,
                    truth_t,
                )
                row(
                    f"text: plain walk, best {n} re-scored, ef {max(ef, n)}",
                    lambda q, n=n, ef=ef: searcher.staged(q, [q], n, ef),
                    texts,
                    truth_t,
                )
                row(
                    f"text: shifted + plain walks, best {n} of each re-scored, ef {max(ef, n)}",
                    lambda q, n=n, ef=ef: searcher.staged(q, [unit(q + main_gap), q], n, ef),
                    texts,
                    truth_t,
                )
                row(
                    f"text: feedback (walk ef 64, then its top 10's mean + plain), best {n} of each re-scored, "
                    f"ef {max(ef, n)}",
                    lambda q, n=n, ef=ef: feedback(searcher, q, n, ef),
                    texts,
                    truth_t,
                )
        for ef in efs[:1]:
            row(f"image: graph, ef {ef}", lambda q, ef=ef: searcher.plain(q, ef), images, truth_i)
            n = max(ns)
            row(
                f"image: shifted walk (wrongly applied), best {n} re-scored, ef {max(ef, n)}",
                lambda q, n=n, ef=ef: searcher.staged(q, [unit(q + main_gap)], n, ef),
                images,
                truth_i,
            )
    load = os.getloadavg()
    print(f"(load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="where the store is built and kept")
    parser.add_argument("--points", type=int, default=400_000, help="points of a store built here")
    parser.add_argument("--seeds", type=int, default=1200, help="rendered shapes the points spread around")
    parser.add_argument("--sample", type=int, default=2000, help="stored points the image mean is taken from")
    parser.add_argument("--ef", type=int, nargs="+", default=[512, 2048, 4096, 8192], help="plain graph search ef")
    parser.add_argument("--n", type=int, nargs="+", default=[400, 1000], help="candidates re-scored")
    parser.add_argument("--walk-ef", type=int, nargs="+", default=[512, 2048], help="ef of the re-scored walks")
    parser.add_argument("--m", type=int, default=None, help="graph m of a store built here (the store's own)")
    parser.add_argument("--ef-construct", type=int, default=None, help="graph ef_construct of a store built here")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.nice(5)
    bs = bench_search()
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-gap-") as tmp:
        home = args.home or Path(tmp)
        if not (home / "store").exists():
            build(bs, home, args.points, args.seeds, args.m, args.ef_construct)
        if args.build_only:
            return
        search(home, args.sample, args.ef, args.n, args.walk_ef)


if __name__ == "__main__":
    main()
