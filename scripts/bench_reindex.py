#!/usr/bin/env python
"""Benchmark: `mediasearch index` of an unchanged folder, wall time of the whole command (process start
to printed report), median of a few runs; one table.

    python scripts/bench_reindex.py                        # 260 and 10,000 files (+ 6 broken), 3 runs each
    python scripts/bench_reindex.py --files 260 --runs 5
    python scripts/bench_reindex.py --real                 # first index by the CLI at every size
    python scripts/bench_reindex.py --broken 0             # no broken files

Each size gets a folder of tiny JPEGs (in folders of 500: a no-op re-index costs per file, not per
pixel) and a fresh home. The first index is a real `mediasearch index` with the demo model up to
``--real-max`` files; above that the store is seeded with the points such a run writes (the same ids
and planning payload: path, dirs, size, mtime, fingerprint, frames_total; random vectors), because a
no-op run reads only those and encoding 10,000 files would take minutes here. The timed runs are the
real CLI in a child process of its own; each checks the report's counts (every good file scanned and
unchanged, every broken one failed, nothing else) and says whether torch or open_clip was imported.

Every folder also holds ``--broken`` broken files (truncated JPEGs, random bytes, empty files, text
named .jpg), as every real library does: the first run finds them failing, and a no-op run must list
them with their reasons without decoding them or loading the model (`index.failures`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOALS_S = {260: 1.0, 10_000: 2.0}  # issue 22
CPU_S: list[float] = []  # CPU seconds (user + system) of each child run, in order

# The CLI, run as `python -m mediasearch` would run it, telling at exit which heavy modules it imported.
CHILD = """
import atexit, runpy, sys
def heavy():
    print("heavy:" + ",".join(m for m in ("torch", "open_clip") if m in sys.modules), file=sys.stderr)
