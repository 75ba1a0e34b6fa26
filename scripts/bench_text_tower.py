#!/usr/bin/env python
"""Benchmark: a query's 7 templates on the text tower, by runtime and precision, and the daemon's two sessions.

    python scripts/bench_text_tower.py                       # ViT-B-32, random weights (made once)
    python scripts/bench_text_tower.py --pretrained FILE --runs 30 --workdir /tmp/tower

Loads the model as the daemon does (which caches its text tower and exports it to ONNX, int8 when
faithful), then times the 7-template ensemble of one query on one thread: the plain torch tower
(fp32), the ONNX graph on onnxruntime in fp32 and int8 (what queries run), and on OpenVINO in fp32 and
bf16 (where the CPU has it), each with its lowest cosine to torch fp32 over the 7 texts. Then the
int8 graph's two sessions as the daemon holds them (one thread, all usable cores up to 4) and
``OnnxTower.faster``'s pick, interleaved call by call; and the cost per token on one thread at 1 and
7 texts. Random weights cost what pretrained ones cost: the figures are speeds, the cosines only a
check of the runtimes (a model's own int8 cosine is checked when it is exported).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

QUERY = "a dog running on a sunny beach"


def timings(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    fn()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return seconds[len(seconds) // 2] * 1000, seconds[0] * 1000


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.sum(a * b, axis=1).min())


def runtimes(tower: Any, graph: Path, fp32: Path, tokens: np.ndarray, runs: int) -> None:
    """One thread each: torch, onnxruntime fp32 / int8, OpenVINO fp32 / bf16."""
    import onnxruntime as ort
    import torch

    from mediasearch.clip import onnx_text

    torch.set_num_threads(1)
    embed = onnx_text._Embed(
        tower.weights["token_embedding.weight"].float().numpy(), tower.weights["positional_embedding"].float().numpy()
    )
    x, ends = embed(tokens)
    with torch.inference_mode():
        reference = tower(torch.from_numpy(tokens)).numpy()

    def session(path: Path) -> Callable[[], np.ndarray]:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
        s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: np.asarray(s.run(None, {"x": x, "ends": ends})[0])

    candidates: dict[str, Callable[[], np.ndarray]] = {
        "torch fp32 (the plain tower)": lambda: tower(torch.from_numpy(tokens)).numpy(),
        "onnxruntime fp32": session(fp32),
        "onnxruntime int8 (queries run this)": session(graph),
    }
    try:
        import openvino

        core = openvino.Core()
        for hint in ("f32", "bf16"):
            config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
            request = core.compile_model(str(fp32), "CPU", config).create_infer_request()
            candidates[f"openvino {hint}"] = lambda r=request: np.asarray(r.infer({"x": x, "ends": ends})[0]).copy()
    except Exception as exc:  # no OpenVINO, or a CPU without bf16
        print(f"(openvino: {str(exc).splitlines()[0][:100]})")
    for name, fn in candidates.items():
        with torch.inference_mode():
            p50, best = timings(fn, runs)
            cosine = min_cosine(reference, fn())
        print(f"| {name}, 1 thread | {p50:.1f} / {best:.1f} | {cosine:.5f} |", flush=True)


def sessions(model: Any, tokens: np.ndarray, runs: int) -> None:
    """The daemon's two sessions of the int8 graph and ``faster``'s pick, interleaved call by call."""
    fast = model.fast_text
    out: dict[str, list[float]] = {"one thread": [], "all cores": [], "the faster (its pick)": []}
    calls = (("one thread", fast.__call__), ("all cores", fast.wide), ("the faster (its pick)", fast.faster))
    for _ in range(runs):
        for name, fn in calls:
            started = time.perf_counter()
            fn(tokens)
            out[name].append(time.perf_counter() - started)
    for name, seconds in out.items():
        seconds.sort()
        p50, p95 = seconds[len(seconds) // 2] * 1000, seconds[int(len(seconds) * 0.95)] * 1000
        print(f"| int8 session: {name} | {p50:.1f} / {p95:.1f} | |", flush=True)
    per_token = {k: f"{v * 1000:.3f}" for k, v in fast.cost.items()}
    print(f"(faster's costs at the end, ms per token: {per_token})")
    for texts in (1, 7):
        batch = tokens[:texts]
        count = batch.shape[0] * (int(batch.argmax(axis=1).max()) + 1)
        p50, best = timings(lambda b=batch: fast(b), runs)
        print(f"| int8, one thread, {texts} text(s): ms per token | {p50 / count:.3f} / {best / count:.3f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", help="a weights file (default: random weights, made once in --workdir)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--workdir", help="where the weights and the model cache go (default: temporary)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mediasearch-bench-tower-") as tmp:
        work = Path(opts.workdir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        weights = Path(opts.pretrained) if opts.pretrained else bench.random_weights(work, opts.model)
        from mediasearch.clip import onnx_text, text_tower
        from mediasearch.clip.bpe import BpeTokenizer
        from mediasearch.clip.loading import load_model
        from mediasearch.clip.spec import ModelSpec
        from mediasearch.clip.zeroshot import CLIP_TEMPLATES

        cache = work / "model-cache"
        model = load_model(ModelSpec(opts.model, str(weights)), device="cpu", cache_dir=cache)
        cached, desc = text_tower.cache_paths(cache, model.spec.key())
        graph, _, described = onnx_text.paths(cached)
        if model.fast_text is None:
            sys.exit(f"no int8 text tower for {opts.model} here: {described.read_text()[:300]}")
        meta = json.loads(desc.read_text())
        shape = text_tower.TowerShape(**{k: meta[k] for k in text_tower.TowerShape.__dataclass_fields__})
        from safetensors.torch import load_file

        tower = text_tower.build_tower(shape, load_file(str(cached)))
        fp32 = work / "text-fp32.onnx"
        if not fp32.is_file():
            onnx_text._export_graph(tower, fp32)
        tokens = BpeTokenizer(shape.context_length)([t.format(QUERY) for t in CLIP_TEMPLATES])
        length = int(tokens.argmax(axis=1).max()) + 1
        print(
            f"{opts.model}, {'random weights' if not opts.pretrained else weights.name}; the 7 templates of "
            f"{QUERY!r}: 7 x {length} tokens; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        print("| text tower, 7 templates | ms p50 / best | min cosine to torch fp32 |")
        print("|---|--:|--:|")
        runtimes(tower, graph, fp32, tokens, opts.runs)
        sessions(model, tokens, opts.runs)
        print(f"(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
