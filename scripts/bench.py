#!/usr/bin/env python
"""Benchmark: indexing throughput against the model's own ceiling, and query latency; one table.

    python scripts/bench.py --quick                 # a few minutes on 2 cores
    python scripts/bench.py                         # the full run (10,000-file re-index, 100k points)
    python scripts/bench.py --device cuda           # GPU; add --model ViT-L-14 for the large model
    python scripts/bench.py --workdir /tmp/bench    # keep the media between runs (made once)
    python scripts/bench.py --quick --only ray      # index on Ray, 1 and 2 encoder actors (the `ray` extra)
    python scripts/bench.py --only search           # the store at 20k and 100k points (scripts/bench_search.py)
    python scripts/bench.py --only ocr              # OCR: 12 MP photos/s with and without text (scripts/bench_ocr.py)

It makes its own media (12 MP and 640 px JPEGs, 720p H.264 MP4s with a keyframe every 2 s) and, unless
``--pretrained FILE`` is given, a weights file of the model's architecture with *random* weights: the
same cost as pretrained ones, so every figure is a speed, never an accuracy. Each measurement runs in
a process of its own, so that its peak RSS is its own and a cold start is cold; a ratio compares
figures of the same run. Files are read from the page cache: decoding, not the disk, is measured.

Rows: the model alone on preprocessed tensors (fp32, and the precision ``load_model`` picks: the
ceiling); the tutorial loop (one image at a time, full decode, fp32) and our end-to-end indexing
(discover, decode, encode, store); video decoding (decord at exact times, PyAV at keyframes) and
video indexing end to end; re-indexing an unchanged tree; a cold ``mediasearch query`` against the
tutorial's load-and-encode script; warm queries through the daemon (``scripts/bench_query.py``) at
10k and 100k points (synthetic ones plus the 640 px photos, which the daemon indexes first, so that
its threads are as they are in real use); then the store at 20k and 100k points: the graph's recall for
text queries, filtered queries, the graph build, memory and disk (`scripts/bench_search.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_query import percentile, start_daemon, timed, wait_enriched  # noqa: E402

QUERY = "a dog running on a sunny beach"
TUTORIAL_QUERY = f"""
import sys, time
import torch, open_clip
model, _, preprocess = open_clip.create_model_and_transforms({{model!r}}, pretrained={{weights!r}})
model.eval()
tokenizer = open_clip.get_tokenizer({{model!r}})
with torch.no_grad():
    text = model.encode_text(tokenizer([{QUERY!r}]))
    text = text / text.norm(dim=-1, keepdim=True)
