#!/usr/bin/env python
"""Benchmark: faces and people, quality on real photos and speed.

    python scripts/bench_faces.py                 # everything (~2 min on 2 quiet cores)
    python scripts/bench_faces.py --no-cnn        # without the CNN detector's timing
    python scripts/bench_faces.py --photos 24     # more 12 MP photos for the speed rows

Quality, on the shared labelled photos (``../shared/data/faces``, beside the checkout; skipped where
absent): labelled photos whose face is found; photos without people where no face is found; the
grouping's pairwise precision and recall (a labelled face not found counts as a pair missed); and
``--person`` precision: for each labelled person with two photos or more, the photos that the
person's id finds (its clearest faces first, at most 10), and how many of them really show that person.

Speed: photos/s at 12 MP (the shared photos enlarged to 4000x3000 JPEGs: decoded at reduced size as the
index does, HOG on a picture of at most 1024 px, alignment, descriptor), in one process and in one
process per core; the CNN detector's seconds per photo; grouping 10,000 generated faces.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mediasearch.faces.engine import MAX_SIDE, Face, FaceEngine
from mediasearch.faces.grouping import DIM, THRESHOLD, PeopleIndex, group

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def load(path: Path, side: int = MAX_SIDE) -> np.ndarray:
    """The photo decoded as the index decodes it: JPEG draft mode, then fitted to ``side``."""
    with Image.open(path) as image:
        image.draft("RGB", (side, side))
        rgb = image.convert("RGB")
        rgb.thumbnail((side, side))
        return np.asarray(rgb)


def quality(engine: FaceEngine) -> dict[str, float]:
    truth = json.loads((SHARED / "truth.json").read_text())["files"]
    found = {name: engine.faces(load(SHARED / name, 4096)) for name in sorted(truth)}
    person_photos = [n for n in truth if truth[n]["kind"] == "person"]
    empty = [n for n in truth if truth[n]["kind"] == "no_face"]
    vectors, labels, owners = [], [], []
    for name in sorted(truth):
        for number, face in enumerate(found[name]):
            vectors.append(face.embedding)
            labels.append(truth[name]["people"][0] if truth[name]["kind"] == "person" and number == 0 else None)
            owners.append((name, face))
    ids = group(vectors)
    precision, recall = pairs(ids, labels, truth, found)
    return {
        "labelled photos with their face found": sum(1 for n in person_photos if found[n]) / len(person_photos),
        "photos without people, no face found": sum(1 for n in empty if not found[n]) / len(empty),
        "grouping pairwise precision": precision,
        "grouping pairwise recall": recall,
        "--person precision (at most 10 photos)": person_precision(ids, labels, owners, truth),
    }


def pairs(
    ids: list[str], labels: list[str | None], truth: dict[str, Any], found: dict[str, list[Face]]
) -> tuple[float, float]:
    tp = fp = fn = 0
    for a, b in itertools.combinations([i for i, label in enumerate(labels) if label], 2):
        same, together = labels[a] == labels[b], ids[a] == ids[b]
        tp, fp, fn = tp + (same and together), fp + (together and not same), fn + (same and not together)
    photos: dict[str, int] = {}
    missed: dict[str, int] = {}
    for name, item in truth.items():
        if item["kind"] == "person":
            photos[item["people"][0]] = photos.get(item["people"][0], 0) + 1
            if not found[name]:
                missed[item["people"][0]] = missed.get(item["people"][0], 0) + 1
    for person, count in missed.items():
        fn += count * (photos[person] - count) + count * (count - 1) // 2
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def person_precision(
    ids: list[str], labels: list[str | None], owners: list[tuple[str, Face]], truth: dict[str, Any]
) -> float:
    scores = []
    for person in sorted({label for label in labels if label}):
        photos = [n for n, item in truth.items() if item["people"] == [person]]
        if len(photos) < 2:
            continue
        mine = [ids[i] for i, label in enumerate(labels) if label == person]
        pid = max(set(mine), key=mine.count)  # the id the user would name after this person
        hits: dict[str, float] = {}
        for i, (name, face) in enumerate(owners):
            if ids[i] == pid:
                hits[name] = max(hits.get(name, 0.0), face.quality)
        top = sorted(hits, key=lambda n: -hits[n])[:10]
        scores.append(sum(1 for n in top if person in truth[n]["people"]) / len(top))
    return float(np.mean(scores))


def big_photos(folder: Path, count: int) -> list[Path]:
    truth = json.loads((SHARED / "truth.json").read_text())["files"]
    sources = [n for n in sorted(truth) if truth[n]["kind"] == "person"][:count]
    out = []
    for n, name in enumerate(itertools.islice(itertools.cycle(sources), count)):
        with Image.open(SHARED / name) as image:
            rgb = image.convert("RGB")
        size = (4000, 3000) if rgb.width >= rgb.height else (3000, 4000)
        out.append(folder / f"big{n:03d}.jpg")
        rgb.resize(size, Image.Resampling.BICUBIC).save(out[-1], quality=90)
    return out


_ENGINE: FaceEngine | None = None


def faces_in(path: str) -> int:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = FaceEngine()
    return len(_ENGINE.faces(load(Path(path))))


def photos_per_second(paths: list[Path], processes: int) -> float:
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(faces_in, [str(paths[0])] * processes))  # load the models in each worker first
        started = time.perf_counter()
        list(pool.map(faces_in, [str(p) for p in paths]))
        return len(paths) / (time.perf_counter() - started)


def cnn_seconds(paths: list[Path]) -> float:
    engine = FaceEngine("cnn")
    engine.faces(load(paths[0]))
    started = time.perf_counter()
    for path in paths[1:]:
        engine.faces(load(path))
    return (time.perf_counter() - started) / max(1, len(paths) - 1)


def grouping_seconds(faces: int = 10_000, people: int = 1_000) -> float:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(people, DIM))
    centres *= 2 * THRESHOLD / np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, people, faces)] + rng.normal(
        scale=0.2 * THRESHOLD / np.sqrt(DIM), size=(faces, DIM)
    )
    started = time.perf_counter()
    index = PeopleIndex()
    group(vectors, index)
    return time.perf_counter() - started


def stall_seconds(pixels: np.ndarray, worker: bool, seconds: float = 5.0) -> float:
    """The longest time this thread waits for the interpreter while another one finds faces without
    pause, in this process (dlib holds the lock) or in a worker process (the daemon's way)."""
    import threading

    if worker:
        from mediasearch.index.enrichers.faces import _WorkerEngine

        engine: Any = _WorkerEngine()
    else:
        engine = FaceEngine()
    engine.faces(pixels)  # models loaded before timing
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            engine.faces(pixels)

    thread = threading.Thread(target=busy)
    thread.start()
    worst, last, end = 0.0, time.perf_counter(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        time.sleep(0.001)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    stop.set()
    thread.join()
    if worker:
        engine.close()
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=12, help="12 MP photos for the speed rows")
    parser.add_argument("--no-cnn", action="store_true", help="skip the CNN detector's timing")
    parser.add_argument("--stall", action="store_true", help="only the stall of another thread (daemon)")
    args = parser.parse_args()
    if args.stall:
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
        with tempfile.TemporaryDirectory() as tmp:
            pixels = load(big_photos(Path(tmp), 1)[0])
        for worker in (False, True):
            where = "a worker process" if worker else "this process"
            print(f"longest stall of another thread, faces found in {where}: {stall_seconds(pixels, worker):.3f} s")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"load average at start: {os.getloadavg()[0]:.2f} (cores: {cores})")
    rows: list[tuple[str, str]] = []
    if (SHARED / "truth.json").is_file():
        rows += [(k, f"{v:.3f}") for k, v in quality(FaceEngine()).items()]
        with tempfile.TemporaryDirectory() as tmp:
            photos = big_photos(Path(tmp), args.photos)
            one = photos_per_second(photos, 1)
            rows.append(("12 MP photos/s, one process", f"{one:.2f}"))
            if cores > 1:
                many = photos_per_second(photos, cores)
                rows.append((f"12 MP photos/s, {cores} processes", f"{many:.2f} ({many / one:.2f}x)"))
            if not args.no_cnn:
                rows.append(("CNN detector, s per 12 MP photo (one process)", f"{cnn_seconds(photos[:4]):.2f}"))
    else:
        print(f"(the shared photos are absent at {SHARED}: quality and photo speed skipped)")
    rows.append(("grouping 10,000 faces into 1,000 people, s", f"{grouping_seconds():.2f}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
