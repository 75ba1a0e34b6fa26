#!/usr/bin/env python
"""Benchmark: a warm query through the daemon against a cold `mediasearch query` (no daemon).

    python scripts/bench_query.py                 # demo model, 240 rendered photos, temp home
    python scripts/bench_query.py --images 1000 --cold-runs 3 --model demo

Builds a library of rendered shape photos, indexes it, times cold CLI queries (a new process that
loads torch and the model and opens the store), then starts `mediasearch serve` on the same home
and times queries over its HTTP API (new texts, then repeated texts, which the daemon has cached)
and CLI queries that the daemon answers. Prints a table with p50/p95 and the cold/warm ratios.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mediasearch.lab.shapes import CLASSES, make_library
from mediasearch.library.client import DaemonClient, read_port_file

QUERIES = [f"a photo of a {colour} {shape}" for colour, shape in CLASSES]


def cli(home: Path, model: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", model, "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([*command, *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"mediasearch {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def timed(fn: Callable[..., object], *args: object) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def wait_enriched(post: Callable[..., Any], limit_s: float = 600.0) -> None:
    """Until the daemon's background enrichment pass (OCR, faces) has nothing pending, or ``limit_s``:
    its worker processes would otherwise share the cores with the queries timed after it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        signals = post("GET", "/status").get("enrichers") or {}
        if all(s.get("pending", 0) == 0 for s in signals.values()):
            return
        time.sleep(1.0)


def start_daemon(
    home: Path,
    model: str,
    device: str = "cpu",
    *,
    serve_args: Sequence[str] = (),
    log: Path | None = None,
    ready: Callable[[DaemonClient], bool] | None = None,
) -> tuple[subprocess.Popen[bytes], DaemonClient]:
    """`mediasearch serve SERVE_ARGS` on ``home``, once its health says ready (and ``ready`` agrees).

    Its output goes to ``log`` (or nowhere); the benchmarks share this start.
    """
    command = [sys.executable, "-m", "mediasearch", "--home", str(home), "--model", model, "--device", device]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log or os.devnull, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*command, "serve", *serve_args], stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("the daemon exited before it was ready" + (f" (see {log})" if log else ""))
        info = read_port_file(home)
        if info is not None:
            client = DaemonClient(info)
            if client.health().get("state") == "ready" and (ready is None or ready(client)):
                return proc, client
        time.sleep(0.1)
    proc.kill()
    sys.exit("the daemon did not become ready in 300 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, seconds: list[float], cold: float | None) -> str:
    p50, p95 = percentile(seconds, 0.5), percentile(seconds, 0.95)
    ratio = f"{cold / p50:8.0f}x" if cold else f"{'1x':>9}"
    return f"| {name:<34} | {len(seconds):>4} | {p50 * 1000:>9.1f} | {p95 * 1000:>9.1f} | {ratio} |"


def run(home: Path, model: str, images: int, cold_runs: int, warm_runs: int) -> None:
    library = home.parent / "library"
    if not library.is_dir():
        print(f"rendering {images} photos ...", file=sys.stderr)
        make_library(library, images, seed=11)
    print("indexing ...", file=sys.stderr)
    cli(home, model, "index", str(library))
    print(f"{cold_runs} cold CLI queries ...", file=sys.stderr)
    cold = [timed(cli, home, model, "query", QUERIES[i % len(QUERIES)], "--json") for i in range(cold_runs)]
    proc, client = start_daemon(home, model)
    try:
        print(f"{warm_runs} warm queries ...", file=sys.stderr)
        post = client.call
        new = [timed(post, "POST", "/query", {"text": f"{QUERIES[i % 24]} #{i}"}) for i in range(warm_runs)]
        cached = [timed(post, "POST", "/query", {"text": QUERIES[0]}) for _ in range(warm_runs)]
        via_cli = [timed(cli, home, model, "query", QUERIES[i % 24], "--json") for i in range(cold_runs)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    base = percentile(cold, 0.5)
    print(f"\nquery latency, {images} photos, model {model}, home {home} (CPU)\n")
    print(f"| {'mode':<34} | {'n':>4} | {'p50 ms':>9} | {'p95 ms':>9} | {'cold/p50':>9} |")
    print(f"|{'-' * 36}|{'-' * 6}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    print(row("cold CLI query (no daemon)", cold, None))
    print(row("warm, HTTP API, new text", new, base))
    print(row("warm, HTTP API, repeated text", cached, base))
    print(row("CLI query answered by the daemon", via_cli, base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--warm-runs", type=int, default=50)
    parser.add_argument("--home", type=Path, help="an existing home to reuse (default: a temporary one)")
    args = parser.parse_args()
    if args.home:
        run(args.home, args.model, args.images, args.cold_runs, args.warm_runs)
        return
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        run(Path(tmp) / "home", args.model, args.images, args.cold_runs, args.warm_runs)


if __name__ == "__main__":
    main()