print(text.shape)
"""


# --------------------------------------------------------------------------------------------- media


def make_photo(path: Path, size: tuple[int, int], seed: int) -> None:
    """A photo-like JPEG: smooth colour fields, a few shapes, sensor-like noise (realistic entropy)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(min(size) // 20, min(size) // 5))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 1)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_photos(folder: Path, count: int, size: tuple[int, int], distinct: int) -> Path:
    """``count`` JPEGs; only ``distinct`` are rendered, the rest are copies (decoding costs the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("*.jpg"))
    if len(have) == count:
        return folder
    for old in have:
        old.unlink()
    for i in range(count):
        path = folder / f"photo_{i:05d}.jpg"
        if i < distinct:
            make_photo(path, size, seed=i)
        else:
            shutil.copyfile(folder / f"photo_{i % distinct:05d}.jpg", path)
    return folder


def make_video(path: Path, seconds: float, seed: int, fps: int = 30, size: tuple[int, int] = (1280, 720)) -> None:
    """A 720p H.264 MP4 with a keyframe every 2 s: moving gradients and a moving block over texture."""
    import av

    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], -1)
    base = (base + rng.integers(0, 30, (height, width, 3))).astype(np.uint8)
    gop = 2 * fps
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = width, height, "yuv420p", gop
        stream.options = {"preset": "ultrafast", "crf": "26", "sc_threshold": "0", "keyint_min": str(gop)}
        for i in range(int(seconds * fps)):
            frame = np.roll(base, i * 4, axis=1)
            x = (i * 7) % width
            frame[height // 3 : height // 2, max(0, x - 60) : x + 60] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(folder: Path, count: int, seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f".made-{count}x{seconds:g}"
    if not stamp.exists():
        for old in folder.glob("*.mp4"):
            old.unlink()
        for i in range(count):
            make_video(folder / f"clip_{i:03d}.mp4", seconds, seed=i)
        stamp.touch()
    return folder


def make_tree(folder: Path, count: int) -> Path:
    """``count`` tiny JPEGs in folders of 500 (re-index cost is per file, not per pixel)."""
    from PIL import Image

    stamp = folder / f".made-{count}"
    if stamp.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"d{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        Image.new("RGB", (64, 48), colour).save(sub / f"img_{i:05d}.jpg", quality=80)
    stamp.touch()
    return folder


def random_weights(workdir: Path, model: str) -> Path:
    """The model's architecture with random weights, saved once: loads like a pretrained file."""
    path = workdir / f"{model}-random.safetensors"
    if not path.exists():
        import open_clip
        from safetensors.torch import save_file

        state = open_clip.create_model(model).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# --------------------------------------------------------------------------------------------- child side


def _settings(home: Path, args: dict[str, Any], **overrides: Any) -> Any:
    from mediasearch.settings import load_settings

    cli = {"home": home, "model": args["model"], "pretrained": args["weights"], "device": args["device"]}
    return load_settings({**cli, **overrides}, env={})


def _load(args: dict[str, Any], precision: str = "auto") -> Any:
    from mediasearch.clip.loading import load_model
    from mediasearch.clip.spec import ModelSpec

    cache = Path(args["workdir"]) / "model-cache"
    return load_model(ModelSpec(args["model"], args["weights"]), device=args["device"], cache_dir=cache,
                      precision=precision)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def child_ceiling(args: dict[str, Any]) -> dict[str, Any]:
    """The model alone on preprocessed tensors, best of ``repeats`` batches."""
    import dataclasses

    import torch

    from mediasearch.clip import image_runtime
    from mediasearch.clip.loading import bf16_cosine

    model = _load(args, args["precision"])
    batch = torch.randn(model.batch_size, 3, model.image_size, model.image_size)
    model.encode_tensors(batch[:2])
    best = min(_timed_encode(model, batch, args["device"]) for _ in range(args["repeats"]))
    out = {"rate": model.batch_size / best, "dtype": str(model.dtype).replace("torch.", ""),
           "batch": model.batch_size}
    out["runtime"] = model.image_runtime
    if args["device"] == "cpu" and args["precision"] == "auto":
        fp32 = _load(args, "fp32")
        if model.dtype == torch.bfloat16:
            out["cosine"] = bf16_cosine(fp32)
        verdict = image_runtime.verdict_of(fp32, Path(args["workdir"]) / "model-cache")
        out["verdict"] = dataclasses.asdict(verdict) if verdict is not None else None
        out["gemm_gflops"] = gemm_gflops(torch.get_num_threads())
    return out


def _timed_encode(model: Any, batch: Any, device: str) -> float:
    started = time.perf_counter()
    model.encode_tensors(batch)
    _sync(device)
    return time.perf_counter() - started


def child_costs(args: dict[str, Any]) -> dict[str, Any]:
    """Core time per image of each side of indexing, measured apart: a decode worker's work (read,
    decode at reduced size, resize and crop to uint8: what ``index`` does per file, on one thread) for
    each folder, and the model's (normalising a batch and encoding it, on all threads). The cap they
    imply on ``cores`` cores is what the pipeline could reach if neither side slowed the other."""
    import torch

    from mediasearch.index.pipeline import _cpu_batch, _preprocess
    from mediasearch.media.decode import load_image

    model = _load(args)
    out: dict[str, Any] = {"decode_ms": {}}
    for name, folder in args["folders"].items():
        files = sorted(Path(folder).glob("*.jpg"))[: args["limit"]]
        best = float("inf")
        for _ in range(args["repeats"]):
            started = time.thread_time()
            for path in files:
                _preprocess(load_image(str(path), target=model.image_size)[0], model)
            best = min(best, (time.thread_time() - started) / len(files))
        out["decode_ms"][name] = best * 1000
    image = load_image(str(files[0]), target=model.image_size)[0]
    pixels = [_preprocess(image, model) for _ in range(model.batch_size)]
    model.encode_tensors(_cpu_batch(pixels, model))
    best = float("inf")
    for _ in range(args["repeats"]):
        started = time.process_time()
        model.encode_tensors(_cpu_batch(pixels, model))
        best = min(best, (time.process_time() - started) / model.batch_size)
    out["model_ms"], out["threads"] = best * 1000, torch.get_num_threads()
    return out


def child_tutorial(args: dict[str, Any]) -> dict[str, Any]:
    """The open_clip README loop: open, convert, preprocess, encode one image at a time, fp32."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(args["model"], pretrained=args["weights"])
    model = model.eval().to(args["device"])
    files = sorted(Path(args["folder"]).glob("*.jpg"))[: args["limit"]]
    started = time.perf_counter()
    with torch.no_grad():
        for path in files:
            image = preprocess(Image.open(path).convert("RGB")).unsqueeze(0).to(args["device"])
            features = model.encode_image(image)
            features /= features.norm(dim=-1, keepdim=True)
            features.cpu()
    return {"rate": len(files) / (time.perf_counter() - started)}


def child_index(args: dict[str, Any]) -> dict[str, Any]:
    """``mediasearch index`` in process (model loaded first): what the indexing pipeline sustains.

    With ``ceiling``, each run is preceded by the model alone on two batches, so that the ratio of the
    two compares figures taken under the same load (other users of a shared machine come and go).
    """
    import torch

    from mediasearch.index.plan import forget
    from mediasearch.index.runner import IndexOptions, index_paths
    from mediasearch.library import home as library

    overrides = {"model": "demo", "pretrained": None} if args.get("demo") else {}
    settings = _settings(Path(args["home"]), args, **overrides)
    opened = library.open_for_index(settings)
    model, ceiling = opened.model, 0.0
    batch = torch.randn(model.batch_size, 3, model.image_size, model.image_size)
    try:
        runs = []
        for i in range(args.get("runs", 1)):
            if args.get("fresh") and i:
                forget(opened.store, args["folder"])  # every run indexes every file again
            if args.get("ceiling"):
                best = min(_timed_encode(model, batch, args["device"]) for _ in range(2))
                ceiling = max(ceiling, model.batch_size / best)
            summary = index_paths([args["folder"]], model, opened.store, IndexOptions(**args["options"]))
            runs.append(summary.to_json())
        library.finish_index(settings, opened, runs[-1])
    finally:
        opened.close()
    keys = ("scanned", "added", "unchanged", "failed", "frames", "seconds")
    return {"runs": [{k: r[k] for k in keys} for r in runs], "ceiling": ceiling}


def child_video_decode(args: dict[str, Any]) -> dict[str, Any]:
    """Decoding alone (``sample_video``), exact times and keyframes alternately, best of ``repeats`` each."""
    from mediasearch.media.decode import sample_video

    files = sorted(Path(args["folder"]).glob("*.mp4"))
    out: dict[str, Any] = {}
    for _ in range(args["repeats"]):
        for name, exact in (("exact", True), ("keyframes", False)):
            started, cpu = time.perf_counter(), time.process_time()
            frames = sum(len(sample_video(str(f), interval=2.0, exact=exact).frames) for f in files)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            best = out.setdefault(name, {"seconds": float("inf"), "cpu": float("inf"), "frames": frames})
            best["seconds"], best["cpu"] = min(best["seconds"], seconds), min(best["cpu"], cpu)
    return out


def _clustered(rng: np.random.Generator, centres: np.ndarray, count: int, spread: float) -> np.ndarray:
    """Unit vectors around random centres: a library's embeddings are grouped by what they show
    (unlike independent random vectors, which are all about equally far apart)."""
    dim = centres.shape[1]
    vectors = centres[rng.integers(0, len(centres), count)]
    vectors = vectors + spread * rng.standard_normal((count, dim)).astype(np.float32) / np.sqrt(dim)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def child_store(args: dict[str, Any]) -> dict[str, Any]:
    """A home whose index holds ``points`` synthetic image points (unit vectors around 1,000 centres),
    with the search graph the daemon builds above ``EXACT_SEARCH_MAX_POINTS``; and the graph's recall
    of the exact scan's top 10 for queries near the points."""
    import threading

    from mediasearch.library import home as library
    from mediasearch.library.local import LocalLibrary
    from mediasearch.store.base import EXACT_SEARCH_MAX_POINTS, PointIn, point_id

    settings = _settings(Path(args["home"]), args)
    opened = library.open_for_index(settings)
    rng = np.random.default_rng(0)
    dim = opened.model.dim
    centres = _clustered(rng, rng.standard_normal((1000, dim)).astype(np.float32), 1000, 0.0)
    out: dict[str, Any] = {"points": args["points"]}
    try:
        for start in range(0, args["points"], 2000):
            count = min(2000, args["points"] - start)
            vectors = _clustered(rng, centres, count, 0.6)
            points = [PointIn(point_id(f"/bench/img_{start + i}.jpg", None), vectors[i], _payload(start + i))
                      for i in range(count)]
            opened.store.upsert(points)
        opened.store.flush()
        library.finish_index(settings, opened, {"added": args["points"]})
        if args["points"] > EXACT_SEARCH_MAX_POINTS:
            lib = LocalLibrary(settings, index_side=opened)
            started = time.perf_counter()
            lib.build_search_index(threading.Event())  # as the daemon does: recorded, so it is not redone
            out["graph_seconds"] = time.perf_counter() - started
            queries = _clustered(rng, centres, 50, 0.6)
            found = [(lib.index_side.store.search(q, 10, exact=True), lib.index_side.store.search(q, 10))
                     for q in queries]
            out["recall"] = float(np.mean([len({r.id for r in a} & {r.id for r in b}) / 10 for a, b in found]))
    finally:
        opened.close()
    return out


def _payload(i: int) -> dict[str, Any]:
    path = f"/bench/d{i // 1000:03d}/img_{i}.jpg"
    return {"path": path, "dirs": ["/", "/bench", f"/bench/d{i // 1000:03d}"], "root": "/bench", "kind": "image",
            "size": 1000, "mtime": 1.7e9 + i, "fingerprint": f"{i:016x}", "frames_total": 1, "tags": [],
            "date": 1.7e9 + i, "timestamp": None}


def child_media(args: dict[str, Any]) -> dict[str, Any]:
    """Every file the selected steps need (made once per work folder) and the weights file."""
    work = Path(args["workdir"])
    if "images" in args["steps"]:
        make_photos(work / "photos-12mp", args["images_12mp"], (4000, 3000), distinct=8)
        make_photos(work / "photos-640", args["images_640"], (640, 480), distinct=64)
    if "ray" in args["steps"]:
        make_photos(work / "photos-640", args["images_640"], (640, 480), distinct=64)
    if "video" in args["steps"]:
        make_videos(work / "videos-720p", args["videos"], args["video_seconds"])
    if "reindex" in args["steps"]:
        make_tree(work / f"tree-{args['reindex_files']}", args["reindex_files"])
    weights = args["pretrained"] or str(random_weights(work, args["model"]))
    return {"weights": str(Path(weights).resolve())}


class _StageClock:
    """A progress bar that times the encode stage alone: from its start (Ray: once the actors have
    loaded the model) to its end."""

    def start(self, files: int) -> None:
        self.started = time.perf_counter()

    def advance(self, files: int = 0, frames: int = 0) -> None:
        pass

    def finish(self) -> None:
        self.seconds = time.perf_counter() - self.started


def child_ray(args: dict[str, Any]) -> dict[str, Any]:
    """``index`` of one folder into a fresh home: sequentially, then on a local Ray (``num_cpus``) with
    each count of encoder actors; the whole run, and the encode stage once the actors are up."""
    import ray

    from mediasearch import Library
    from mediasearch.lane import tune_openmp

    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    tune_openmp(env)  # as index --ray's own local Ray does
    ray.init(num_cpus=args["num_cpus"], include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    rates: dict[str, float] = {}
    stage: dict[str, float] = {}
    warm = Path(args["workdir"]) / "ray-warmup"  # Ray's worker processes start (and import torch) once
    warm.mkdir(exist_ok=True)
    for photo in sorted(Path(args["folder"]).glob("*.jpg"))[:24]:
        shutil.copyfile(photo, warm / photo.name)
    try:
        for actors in [-1, 0, *args["actors"]]:
            home = Path(tempfile.mkdtemp(prefix="home-", dir=args["workdir"]))
            with Library.open(settings=_settings(home, args), use_daemon=False) as lib:
                lib.load_model()
                clock = _StageClock()
                folder = str(warm) if actors < 0 else args["folder"]
                report = lib.index([folder], ray=bool(actors), ray_actors=max(actors, 1), progress=clock)
            shutil.rmtree(home, ignore_errors=True)
            if actors < 0:
                continue
            assert report.added == args["count"] and not report.failed, report.to_json()
            rates[str(actors)] = report.added / report.seconds
            stage[str(actors)] = report.added / clock.seconds
    finally:
        ray.shutdown()
    return {"rates": rates, "stage": stage}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "media": child_media,
    "ceiling": child_ceiling,
    "costs": child_costs,
    "tutorial": child_tutorial,
    "index": child_index,
    "video_decode": child_video_decode,
    "store": child_store,
    "ray": child_ray,
}


def run_child(name: str, args: dict[str, Any]) -> None:
    if name != "tutorial":  # our code runs as the CLI runs it; the tutorial as it is written
        from mediasearch.lane import tune_openmp

        tune_openmp()
    result = CHILDREN[name](args)
    result["rss_mib"] = peak_rss_mib()
    print("BENCH-RESULT " + json.dumps(result), flush=True)


def peak_rss_mib() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: on Linux that starts from the parent's RSS at fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------- parent side


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    if BENCH_CACHE:  # the image runtime is measured afresh in each bench work folder, under this run's load
        env["XDG_CACHE_HOME"] = BENCH_CACHE[0]
    return env


BENCH_CACHE: list[str] = []


def gemm_gflops(threads: int, size: int = 1536, runs: int = 15) -> float:
    """What this machine's float32 matrix product reaches on ``threads`` threads (torch.mm):
    the measured reference beside the reckoned peak, whose clock a virtual machine may report low. Best of
    many short runs: on a shared machine one of them catches the cores free."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def cpu_peak_gflops(cores: int) -> tuple[float, str]:
    """The cores' float32 peak: cores x clock x FLOPs per cycle of their widest FMA (two FMA units per core
    assumed: 64 with AVX-512, 32 with AVX2, 8 without; AMD's Zen 4, family 25, runs AVX-512 on 256-bit
    units: 32), and how it was reckoned."""
    text = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""

    def field(name: str) -> str:
        return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.split(":")[0].strip() == name), "")

    flags = set(field("flags").split())
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    if field("vendor_id") == "AuthenticAMD" and field("cpu family") == "25":
        per_cycle = min(per_cycle, 32)
    try:
        ghz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        mhz = [float(ln.split(":", 1)[1]) for ln in text.splitlines() if ln.startswith("cpu MHz")]
        ghz = (mhz[0] if mhz else 0.0) / 1000
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


def wait_rss(proc: subprocess.Popen[Any]) -> tuple[int, float]:
    """Wait for a child: (exit status, its peak RSS in MiB, which counts this small process's RSS at
    fork as a floor: the media and the models are made in children to keep it small)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def child(name: str, **args: Any) -> dict[str, Any]:
    """Run one measurement in a fresh process and return its result."""
    command = [sys.executable, __file__, "--child", name, json.dumps(args, default=str)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), text=True)
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"bench step {name} failed:\n{err[-3000:]}")
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH-RESULT "))
    return dict(json.loads(line.removeprefix("BENCH-RESULT ")))


