#!/usr/bin/env python
"""Benchmark: queries at a steady rate through the daemon while it indexes, against each load alone.

    python scripts/bench_load.py                          # demo model, 500 photos per folder, 2 rounds
    python scripts/bench_load.py --images 1000 --rate 20 --rounds 3
    python scripts/bench_load.py --points 100000 --clients 8 --seconds 30   # concurrent readers

With ``--points N``: a store of N synthetic points (random unit vectors, written directly, as
scripts/bench.py does), served by the daemon; ``--clients`` threads query it back to back (closed
loop) for ``--seconds`` while another polls ``/status`` every second, as the web page does. Prints
errors and latency percentiles of both; any error makes the exit status 1.


Starts `mediasearch serve` on a temporary home and indexes a base library; then, in each round:
queries alone (``--rate`` per second), indexing a fresh folder alone, and indexing another fresh
folder of the same size while the same query load runs. Rounds alternate the phases so that a
change in the machine's speed (other work on it) hits both sides alike. Queries are sent open-loop
(on a fixed schedule, each in its own thread), so a slow answer does not lower the rate. Prints the
query latency percentiles and the indexing rate of each side, with the ratios.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mediasearch.lab.shapes import CLASSES, make_library
from mediasearch.library import roots
from mediasearch.library.client import DaemonClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import start_daemon  # noqa: E402

TEMPLATES = ("a photo of a {}", "a {}", "a picture of a {}", "{}")
QUERIES = [template.format(f"{colour} {shape}") for template in TEMPLATES for colour, shape in CLASSES]


def index(client: DaemonClient, folder: Path) -> tuple[int, float]:
    """Index ``folder`` through the daemon: (files added, seconds)."""
    started = time.perf_counter()
    summary = client.index([str(folder)], {})
    return int(summary["added"]), time.perf_counter() - started


class QueryLoad:
    """Queries on a fixed schedule (``rate`` per second) until stopped; records each latency."""

    def __init__(self, client: DaemonClient, rate: float) -> None:
        self.client, self.rate = client, rate
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="queries", daemon=True)

    def _one(self, text: str) -> None:
        started = time.perf_counter()
        try:
            self.client.call("POST", "/query", {"text": text, "limit": 10}, timeout=120)
        except Exception:  # counted, not fatal: the figures say how many failed
            with self._lock:
                self.errors += 1
            return
        with self._lock:
            self.latencies.append(time.perf_counter() - started)

    def _run(self) -> None:
        pending: list[Future[None]] = []
        with ThreadPoolExecutor(max_workers=32, thread_name_prefix="query") as pool:
            start, k = time.perf_counter(), 0
            while not self._stop.is_set():
                delay = start + k / self.rate - time.perf_counter()
                if delay > 0 and self._stop.wait(delay):
                    break
                pending.append(pool.submit(self._one, QUERIES[k % len(QUERIES)]))
                k += 1
            for future in pending:
                future.result()

    def __enter__(self) -> QueryLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Figures:
    """What one side of the comparison measured, summed over the rounds."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    files: int = 0
    seconds: float = 0.0

    def add_queries(self, load: QueryLoad) -> None:
        self.latencies += load.latencies
        self.errors += load.errors

    def add_index(self, done: tuple[int, float]) -> None:
        self.files += done[0]
        self.seconds += done[1]

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else float("nan")


def row(name: str, queries: Figures | None, indexing: Figures | None) -> str:
    if queries is not None:
        lat = queries.latencies
        cells = f"{len(lat):>5} | {queries.errors:>4} | " + " | ".join(
            f"{percentile(lat, q) * 1000:>7.1f}" for q in (0.5, 0.95, 0.99)
        )
    else:
        cells = f"{'-':>5} | {'-':>4} | {'-':>7} | {'-':>7} | {'-':>7}"
    rate = f"{indexing.rate:>9.1f}" if indexing is not None else f"{'-':>9}"
    return f"| {name:<18} | {cells} | {rate} |"


