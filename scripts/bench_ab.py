#!/usr/bin/env python
"""Benchmark: warm daemon queries at library size, two source trees side by side on the same load.

    python scripts/bench_ab.py --trees /path/to/before /path/to/after               # 100k points, 2 rounds
    python scripts/bench_ab.py --trees A B --points 100000 --runs 30 --rounds 3 --workdir /tmp/ab

``scripts/bench.py --only query`` times one tree; on a shared machine two such runs minutes apart see
different loads. Here one home is made (ViT-B-32 with random weights: the 640 px photos, which each
daemon indexes, and synthetic image points up to ``--points``, as ``bench.py``'s warm-query step makes
them), copied once per tree, and each copy gets its search graph built by its own tree's code (as its
daemon would). Then the trees' daemons take turns, ``--rounds`` times: each starts on its copy, finishes
indexing and the OCR and faces pass, and answers ``--runs`` new texts (the 7-template ensemble), new
texts with ``--raw`` (one text) and a repeated text (no encoding). Prints p50 / p95 per tree over all
its rounds, each round's p50s, and the load average around each round. ``--search-ab``: then the second
tree's store alone, in one process, query by query: its graph search with the int8 copy, with the copy
ignored, and the exact scan (the second tree must have the copy: ``store.edge._search_params``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench_query import percentile, start_daemon, timed, wait_enriched  # noqa: E402

GRAPH = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import bench
from pathlib import Path
from mediasearch.library import home as library
from mediasearch.library.local import LocalLibrary
settings = bench._settings(Path(sys.argv[2]), {"model": sys.argv[3], "weights": sys.argv[4], "device": "cpu"})
opened = library.open_for_index(settings)
try:
    lib = LocalLibrary(settings, index_side=opened)
    if lib.search_index_built() is None:
        sys.exit(lib.build_search_index(threading.Event()))
finally:
    opened.close()
"""
SEARCH_AB = """
import sys, time
import numpy as np
import qdrant_edge as qe
from pathlib import Path
from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import ModelSpec
from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
from mediasearch.store import edge
from mediasearch.store.collections import active_collection, open_store
home, runs = Path(sys.argv[1]), int(sys.argv[4])
model = load_model(ModelSpec(sys.argv[2], sys.argv[3]), device="cpu", cache_dir=home / "cache" / "models")
words = ["a dog", "the beach", "a receipt", "my cat", "a red car", "mountains", "a birthday cake", "snow"]
texts = [f"a photo of {words[i % len(words)]} {i}" for i in range(runs)]
queries = [ensemble_embeddings(model, [t], templates_for(model))[0] for t in texts]
copy = edge._search_params
ignored = qe.QuantizationSearchParams(ignore=True)
plain = lambda exact, ef: qe.SearchParams(exact=exact, hnsw_ef=ef, quantization=ignored)
seconds, recall = {"int8 copy": [], "copy ignored": [], "exact scan": []}, {"int8 copy": [], "copy ignored": []}
with open_store(home=home, collection=active_collection(home=home), dim=None, create=False) as store:
    for q in queries * 3:
        exact = {r.id for r in store.search(q, 10, exact=True)}
        for name, params in (("int8 copy", copy), ("copy ignored", plain)):
            edge._search_params = params
            started = time.perf_counter()
            found = store.search(q, 80)  # a query's fetch (limit 10: 80 points)
            seconds[name].append(time.perf_counter() - started)
            recall[name].append(len({r.id for r in found[:10]} & exact) / 10)
        edge._search_params = copy
        started = time.perf_counter()
        store.search(q, 80, exact=True)
        seconds["exact scan"].append(time.perf_counter() - started)
for name, values in seconds.items():
    values.sort()
    p50, p95 = values[len(values) // 2] * 1000, values[int(len(values) * 0.95)] * 1000
    extra = f"; recall@10 {np.mean(recall[name]):.3f} (worst {min(recall[name]):.1f})" if name in recall else ""
    print(f"| graph search, {name} | {p50:.2f} / {p95:.2f}{extra} |")
"""
KINDS = ("new text (7 templates)", "new text, --raw", "repeated text")


def tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def make_home(opts: argparse.Namespace, work: Path, weights: Path) -> Path:
    """The shared home: synthetic points (and their graph, rebuilt per tree below), the photos' root."""
    base = work / f"home-{opts.points}"
    if base.is_dir():
        return base
    os.environ["PYTHONPATH"] = str(opts.trees[0])
    args = {"model": opts.model, "weights": str(weights), "device": "cpu", "workdir": str(work)}
    bench.child("store", **args, home=str(base), points=opts.points - opts.images)
    from mediasearch.library import roots

    roots.record(base, [str(work / "photos-640")])
    return base


def prepare(tree: Path, base: Path, home: Path, opts: argparse.Namespace, weights: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(base, home, symlinks=True)
    script = Path(__file__).resolve().parent
    command = [sys.executable, "-c", GRAPH, str(script), str(home), opts.model, str(weights)]
    subprocess.run(command, env=tree_env(tree), check=True)


def one_round(tree: Path, home: Path, opts: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    os.environ.update(tree_env(tree))
    proc, client = start_daemon(home, opts.model, "cpu")
    post = client.call
    try:
        client.index([str(work / "photos-640")], {})
        wait_enriched(post)
        post("POST", "/query", {"text": bench.QUERY})
        tag = f"{time.time():.0f}"
        runs = range(opts.runs)
        return {
            KINDS[0]: [timed(post, "POST", "/query", {"text": f"{bench.QUERY} {tag} {i}"}) for i in runs],
            KINDS[1]: [
                timed(post, "POST", "/query", {"text": f"{bench.QUERY} raw {tag} {i}", "raw": True}) for i in runs
            ],
            KINDS[2]: [timed(post, "POST", "/query", {"text": bench.QUERY}) for _ in runs],
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs=2, type=Path, required=True, help="two source trees (repository roots)")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=128, help="640 px photos each daemon indexes")
    parser.add_argument("--runs", type=int, default=30, help="queries of each kind per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument(
        "--search-ab",
        action="store_true",
        help="also time the second tree's graph search with its int8 copy and with it ignored (query by query)",
    )
    parser.add_argument("--workdir", help="where media and homes go, kept between runs (default: temporary)")
    opts = parser.parse_args()
    opts.trees = [t.resolve() for t in opts.trees]
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-ab-") as tmp:
        work = Path(opts.workdir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        bench.BENCH_CACHE[:] = [str(work / "user-cache")]
        bench.make_photos(work / "photos-640", opts.images, (640, 480), distinct=64)
        weights = bench.random_weights(work, opts.model)
        os.environ["MEDIASEARCH_PRETRAINED"] = str(weights)
        base = make_home(opts, work, weights)
        homes = [work / f"home-{i}" for i in range(2)]
        for tree, home in zip(opts.trees, homes, strict=True):
            prepare(tree, base, home, opts, weights)
        times: list[dict[str, list[float]]] = [{k: [] for k in KINDS} for _ in opts.trees]
        for r in range(opts.rounds):
            for i, (tree, home) in enumerate(zip(opts.trees, homes, strict=True)):
                before = os.getloadavg()[0]
                got = one_round(tree, home, opts, work)
                for kind in KINDS:
                    times[i][kind] += got[kind]
                p50s = " / ".join(f"{ms(got[k], 0.5):.1f}" for k in KINDS)
                print(
                    f"round {r + 1}, {tree}: p50 {p50s} ms (load {before:.1f} -> {os.getloadavg()[0]:.1f})", flush=True
                )
        print(
            f"\n{opts.points:,} points, {opts.model} random weights, {os.cpu_count()} CPUs; p50 / p95 ms over "
            f"{opts.rounds} x {opts.runs} queries"
        )
        print("| query | " + " | ".join(str(t) for t in opts.trees) + " |")
        print("|---|--:|--:|")
        for kind in KINDS:
            cells = [f"{ms(t[kind], 0.5):.1f} / {ms(t[kind], 0.95):.1f}" for t in times]
            print(f"| {kind} | " + " | ".join(cells) + " |")
        if opts.search_ab:
            print(
                f"\n{opts.trees[1]}'s store, searched in one process ({opts.runs} new texts x 3, interleaved;"
                f" load {os.getloadavg()[0]:.1f}): ms p50 / p95"
            )
            command = [sys.executable, "-c", SEARCH_AB, str(homes[1]), opts.model, str(weights), str(opts.runs)]
            subprocess.run(command, env=tree_env(opts.trees[1]), check=True)


if __name__ == "__main__":
    main()