TIMER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - started
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"code": done.returncode, "seconds": seconds, "rss": rss, "err": done.stderr.decode()[-2000:]}))
"""


def timed_process(command: Sequence[str]) -> tuple[float, float]:
    """(wall seconds from process start to exit, peak RSS MiB) of a command that must succeed.

    A small wrapper process starts it and waits: the command's ``ru_maxrss`` then starts from the
    wrapper's few MiB, not from this process's RSS at fork.
    """
    out = subprocess.run([sys.executable, "-c", TIMER, *command], capture_output=True, text=True, env=_env())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        sys.exit(f"{' '.join(command[:6])} ... failed: {result['err']}")
    return float(result["seconds"]), float(result["rss"])


@dataclass
class Row:
    what: str
    value: str
    unit: str
    ratio: str = ""
    rss: float | None = None


class Table:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, what: str, value: float | str, unit: str, ratio: str = "", rss: float | None = None) -> None:
        shown = value if isinstance(value, str) else (f"{value:,.1f}" if value < 1000 else f"{value:,.0f}")
        self.rows.append(Row(what, shown, unit, ratio, rss))
        print(f"  {what}: {shown} {unit} {ratio}", file=sys.stderr, flush=True)

    def print(self, header: str) -> None:
        print(f"\n{header}\n")
        print(f"| {'measurement':<56} | {'value':>13} | {'unit':<12} | {'ratio / note':<46} | {'peak RSS':>9} |")
        print(f"|{'-' * 58}|{'-' * 14}:|{'-' * 14}|{'-' * 48}|{'-' * 10}:|")
        for r in self.rows:
            rss = f"{r.rss:,.0f} MiB" if r.rss is not None else ""
            print(f"| {r.what:<56} | {r.value:>13} | {r.unit:<12} | {r.ratio:<46} | {rss:>9} |")


def bench_images(opts: argparse.Namespace, base: dict[str, Any], table: Table) -> None:
    work = Path(opts.workdir)
    big, small = work / "photos-12mp", work / "photos-640"
    fp32 = child("ceiling", **base, precision="fp32", repeats=opts.repeats)
    auto = child("ceiling", **base, precision="auto", repeats=opts.repeats)
    table.add("model only, fp32 (preprocessed tensors)", fp32["rate"], "images/s", f"batch {fp32['batch']}",
              fp32["rss_mib"])
    runtime_rows(table, auto)
    note = f"{auto['runtime']}, batch {auto['batch']}" + (f", cosine {auto['cosine']:.5f}" if "cosine" in auto else "")
    ceiling = auto["rate"]
    tutorial = child("tutorial", **base, folder=str(big), limit=opts.tutorial_images)
    rows = []
    for name, folder, count in (("12 MP", big, opts.images_12mp), ("640 px", small, opts.images_640)):
        home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
        result = child("index", **base, home=str(home), folder=str(folder), options={}, runs=opts.repeats,
                       fresh=True, ceiling=True)
        rows.append((name, count, count / min(r["seconds"] for r in result["runs"]), result["rss_mib"]))
        ceiling = max(ceiling, result["ceiling"])
        if name == "640 px":
            opts.query_home = home
        else:
            shutil.rmtree(home, ignore_errors=True)
    again = child("tutorial", **base, folder=str(big), limit=opts.tutorial_images)  # the load changes: best of 2
    tutorial_rate = max(tutorial["rate"], again["rate"])
    table.add("tutorial loop, 12 MP JPEG (1 at a time, fp32; best of 2)", tutorial_rate, "images/s", "",
              max(tutorial["rss_mib"], again["rss_mib"]))
    table.add(f"model only, {auto['dtype']}: the ceiling", ceiling, "images/s", note + "; best of all samples",
              auto["rss_mib"])
    caps = bench_costs(opts, base, table, {"12 MP": big, "640 px": small}, ceiling)
    for name, count, rate, rss in rows:
        ratio = f"{rate / caps[name]:.2f}x cap, {rate / ceiling:.2f}x ceiling"
        if name == "12 MP":
            ratio += f", {rate / tutorial_rate:.1f}x tutorial"
        table.add(f"end to end (index), {name} JPEG, {count} files", rate, "images/s", ratio, rss)


def runtime_rows(table: Table, auto: dict[str, Any]) -> None:
    """The image runtime measurement of the first load (clip/image_runtime.py): each candidate's rate on
    the probe batch, its arithmetic against the cores' peak, its cosine to torch fp32, and the pick."""
    verdict = auto.get("verdict")
    if not verdict:
        return
    peak, how = cpu_peak_gflops(verdict["threads"])
    gemm = auto.get("gemm_gflops") or 0.0
    base = verdict["rates"].get("torch fp32")
    for name, rate in sorted(verdict["rates"].items(), key=lambda kv: -kv[1]):
        gflops = rate * verdict["flops"] / 1e9
        ratio = f"{rate / base:.2f}x torch fp32, " if base else ""
        ratio += f"{gflops:.0f} GFLOP/s = {gflops / gemm:.2f} of fp32 GEMM" if gemm else f"{gflops:.0f} GFLOP/s"
        picked = " (picked)" if name == f"{verdict['runtime']} {verdict['precision']}" else ""
        table.add(f"image runtime {name}{picked}, cosine {verdict['cosines'][name]:.5f}", rate, "images/s", ratio)
    table.add("fp32 GEMM of the cores (torch.mm 1536, measured)", gemm, "GFLOP/s",
              f"{verdict['flops'] / 1e9:.2f} GFLOP per image")
    table.add(f"fp32 peak of the cores, reckoned ({how})", peak, "GFLOP/s", "clock as the OS reports it")