def run(base: Path, model: str, images: int, rate: float, seconds: float, rounds: int) -> None:
    print(f"rendering {images} photos for the base library and {2 * rounds} x {images} to index ...", file=sys.stderr)
    make_library(base / "base", images, seed=1)
    for r in range(rounds):
        make_library(base / f"alone{r}", images, seed=10 + r)
        make_library(base / f"loaded{r}", images, seed=20 + r)
    home = base / "home"
    home.mkdir()
    roots.record(home, [str(base)])  # the folders it indexes are inside a library root (docs/security.md)
    proc, client = start_daemon(home, model, serve_args=["--rescan-every", "off"], log=home.parent / "serve.log")
    queries_alone, queries_loaded, index_alone, index_loaded = Figures(), Figures(), Figures(), Figures()
    try:
        index(client, base / "base")
        with QueryLoad(client, rate):  # the first queries load the calibration and caches
            time.sleep(2)
        for r in range(rounds):  # alternating, so that a drift in the machine's speed hits both sides
            print(f"round {r + 1}: queries alone, indexing alone, both at once ...", file=sys.stderr)
            with QueryLoad(client, rate) as load:
                time.sleep(seconds / rounds)
            queries_alone.add_queries(load)
            index_alone.add_index(index(client, base / f"alone{r}"))
            with QueryLoad(client, rate) as load:
                index_loaded.add_index(index(client, base / f"loaded{r}"))
            queries_loaded.add_queries(load)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    print(f"\n{model} model, {rounds} x {images} files per side, {rate:g} queries/s, {os.cpu_count()} CPUs\n")
    print(f"| {'phase':<18} | {'n':>5} | {'err':>4} | {'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'files/s':>9} |")
    print(f"|{'-' * 20}|{'-' * 7}|{'-' * 6}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 11}|")
    print(row("queries alone", queries_alone, None))
    print(row("indexing alone", None, index_alone))
    print(row("both at once", queries_loaded, index_loaded))
    p50 = percentile(queries_loaded.latencies, 0.5) / percentile(queries_alone.latencies, 0.5)
    p95 = percentile(queries_loaded.latencies, 0.95) / percentile(queries_alone.latencies, 0.95)
    print(f"\nwhile indexing: query p50 x{p50:.2f}, p95 x{p95:.2f}", end="; ")
    print(f"while queried: indexing rate x{index_loaded.rate / index_alone.rate:.2f}")


