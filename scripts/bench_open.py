#!/usr/bin/env python
"""Benchmark: what opening an Edge shard costs on disk and in time; one table.

    python scripts/bench_open.py                       # 2,000 points x 512-d, 5 opens, on a tmpfs and on disk
    python scripts/bench_open.py --points 20000 --opens 3
    python scripts/bench_open.py --folder /dev/shm     # a folder of your own instead of the two media

A shard is made with the store API (random unit vectors, payloads with every indexed field) and
closed; then it is opened and closed ``--opens`` times, each open in a child process of its own (as a
command does) that also runs one exact search. After each step the table gives the bytes the shard's
files take on their disk (allocated blocks: on tmpfs the engine's load fills the holes of the files
it maps, which is what made the open grow the shard), the growth since the step before, and the
child's time to open and to answer its first search. The tmpfs is mounted for the run where this
process may mount (it runs as root in CI), else that medium is left out. Only the store API is used,
so the same command measures an older checkout (`PYTHONPATH=/path/to/old python scripts/bench_open.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DIM = 512
COLLECTION = "media_bench"
MiB = 1 << 20

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from mediasearch.store.collections import open_store
    start = time.perf_counter()
    store = open_store(home=Path(sys.argv[1]), collection=sys.argv[2], dim=None, create=False)
    opened = time.perf_counter()
    store.search(np.ones(store.dim, dtype=np.float32) / np.sqrt(store.dim), 10, exact=True)
    searched = time.perf_counter()
    store.close()
    print(json.dumps({"open_s": opened - start, "search_s": searched - opened}))
    """
)


def allocated(folder: Path) -> int:
    """Bytes the files under ``folder`` take on their disk (allocated blocks)."""
    return sum(os.lstat(Path(d) / f).st_blocks * 512 for d, _, files in os.walk(folder) for f in files)


def make_shard(home: Path, points: int) -> None:
    import numpy as np

    from mediasearch.store.base import PointIn
    from mediasearch.store.collections import open_store

    rng = np.random.default_rng(0)
    with open_store(home=home, collection=COLLECTION, dim=DIM) as store:
        for start in range(0, points, 1000):
            n = min(1000, points - start)
            vectors = rng.standard_normal((n, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            batch = [PointIn(str(uuid.UUID(int=start + i + 1)), vectors[i], _payload(start + i)) for i in range(n)]
            store.upsert(batch)


def _payload(i: int) -> dict[str, object]:
    folder = f"/photos/{i // 500:03d}"
    return {
        "path": f"{folder}/{i:06d}.jpg", "dirs": ["/photos", folder], "root": "/photos", "kind": "image",
        "tags": ["dog"] if i % 3 else [], "date": 1.6e9 + i, "camera": "Canon EOS R5",
        "geo": {"lat": 43.7, "lon": 7.26}, "ocr_text": "exit" if i % 7 == 0 else "", "places": ["nice"], "people": [],
    }  # fmt: skip


def open_once(home: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(home), COLLECTION], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the open failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@contextmanager
def tmpfs(size_mib: int) -> Iterator[Path | None]:
    folder = Path(tempfile.mkdtemp(prefix="bench-open-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)], capture_output=True
    )
    try:
        yield folder if done.returncode == 0 else None
    finally:
        if done.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def measure(label: str, folder: Path, points: int, opens: int) -> None:
    home = folder / "home"
    make_shard(home, points)
    shard = home / "store" / COLLECTION
    last = allocated(shard)
    print(f"{label:<8} {'written':<8} {last / MiB:>10.1f} {'':>10} {'':>8} {'':>9}")
    for n in range(1, opens + 1):
        times = open_once(home)
        now = allocated(shard)
        print(
            f"{label:<8} {f'open {n}':<8} {now / MiB:>10.1f} {(now - last) / MiB:>+10.1f} "
            f"{times['open_s'] * 1000:>8.0f} {times['search_s'] * 1000:>9.1f}"
        )
        last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--opens", type=int, default=5)
    parser.add_argument("--folder", type=Path, help="measure in this folder only")
    args = parser.parse_args()
    with open("/proc/loadavg", encoding="utf-8") as f:
        print(f"# {args.points} points x {DIM}-d; load average {f.read().split()[0]}")
    print(f"{'medium':<8} {'step':<8} {'MiB':>10} {'growth':>10} {'open ms':>8} {'search ms':>9}")
    if args.folder:
        folder = Path(tempfile.mkdtemp(prefix="bench-open-", dir=args.folder))
        try:
            measure("folder", folder, args.points, args.opens)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    with tmpfs(2048) as mounted:
        if mounted is None:
            print("# tmpfs: cannot mount one here (not root): left out")
        else:
            measure("tmpfs", mounted, args.points, args.opens)
    folder = Path(tempfile.mkdtemp(prefix="bench-open-"))
    try:
        measure("disk", folder, args.points, args.opens)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