def bench_costs(
    opts: argparse.Namespace, base: dict[str, Any], table: Table, folders: dict[str, Path], ceiling: float
) -> dict[str, float]:
    """Rows for the decode and model costs per image and the cap they imply, per folder."""
    costs = child("costs", **base, folders={k: str(v) for k, v in folders.items()}, limit=opts.cost_images,
                  repeats=opts.repeats)
    cores, model_ms = len(os.sched_getaffinity(0)), costs["model_ms"]
    # The cores this process really had: the model's core time per image times its best rate (on an
    # idle machine, all of them; on a shared one, what the other users left).
    had = min(cores, model_ms * ceiling / 1000)
    table.add("model cost per image (core time of a batch on all threads)", model_ms, "ms",
              f"{costs['threads']} threads; at the ceiling it had {had:.2f} of {cores} cores", costs["rss_mib"])
    caps = {}
    for name, decode_ms in costs["decode_ms"].items():
        caps[name] = 1000 * had / (decode_ms + model_ms)
        table.add(f"decode cost per image, {name} JPEG (1 core: read, decode, resize)", decode_ms, "ms", "")
        table.add(f"cap, {name} JPEG: {had:.2f} cores / (decode + model)", caps[name], "images/s",
                  f"{caps[name] / ceiling:.2f}x ceiling")
    return caps