def synthetic_home(home: Path, model: str, points: int) -> None:
    """A home whose index holds ``points`` synthetic image points (no files behind them), with its search
    graph when it is big enough for one."""
    import numpy as np

    from mediasearch.library import home as library
    from mediasearch.library.local import LocalLibrary
    from mediasearch.settings import load_settings
    from mediasearch.store.base import EXACT_SEARCH_MAX_POINTS, PointIn, point_id

    settings = load_settings({"home": home, "model": model, "device": "cpu"}, env={})
    opened = library.open_for_index(settings)
    rng = np.random.default_rng(0)
    try:
        for start in range(0, points, 2000):
            count = min(2000, points - start)
            vectors = rng.standard_normal((count, opened.model.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            opened.store.upsert([PointIn(point_id(f"/bench/{start + i}.jpg", None), vectors[i], _payload(start + i))
                                 for i in range(count)])
        opened.store.flush()
        library.finish_index(settings, opened, {"added": points})
        if points > EXACT_SEARCH_MAX_POINTS:  # the graph a daemon would build first (queries wait meanwhile)
            LocalLibrary(settings, index_side=opened).build_search_index(threading.Event())
    finally:
        opened.close()


def _payload(i: int) -> dict[str, object]:
    folder = f"/bench/d{i // 1000:03d}"
    return {"path": f"{folder}/{i}.jpg", "dirs": ["/", "/bench", folder], "root": "/bench", "kind": "image",
            "size": 1000, "mtime": 1.7e9 + i, "fingerprint": f"{i:016x}", "frames_total": 1, "tags": [],
            "date": 1.7e9 + i, "timestamp": None}


class Readers:
    """``clients`` threads querying back to back, and one polling /status every ``status_every`` s."""

    def __init__(self, client: DaemonClient, clients: int, status_every: float) -> None:
        self.client, self.clients, self.status_every = client, clients, status_every
        self.queries: list[float] = []
        self.statuses: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _timed(self, into: list[float], method: str, route: str, body: object = None) -> None:
        started = time.perf_counter()
        try:
            self.client.call(method, route, body, timeout=60)
        except Exception as exc:  # counted and shown: the figures say what failed
            with self._lock:
                self.errors.append(f"{route}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            return
        with self._lock:
            into.append(time.perf_counter() - started)

    def _query_loop(self, n: int) -> None:
        k = n
        while not self._stop.is_set():
            self._timed(self.queries, "POST", "/query", {"text": QUERIES[k % len(QUERIES)], "limit": 10})
            k += self.clients

    def _status_loop(self) -> None:
        while not self._stop.wait(self.status_every):
            self._timed(self.statuses, "GET", "/status")

    def run(self, seconds: float) -> None:
        threads = [threading.Thread(target=self._query_loop, args=(n,), daemon=True) for n in range(self.clients)]
        threads.append(threading.Thread(target=self._status_loop, daemon=True))
        for t in threads:
            t.start()
        time.sleep(seconds)
        self._stop.set()
        for t in threads:
            t.join()


def run_readers(base: Path, model: str, points: int, clients: int, seconds: float) -> int:
    home = base / "home"
    print(f"writing {points} synthetic points ...", file=sys.stderr)
    started = time.perf_counter()
    synthetic_home(home, model, points)
    print(f"  {time.perf_counter() - started:.0f} s; starting the daemon ...", file=sys.stderr)
    proc, client = start_daemon(home, model, serve_args=["--rescan-every", "off"], log=base / "serve.log")
    try:
        status = client.call("GET", "/status")
        assert status["files"] == points, status
        Readers(client, 1, 3600).run(2.0)  # warm-up: the first queries load caches
        readers = Readers(client, clients, 1.0)
        readers.run(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    print(f"\n{model} model, {points} points, {clients} query clients + /status every 1 s, {seconds:g} s, "
          f"{os.cpu_count()} CPUs\n")
    print(f"| {'request':<8} | {'n':>6} | {'err':>4} | {'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 10}|{'-' * 8}|{'-' * 6}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, values, route in (("query", readers.queries, "/query"), ("status", readers.statuses, "/status")):
        errors = sum(e.startswith(route) for e in readers.errors)
        cells = " | ".join(f"{percentile(values, q) * 1000:>7.1f}" for q in (0.5, 0.95, 0.99))
        print(f"| {name:<8} | {len(values):>6} | {errors:>4} | {cells} |")
    print(f"\nqueries: {len(readers.queries) / seconds:.1f}/s; errors: {len(readers.errors)}")
    for line in sorted(set(readers.errors))[:10]:
        print(f"  {line}")
    return 1 if readers.errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="photos per folder (base, each round's two)")
    parser.add_argument("--rate", type=float, default=5.0, help="queries per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="queries-alone time, over all rounds")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the three phases")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--points", type=int, default=0, help="concurrent readers on a synthetic store this big")
    parser.add_argument("--clients", type=int, default=8, help="with --points: query clients")
    args = parser.parse_args()
    if args.points:
        with tempfile.TemporaryDirectory(prefix="mediasearch-bench-readers-", dir=args.dir) as tmp:
            sys.exit(run_readers(Path(tmp), args.model, args.points, args.clients, args.seconds))
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=False)
        run(args.dir, args.model, args.images, args.rate, args.seconds, args.rounds)
        return
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-load-") as tmp:
        run(Path(tmp), args.model, args.images, args.rate, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
