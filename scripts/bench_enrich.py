#!/usr/bin/env python
"""Benchmark: the enrichment pass (``index`` after the CLIP pass) on 12 MP photos, faces or OCR alone.

    python scripts/bench_enrich.py                          # faces, OCR without text, OCR with text
    python scripts/bench_enrich.py --only faces --photos 24 # one signal, more photos
    python scripts/bench_enrich.py --workers 1 2            # the pass with 1 lane, then with 2

For each signal, a folder of 12 MP JPEGs (faces: the shared labelled photos ``../shared/data/faces``
enlarged to 4000x3000; OCR: pictures rendered by ``mediasearch.lab.textpics``, with and without text)
is indexed with the demo CLIP model and every signal off; then the pass is timed with that one signal
on (``Library.enrich``), from the files (decoding included) to the payloads and people written. Each
``--workers`` value is one run on a fresh home; the runs are interleaved ``--rounds`` times so that a
change in the machine's load falls on all of them alike. The load average is printed with each figure.

Besides photos/s, each row gives the pass's CPU time per photo in all its processes (what one core
would give: ``1 core``; N free cores give about N times that, up to the main thread's bound) and the
main thread's CPU time per photo (grouping, payload writes: the serial part, 1000/ms photos/s at most).
On a loaded machine the photos/s depend on the other jobs; the CPU times much less.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mediasearch import Library  # noqa: E402
from mediasearch.index.options import IndexReport  # noqa: E402
from mediasearch.settings import Settings  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "faces"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def face_photos(folder: Path, count: int) -> None:
    from PIL import Image

    truth = json.loads((SHARED / "truth.json").read_text())["files"]
    sources = [n for n in sorted(truth) if truth[n]["kind"] == "person"]
    for n, name in enumerate(itertools.islice(itertools.cycle(sources), count)):
        with Image.open(SHARED / name) as image:
            rgb = image.convert("RGB")
        size = (4000, 3000) if rgb.width >= rgb.height else (3000, 4000)
        rgb.resize(size, Image.Resampling.BICUBIC).save(folder / f"big{n:03d}.jpg", quality=90)


def text_photos(folder: Path, count: int, text: bool) -> None:
    from mediasearch.lab import textpics

    for seed in range(count):
        if text:
            rng = random.Random(seed)
            picture = textpics.scene(
                tuple(rng.sample(textpics.WORDS, 4)),
                font_path=next(iter(textpics.fonts()), None),
                size=160,
                angle=rng.uniform(-10, 10),
                dark=seed % 2 == 0,
                seed=seed,
                canvas=(4000, 3000),
            )
        else:
            picture = textpics.background((4000, 3000), random.Random(seed), dark=seed % 2 == 0)
        picture.save(folder / f"pic{seed:03d}.jpg", quality=90)


def settings_for(home: Path, signal: str | None) -> Settings:
    return Settings(home=home, model="demo", faces=signal == "faces", ocr=signal == "ocr", places=False)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the pass's worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def one_pass(folder: Path, base_home: Path, signal: str, workers: int) -> tuple[float, float, float, IndexReport]:
    """Wall seconds of the pass with ``signal`` on (on a copy of a home where only the CLIP pass was
    run), its CPU seconds in all processes, and the CPU seconds of the main thread (the part that no
    number of cores shortens)."""
    with tempfile.TemporaryDirectory(dir=base_home.parent) as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(base_home, home)
        report = IndexReport()
        with Library.open(settings=settings_for(home, signal), use_daemon=False) as lib:
            cpu, main_cpu, started = cpu_seconds(), time.thread_time(), time.perf_counter()
            lib.backend.enrich([str(folder)], report, workers=workers)  # type: ignore[attr-defined]
            seconds, main_cpu = time.perf_counter() - started, time.thread_time() - main_cpu
        cpu = cpu_seconds() - cpu  # after the library closed: its worker processes have ended
    return seconds, cpu, main_cpu, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("faces", "ocr-blank", "ocr-text"), nargs="+")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 0], help="pass lanes (0: as index picks)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"cores: {cores}  load: {loadavg()}", flush=True)
    cases = args.only or ["faces", "ocr-blank", "ocr-text"]
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            if case == "faces" and not (SHARED / "truth.json").is_file():
                print(f"faces: skipped ({SHARED} is absent)")
                continue
            folder = Path(tmp) / case / "photos"
            folder.mkdir(parents=True)
            if case == "faces":
                face_photos(folder, args.photos)
            else:
                text_photos(folder, args.photos, text=case == "ocr-text")
            base = Path(tmp) / case / "home"
            with Library.open(settings=settings_for(base, None), use_daemon=False) as lib:
                lib.index([str(folder)])
            signal = "faces" if case == "faces" else "ocr"
            for _ in range(args.rounds):
                for workers in args.workers:
                    seconds, cpu, main_cpu, report = one_pass(folder, base, signal, workers)
                    done = max(1, report.enriched.get(signal, 0))
                    print(
                        f"{case:<10} workers={workers or 'auto'}: {done / seconds:5.2f} photos/s"
                        f"  ({done} photos in {seconds:.1f} s, {len(report.errors)} errors)"
                        f"  CPU {1000 * cpu / done:.0f} ms/photo (1 core: {done / cpu:.2f}/s),"
                        f" main thread {1000 * main_cpu / done:.0f} ms/photo  load: {loadavg()}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