def bench_video(opts: argparse.Namespace, base: dict[str, Any], table: Table) -> None:
    folder = Path(opts.workdir) / "videos-720p"
    total = opts.videos * opts.video_seconds
    decode = child("video_decode", **base, folder=str(folder), repeats=opts.repeats + 1)
    exact, keys = decode["exact"], decode["keyframes"]
    exact_rate, key_rate = total / exact["seconds"], total / keys["seconds"]
    table.add("video decode only, decord, exact times", exact_rate, "video-s/s",
              f"{exact['frames']} frames, {exact['cpu']:.2f} CPU-s", decode["rss_mib"])
    table.add("video decode only, PyAV keyframes (the default)", key_rate, "video-s/s",
              f"{key_rate / exact_rate:.1f}x decord, {exact['cpu'] / keys['cpu']:.1f}x less CPU", decode["rss_mib"])
    home = Path(tempfile.mkdtemp(prefix="home-", dir=opts.workdir))
    result = child("index", **base, home=str(home), folder=str(folder), options={}, runs=opts.repeats, fresh=True,
                   ceiling=True)
    run = min(result["runs"], key=lambda r: float(r["seconds"]))
    frame_rate = run["frames"] / run["seconds"]
    table.add(f"video end to end (index), 720p, 1 frame / 2 s, {opts.videos} files", total / run["seconds"],
              "video-s/s", f"{frame_rate:.1f} frames/s = {frame_rate / result['ceiling']:.2f}x ceiling then",
              result["rss_mib"])
    shutil.rmtree(home, ignore_errors=True)