atexit.register(heavy)
sys.argv[0] = "mediasearch"
runpy.run_module("mediasearch", run_name="__main__", alter_sys=True)
"""


def make_tree(folder: Path, count: int, broken: int) -> Path:
    """``count`` distinct tiny JPEGs in folders of 500, and ``broken`` broken files among them."""
    import io
    import random

    from PIL import Image

    stamp = folder / f".made-{count}-{broken}"
    if stamp.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for i in range(count):
        sub = folder / f"d{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        colour = (i % 256, (i // 256) % 256, (i * 7) % 256)
        Image.new("RGB", (32, 24), colour).save(sub / f"img_{i:05d}.jpg", quality=80)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="JPEG", quality=90)
    kinds = [buffer.getvalue()[: len(buffer.getvalue()) // 2], random.Random(0).randbytes(4096), b"", b"not a photo\n"]
    for i in range(broken):
        sub = folder / f"d{(i * 500 // max(broken, 1)) % max(1, (count + 499) // 500):03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"broken_{i:03d}.jpg").write_bytes(kinds[i % len(kinds)] + (b"" if i < len(kinds) else bytes([i % 256])))
    stamp.touch()
    return folder


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASEARCH_")}
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), out.get("PYTHONPATH", "")) if p)
    out["HF_HUB_OFFLINE"] = "1"
    return out


def run_index(home: Path, folder: Path) -> tuple[float, dict[str, Any], str]:
    """One `mediasearch index FOLDER --json`: wall seconds, the report, the heavy modules it imported."""
    args = ["--home", str(home), "--model", "demo", "--device", "cpu", "index", str(folder), "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env(), check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if child.returncode != 0:
        raise SystemExit(f"index failed ({child.returncode}): {child.stderr.strip()[-500:]}")
    heavy = child.stderr.rsplit("heavy:", 1)[1].strip() if "heavy:" in child.stderr else "?"
    return wall, json.loads(child.stdout), heavy or "none"


def seed(home: Path, folder: Path) -> None:
    """Write the points a first run over ``folder`` writes (planning payload, random vectors)."""
    import numpy as np

    from mediasearch.index.plan import file_key, file_payload
    from mediasearch.library import home as library
    from mediasearch.media.discover import discover, fingerprint
    from mediasearch.settings import load_settings
    from mediasearch.store.base import PointIn, point_id

    settings = load_settings({"home": home, "model": "demo", "device": "cpu"}, env={})
    opened = library.open_for_index(settings)
    rng = np.random.default_rng(0)
    try:
        batch: list[PointIn] = []
        for entry in discover([folder]):
            if os.path.basename(entry.path).startswith("broken_"):  # a real run finds these failing
                continue
            vector = rng.standard_normal(opened.store.dim).astype(np.float32)
            payload = {**file_payload(entry, fingerprint(entry.path, entry.size), 1, None), "timestamp": None}
            batch.append(PointIn(point_id(file_key(entry.path), None), vector / np.linalg.norm(vector), payload))
            if len(batch) == 1000:
                opened.store.upsert(batch)
                batch = []
        opened.store.upsert(batch)
    finally:
        opened.close()


def bench(workdir: Path, files: int, broken: int, runs: int, real: bool) -> dict[str, Any]:
    folder = make_tree(workdir / f"tree-{files}", files, broken)
    home = Path(tempfile.mkdtemp(prefix="home-", dir=workdir))
    try:
        if real:
            first, report, _ = run_index(home, folder)
            how = f"CLI, {first:.0f} s"
            assert report["added"] == files and report["failed"] == broken, report
        else:
            started = time.perf_counter()
            seed(home, folder)
            if broken:  # the run that finds the broken files failing (and remembers them)
                run_index(home, folder)
            how = f"seeded, {time.perf_counter() - started:.0f} s"
        walls, heavy, counts_ok = [], set(), True
        del CPU_S[:]
        for _ in range(runs):
            wall, report, imported = run_index(home, folder)
            walls.append(wall)
            heavy.add(imported)
            counts = {k: report[k] for k in ("scanned", "unchanged", "added", "updated", "moved", "removed", "failed")}
            expected = {"scanned": files + broken, "unchanged": files, **dict.fromkeys(list(counts)[2:], 0)}
            if counts != {**expected, "failed": broken}:
                counts_ok = False
                print(f"unexpected counts at {files} files: {counts}", file=sys.stderr)
        return {
            "files": files,
            "broken": broken,
            "first": how,
            "walls": walls,
            "cpu": statistics.median(CPU_S),
            "counts_ok": counts_ok,
            "heavy": ",".join(sorted(heavy)),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[260, 10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broken", type=int, default=6, help="broken files in each folder (6: as in issue 33)")
    parser.add_argument("--real", action="store_true", help="first index by the CLI at every size")
    parser.add_argument("--real-max", type=int, default=1000, help="largest size indexed by the CLI first")
    parser.add_argument("--workdir", help="keep the media here between runs (default: a temporary folder)")
    opts = parser.parse_args()
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="bench-reindex-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = [bench(workdir, n, opts.broken, opts.runs, opts.real or n <= opts.real_max) for n in opts.files]
    finally:
        if not opts.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{'files':>7} {'broken':>6} {'first index':>16} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>6} "
        f"{'goal s':>7} {'median/goal':>11} {'counts':>7} {'imported':>9}"
    )
    for r in rows:
        median, goal = statistics.median(r["walls"]), GOALS_S.get(r["files"])
        ratio = f"{median / goal:.2f}" if goal else "-"
        print(
            f"{r['files']:>7,} {r['broken']:>6} {r['first']:>16} {median:>9.2f} {min(r['walls']):>7.2f} "
            f"{max(r['walls']):>7.2f} {r['cpu']:>6.2f} {goal or '-':>7} {ratio:>11} "
            f"{'ok' if r['counts_ok'] else 'WRONG':>7} {r['heavy']:>9}"
        )
    print(
        f"(wall time of `mediasearch index FOLDER --json` in a child process, {opts.runs} runs each; cpu s: its "
        f"median user+system CPU time; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        "imported: torch/open_clip in the no-op runs)"
    )


if __name__ == "__main__":
    main()
