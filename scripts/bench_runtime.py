"""Where this CPU runs the image tower fastest: the measurement ``index`` makes once per model and machine
(clip/image_runtime.py), made afresh and printed, with each runtime's arithmetic against the cores' peak.

    python scripts/bench_runtime.py                       # ViT-B-32, random weights (same cost as pretrained)
    python scripts/bench_runtime.py --model ViT-L-14
    python scripts/bench_runtime.py --emulate avx2        # as on an AVX2-only CPU (see below)

``--emulate avx2`` runs the measurement in a child whose libraries are capped at AVX2: oneDNN (torch's and
OpenVINO's matrix kernels: ``ONEDNN_MAX_CPU_ISA``, ``OV_CPU_MAX_ISA``), MKL (``MKL_ENABLE_INSTRUCTIONS``)
and torch's own kernels (``ATEN_CPU_CAPABILITY``); bf16 is then not offered. ONNX Runtime's MLAS has no
such cap, so its row is left out of an emulated run. It is an emulation: the clock, caches and memory
are still this machine's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

AVX2_CAPS = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OV_CPU_MAX_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}


def measure(model: str, weights: str, want: str) -> dict[str, object]:
    """In this process: load the model (float32) and measure its image runtimes into a fresh cache."""
    from mediasearch.clip import image_runtime
    from mediasearch.clip.loading import BF16_MIN_PARAMS, image_tower_params, load_model
    from mediasearch.clip.spec import ModelSpec

    cache = Path(os.environ["XDG_CACHE_HOME"])
    loaded = load_model(ModelSpec(model, weights), device="cpu", cache_dir=cache / "models", precision="fp32")
    bf16 = image_runtime.cpu_has_native_bf16() and image_tower_params(loaded.model) >= BF16_MIN_PARAMS
    image_runtime.prepare(loaded, cache / "models", want=want, torch_bf16=bf16)
    verdict = image_runtime.verdict_of(loaded, cache / "models", want=want)
    assert verdict is not None
    from bench import gemm_gflops

    gemm = gemm_gflops(verdict.threads)
    return {**dataclasses.asdict(verdict), "gemm": gemm, "load": os.getloadavg(), "isa": _isa()}


def _isa() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", help="a weights file (default: random weights, labelled as such)")
    parser.add_argument("--emulate", choices=("avx2",), help="cap the libraries' instruction sets (see above)")
    parser.add_argument("--runtime", default="auto", choices=("auto", "openvino", "onnxruntime"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print("RUNTIME-RESULT " + json.dumps(measure(opts.model, opts.child, opts.runtime)), flush=True)
        return
    from bench import cpu_peak_gflops, random_weights

    with tempfile.TemporaryDirectory(prefix="mediasearch-runtime-") as tmp:
        weights = opts.pretrained or str(random_weights(Path(tmp), opts.model))
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"}
        env.update(AVX2_CAPS if opts.emulate == "avx2" else {})
        runtime = "openvino" if opts.emulate and opts.runtime == "auto" else opts.runtime
        command = [sys.executable, __file__, "--model", opts.model, "--runtime", runtime, "--child", weights]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"measurement failed:\n{done.stderr[-3000:]}")
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RUNTIME-RESULT "))
        verdict = json.loads(line.removeprefix("RUNTIME-RESULT "))
    peak, how = cpu_peak_gflops(verdict["threads"])
    gemm = verdict["gemm"]
    picked = f"{verdict['runtime']} {verdict['precision']}"
    base = verdict["rates"].get("torch fp32")
    weights_note = "random weights" if not opts.pretrained else Path(opts.pretrained).name
    emulated = f", emulating {opts.emulate.upper()}-only" if opts.emulate else ""
    load = verdict["load"]
    print(
        f"\n{opts.model} ({weights_note}) on {verdict['cpu']}{emulated}, {verdict['threads']} threads, "
        f"batch of 16, load average {load[0]:.1f}; {verdict['flops'] / 1e9:.2f} GFLOP per image; torch's kernels "
        f"{verdict['isa']}; fp32 GEMM (torch.mm 1536, best of 15) {gemm:.0f} GFLOP/s; reckoned peak {peak:.0f} "
        f"GFLOP/s ({how}, the clock as the OS reports it)\n"
    )
    print("| runtime | images/s | vs torch fp32 | GFLOP/s | of fp32 GEMM | lowest cosine to torch fp32 |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, rate in sorted(verdict["rates"].items(), key=lambda kv: -kv[1]):
        gflops = rate * verdict["flops"] / 1e9
        mark = " (picked)" if name == picked else ""
        ratio = f"{rate / base:.2f}x" if base else ""
        print(
            f"| {name}{mark} | {rate:.1f} | {ratio} | {gflops:.0f} | {gflops / gemm:.2f} | "
            f"{verdict['cosines'][name]:.5f} |"
        )


if __name__ == "__main__":
    main()