def bench_reindex(opts: argparse.Namespace, base: dict[str, Any], table: Table) -> None:
    tree = Path(opts.workdir) / f"tree-{opts.reindex_files}"
    home = Path(tempfile.mkdtemp(prefix="home-", dir=opts.workdir))
    result = child("index", **base, home=str(home), folder=str(tree), options={}, demo=True, runs=1 + opts.repeats)
    first, again = result["runs"][0], result["runs"][1:]
    best = min(r["seconds"] for r in again)
    assert all(r["unchanged"] == opts.reindex_files for r in again), again
    table.add(f"re-index, {opts.reindex_files:,} unchanged files", best, "s",
              f"{opts.reindex_files / best:,.0f} files/s (first index {first['seconds']:.0f} s, demo model)",
              result["rss_mib"])
    shutil.rmtree(home, ignore_errors=True)


def bench_cold_query(opts: argparse.Namespace, base: dict[str, Any], table: Table) -> None:
    home = opts.query_home
    script = Path(opts.workdir) / "tutorial_query.py"
    script.write_text(TUTORIAL_QUERY.format(model=base["model"], weights=base["weights"]))
    cli = [sys.executable, "-m", "mediasearch", "--home", str(home), "query", QUERY, "--json"]
    timed_process(cli)  # warms the page cache (and writes nothing: the text cache was made at index time)
    ours = [timed_process(cli) for _ in range(opts.repeats)]
    tutorial = [timed_process([sys.executable, str(script)]) for _ in range(opts.repeats)]
    best, best_tut = min(t for t, _ in ours), min(t for t, _ in tutorial)
    table.add("tutorial load-and-encode (new process, 1 text)", best_tut, "s", "", max(r for _, r in tutorial))
    onnx = [json.loads(p.read_text()) for p in (Path(home) / "cache" / "models").glob("*.onnx.json")]
    tower = "torch text tower" if not onnx or onnx[0].get("unusable") else (
        "int8 ONNX text tower" if onnx[0]["int8"] else "fp32 ONNX text tower")
    table.add("cold CLI query, text, no daemon (process start..hits)", best, "s",
              f"{best / best_tut:.2f}x tutorial; {tower}", max(r for _, r in ours))
    if onnx and "int8_cosine" in onnx[0]:
        table.add("int8 ONNX text tower: min cosine to fp32 (checked once)", f"{onnx[0]['int8_cosine']:.5f}", "",
                  f"kept if >= 0.995: {'kept' if onnx[0]['int8'] else 'fp32 graph used'}")


def bench_warm_query(opts: argparse.Namespace, base: dict[str, Any], table: Table) -> None:
    os.environ["MEDIASEARCH_PRETRAINED"] = base["weights"]  # the daemon's model: the random weights file
    photos = Path(opts.workdir) / "photos-640"
    for points in opts.points:
        home = Path(tempfile.mkdtemp(prefix="home-", dir=opts.workdir))
        made = child("store", **base, home=str(home), points=points - opts.images_640)
        if "recall" in made:
            table.add(f"search graph (HNSW), {points:,} points: recall@10 of the exact scan", f"{made['recall']:.3f}",
                      "", f"50 queries near the points; built in {made['graph_seconds']:.0f} s", None)
        from mediasearch.library import roots

        roots.record(home, [str(photos)])  # a library root, as `mediasearch index` on the machine makes it
        proc, client = start_daemon(home, base["model"], base["device"])
        try:
            client.index([str(photos)], {})  # a daemon that has indexed: its threads as in real use
            post = client.call
            wait_enriched(post)  # ... and has finished the OCR and faces pass it runs after that
            post("POST", "/query", {"text": QUERY})
            new = [timed(post, "POST", "/query", {"text": f"{QUERY} {i}"}) for i in range(opts.warm_runs)]
            raw = [timed(post, "POST", "/query", {"text": f"{QUERY} raw {i}", "raw": True})
                   for i in range(opts.warm_runs)]
            same = [timed(post, "POST", "/query", {"text": QUERY}) for _ in range(opts.warm_runs)]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, rss = wait_rss(proc)
        rows = (("new text (7-template ensemble)", new), ("new text, --raw (1 text)", raw), ("repeated text", same))
        for label, times in rows:
            p50, p95 = percentile(times, 0.5) * 1000, percentile(times, 0.95) * 1000
            table.add(f"warm query via daemon, {points:,} points, {label}", f"{p50:.1f} / {p95:.1f}",
                      "ms p50 / p95", f"{len(times)} queries, after indexing {opts.images_640} photos", rss)
        shutil.rmtree(home, ignore_errors=True)


def bench_ray(opts: argparse.Namespace, base: dict[str, Any], table: Table) -> None:
    """Indexing the 640 px photos on a local Ray with 1 and 2 encoder actors, beside the sequential indexer."""
    folder = Path(opts.workdir) / "photos-640"
    cpus = os.cpu_count() or 1
    result = child("ray", **base, folder=str(folder), count=opts.images_640, actors=[1, 2], num_cpus=cpus)
    rates, stage = result["rates"], result["stage"]
    table.add(f"index, sequential, 640 px JPEG, {opts.images_640} files", rates["0"], "images/s",
              f"encode stage {stage['0']:.1f} images/s", result["rss_mib"])
    for actors in ("1", "2"):
        table.add(f"index --ray, {actors} encoder actor(s), {cpus} CPUs, whole run", rates[actors], "images/s",
                  f"{rates[actors] / rates['0']:.2f}x sequential (actors load the model)")
        table.add(f"index --ray, {actors} encoder actor(s), once the actors are up", stage[actors], "images/s",
                  f"{stage[actors] / stage['0']:.2f}x sequential's encode stage")


def bench_search(opts: argparse.Namespace) -> None:
    """The store at library size (text-query recall of the graph, filtered queries, graph build, memory,
    disk) with the demo model's embeddings: ``scripts/bench_search.py``, which prints its own table."""
    script = Path(__file__).resolve().parent / "bench_search.py"
    points = ["20001"] if opts.quick else ["20001", "100000"]
    subprocess.run([sys.executable, str(script), "--points", *points, "--workdir", opts.workdir], check=True)


def bench_ocr(opts: argparse.Namespace) -> None:
    """OCR speed (12 MP photos with and without text, where the time goes) and recall: ``scripts/bench_ocr.py``,
    which prints its own table. Indexing rows above run the CLIP pass alone: OCR follows it, apart."""
    script = Path(__file__).resolve().parent / "bench_ocr.py"
    subprocess.run([sys.executable, str(script), *(["--quick"] if opts.quick else [])], check=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 cores")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", help="a weights file (default: random weights, labelled as such)")
    parser.add_argument("--workdir", help="where media and homes go (default: a temporary folder)")
    parser.add_argument("--images-12mp", type=int)
    parser.add_argument("--images-640", type=int)
    parser.add_argument("--tutorial-images", type=int)
    parser.add_argument("--cost-images", type=int, help="files per folder whose decode cost is timed")
    parser.add_argument("--videos", type=int)
    parser.add_argument("--video-seconds", type=float)
    parser.add_argument("--reindex-files", type=int)
    parser.add_argument("--points", type=int, nargs="+")
    parser.add_argument("--warm-runs", type=int)
    parser.add_argument("--repeats", type=int, help="best of N for the timed steps")
    parser.add_argument("--only", nargs="+", choices=("images", "video", "reindex", "query", "search", "ray", "ocr"))
    opts = parser.parse_args()
    quick = {"images_12mp": 32, "images_640": 128, "tutorial_images": 12, "cost_images": 16, "videos": 2,
             "video_seconds": 30.0,
             "reindex_files": 2000, "points": [10_000], "warm_runs": 20, "repeats": 2}
    full = {"images_12mp": 96, "images_640": 384, "tutorial_images": 24, "cost_images": 48, "videos": 4,
            "video_seconds": 60.0,
            "reindex_files": 10_000, "points": [10_000, 100_000], "warm_runs": 50, "repeats": 3}
    if opts.device == "cuda":
        full.update(images_12mp=1000, images_640=5000, tutorial_images=100, videos=8)
    for key, value in (quick if opts.quick else full).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    return opts


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        run_child(sys.argv[2], json.loads(sys.argv[3]))
        return
    opts = parse_args()
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-") as tmp:
        opts.workdir = str(Path(opts.workdir or tmp).resolve())
        Path(opts.workdir).mkdir(parents=True, exist_ok=True)
        run(opts)


def run(opts: argparse.Namespace) -> None:
    print(f"making media and weights under {opts.workdir} ...", file=sys.stderr)
    BENCH_CACHE[:] = [str(Path(opts.workdir) / "user-cache")]
    steps = opts.only or ["images", "video", "reindex", "query", "search", "ocr"]
    sizes = {k: getattr(opts, k) for k in ("images_12mp", "images_640", "videos", "video_seconds", "reindex_files")}
    made = child("media", workdir=opts.workdir, model=opts.model, pretrained=opts.pretrained,
                 steps=steps + (["images"] if "query" in steps else []), **sizes)
    weights = Path(made["weights"])
    base = {"model": opts.model, "weights": str(weights), "device": opts.device, "workdir": opts.workdir}
    table = Table()
    started = time.perf_counter()
    load = os.getloadavg()
    if "images" in steps or "query" in steps:
        bench_images(opts, base, table)
    if "video" in steps:
        bench_video(opts, base, table)
    if "reindex" in steps:
        bench_reindex(opts, base, table)
    if "query" in steps:
        bench_cold_query(opts, base, table)
        bench_warm_query(opts, base, table)
    if "ray" in steps:  # only when asked: it needs the `ray` extra
        bench_ray(opts, base, table)
    if "search" in steps:
        bench_search(opts)
    if "ocr" in steps:
        bench_ocr(opts)
    weights_note = "random weights (same cost as pretrained)" if not opts.pretrained else f"weights {weights.name}"
    end_load = os.getloadavg()
    table.print(
        f"mediasearch bench: {opts.model}, {weights_note}, device {opts.device}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} at start / {end_load[0]:.1f} at end, {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
