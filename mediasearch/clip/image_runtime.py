"""Where a CPU runs the image tower: torch, OpenVINO or ONNX Runtime, picked by measuring once.

torch's CPU kernels leave much of a core's arithmetic unused on a ViT (on 2 AVX2 cores, ViT-B-32 in fp32
reaches ~70 GFLOP/s of ~190); OpenVINO and ONNX Runtime fuse the graph and pick their own kernels. Which
one is fastest depends on the CPU (AVX2, AVX-512, bf16, AMX), the model and the libraries' versions, so
the first load of a model on a machine *measures* it: the image tower (float32 weights, as loaded) is
converted for each runtime that is installed, every candidate embeds the same probe images, a candidate
whose embeddings are not within ``MIN_COSINE`` of torch float32 is out, and the fastest of the rest wins.
The verdict (with every candidate's rate and cosine, for ``scripts/bench.py``) and the winner's converted
tower are kept in the user's cache (see ``runtime_cache``), keyed by the weights, the CPU, the thread
count and the library versions; later loads, in any home, only read them. Candidates:

- ``torch fp32``, and ``torch bf16`` where the CPU runs bf16 natively (the bf16 cast of ``loading``);
- ``openvino fp32`` and, where the CPU has bf16, ``openvino bf16`` (``openvino`` package);
- ``onnxruntime fp32`` with full graph optimisation (``onnxruntime``).

Both read the tower as torch exports it to ONNX (the ``onnx`` package).

No int8 image tower is offered: CLIP's real weights have outlier activations that naive int8 breaks, and
this machine cannot check pretrained weights (nothing is downloaded); see the README, "Performance".
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.cpuinfo import cpu_flags, cpu_has_native_bf16, isa_cap
from mediasearch.errors import ModelError
from mediasearch.fsutil import atomic_write

ClipModel = Any  # clip.model.ClipModel, which names this module's ImageRuntime

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
MIN_COSINE = 0.999  # every image embedding of a candidate against torch float32
PROBE_IMAGES = 16  # the batch every candidate is timed on, best of PROBE_RUNS after a warm-up
PROBE_RUNS = 2
FORMAT = 1
FOLDER = "image-runtime"
_LOG = logging.getLogger(__name__)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Verdict:
    """What the measurement found; ``runtime`` "torch" means the torch model runs as it is."""

    runtime: str
    precision: str
    rates: dict[str, float] = field(default_factory=dict)  # images/s per candidate ("openvino bf16")
    cosines: dict[str, float] = field(default_factory=dict)  # lowest cosine to torch fp32 per candidate
    flops: float = 0.0  # floating-point operations per image (2 per multiply-add)
    threads: int = 1
    cpu: str = ""
    format: int = FORMAT

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class ImageRuntime:
    """The image tower compiled for OpenVINO or ONNX Runtime: float32 N×C×H×W in, N×D out (not
    normalised). Compiled on first use, so that a load which encodes no image pays nothing."""

    def __init__(self, verdict: Verdict, artifact: Path, threads: int) -> None:
        self.verdict, self.artifact, self.threads = verdict, artifact, threads
        self._run: Callable[[np.ndarray], np.ndarray] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.verdict.name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._run is None:
                self._run = _compile(self.verdict.runtime, self.verdict.precision, self.artifact, self.threads)
            return self._run(np.ascontiguousarray(pixels, dtype=np.float32))


def available_runtimes() -> list[str]:
    """The non-torch runtimes this install can convert a tower for (both read the ``onnx`` export)."""
    if importlib.util.find_spec("onnx") is None:
        return []
    return [r for r in ("openvino", "onnxruntime") if importlib.util.find_spec(r) is not None]


def prepare(
    loaded: ClipModel, cache_dir: Path, *, want: str = "auto", threads: int | None = None, torch_bf16: bool = False
) -> ImageRuntime | None:
    """The image runtime for ``loaded`` on this machine (None: torch), measured once and remembered.

    Call it on the float32 model, before any bf16 cast. ``want`` "auto" lets the measurement pick;
    a runtime's name keeps that runtime's candidates (and torch as the fallback if none is faithful).
    ``torch_bf16``: torch would run this model in bf16 (``loading``'s cast): a candidate too.
    """
    import torch

    if want not in RUNTIMES:
        raise ModelError(f"image runtime must be one of {', '.join(RUNTIMES)}, got {want!r}")
    if want == "torch":
        return None
    threads = threads or torch.get_num_threads()
    key = _key(loaded, threads, want)
    folder = runtime_cache(cache_dir) / key
    with _LOCK:
        verdict = read_verdict(folder)
        if verdict is None:
            verdict = _measure_into(loaded, folder, want, threads, torch_bf16)
    if verdict.runtime == "torch":
        return None
    return ImageRuntime(verdict, folder / _ARTIFACT[verdict.runtime], threads)


def runtime_cache(fallback: Path) -> Path:
    """Where verdicts and converted towers are kept: the user's cache (``$XDG_CACHE_HOME/mediasearch``),
    since they belong to the machine and the weights, not to a home (two homes measure once); the
    home's model cache (``fallback``) where that cannot be written."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "mediasearch" / FOLDER
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    return fallback / FOLDER


def read_verdict(folder: Path) -> Verdict | None:
    """The verdict kept in ``folder`` (None when there is none, it is of another format, or the tower
    it names is gone)."""
    try:
        data = json.loads((folder / "verdict.json").read_text(encoding="utf-8"))
        verdict = Verdict.from_json(data)
    except (OSError, ValueError, TypeError):
        return None
    if verdict.format != FORMAT:
        return None
    if verdict.runtime != "torch" and not (folder / _ARTIFACT[verdict.runtime]).is_file():
        return None
    return verdict


def verdict_of(loaded: ClipModel, cache_dir: Path, *, want: str = "auto", threads: int | None = None) -> Verdict | None:
    """The kept verdict for ``loaded`` (float32 weights, as ``prepare`` saw them), or None."""
    import torch

    return read_verdict(runtime_cache(cache_dir) / _key(loaded, threads or torch.get_num_threads(), want))


# -- measuring --------------------------------------------------------------------------------------

_ARTIFACT = {"openvino": "tower.xml", "onnxruntime": "tower.onnx"}


def _measure_into(loaded: ClipModel, folder: Path, want: str, threads: int, torch_bf16: bool) -> Verdict:
    """Convert, check and time every candidate; keep the winner's tower and the verdict in ``folder``."""
    import torch

    started = time.perf_counter()
    work = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        visual = loaded.model.visual
        probes = probe_images(loaded.image_size)
        with torch.inference_mode():
            reference = visual(probes).float().numpy()
        candidates = _candidates(loaded, work, want, threads, probes, torch_bf16)
        cosines: dict[str, float] = {}
        for name, run in list(candidates.items()):
            try:
                cosines[name] = lowest_cosine(reference, run(probes.numpy()))  # and the warm-up
            except Exception as exc:  # a runtime that fails on this model is not a candidate
                _LOG.info("image runtime %s failed: %s", name, exc)
                del candidates[name]
        rates = _rates(candidates, probes.numpy())
        faithful = {n: r for n, r in rates.items() if cosines[n] >= MIN_COSINE}
        best = max(faithful, key=faithful.__getitem__) if faithful else "torch fp32"
        runtime, precision = best.split(" ")
        verdict = Verdict(
            runtime, precision, rates, cosines, image_flops(visual, loaded.image_size), threads, cpu_name()
        )
        for path in list(work.iterdir()):
            if not _keeps(runtime, path):
                path.unlink()
        atomic_write(work / "verdict.json", json.dumps(asdict(verdict), indent=1, sort_keys=True))
        if read_verdict(folder) is None:  # else another process measured meanwhile: its verdict stands
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.replace(work, folder)
        _LOG.info(
            "image tower on %s: %s (%s) in %.1f s",
            verdict.cpu,
            verdict.name,
            ", ".join(f"{n} {r:.1f}/s cos {cosines[n]:.5f}" for n, r in rates.items()),
            time.perf_counter() - started,
        )
        return read_verdict(folder) or Verdict("torch", "fp32", rates, cosines)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _keeps(runtime: str, path: Path) -> bool:
    """Whether ``path`` belongs to the winning runtime's tower (OpenVINO's is an .xml and a .bin; an
    ONNX graph over 2 GB keeps its weights in files of its own)."""
    if runtime == "openvino":
        return path.suffix in (".xml", ".bin")
    return runtime == "onnxruntime" and path.suffix not in (".xml", ".bin")


def _candidates(
    loaded: ClipModel, work: Path, want: str, threads: int, probes: Any, torch_bf16: bool
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import torch

    visual = loaded.model.visual
    bf16 = cpu_has_native_bf16()
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

    def torch_run(module: Any, dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(pixels).to(dtype)).float().numpy()

        return run

    out["torch fp32"] = torch_run(visual, torch.float32)
    if torch_bf16:
        out["torch bf16"] = torch_run(copy.deepcopy(visual).to(torch.bfloat16), torch.bfloat16)
    runtimes = available_runtimes() if want == "auto" else [r for r in available_runtimes() if r == want]
    if runtimes:
        try:
            _export_onnx(visual, probes[:1], work / _ARTIFACT["onnxruntime"])
        except Exception as exc:  # an operator the exporter lacks: torch stays
            _LOG.info("cannot export the image tower: %s", exc)
            runtimes = []
    for runtime in runtimes:
        if runtime == "openvino":
            try:
                import openvino

                openvino.save_model(
                    openvino.Core().read_model(str(work / _ARTIFACT["onnxruntime"])),
                    str(work / _ARTIFACT["openvino"]),
                    compress_to_fp16=False,
                )
            except Exception as exc:
                _LOG.info("cannot convert the image tower for openvino: %s", exc)
                continue
        for precision in ("fp32", "bf16") if runtime == "openvino" and bf16 else ("fp32",):
            try:
                out[f"{runtime} {precision}"] = _compile(runtime, precision, work / _ARTIFACT[runtime], threads)
            except Exception as exc:
                _LOG.info("cannot compile the image tower for %s %s: %s", runtime, precision, exc)
    return out


def _export_onnx(visual: Any, example: Any, path: Path) -> None:
    """Write ``visual`` (float32) as an ONNX graph with a free batch size (what both runtimes read)."""
    import warnings

    import torch

    # with gradients on: under no_grad torch takes its fused attention path, which ONNX cannot export
    with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            visual,
            (example,),
            str(path),
            input_names=["pixels"],
            output_names=["embedding"],
            dynamic_axes={"pixels": {0: "n"}, "embedding": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )


def _compile(runtime: str, precision: str, path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if runtime == "openvino":
        import openvino

        core = openvino.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
        }
        compiled = core.compile_model(str(path), "CPU", {**config, "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()

        def run_openvino(pixels: np.ndarray) -> np.ndarray:
            return np.array(request.infer({0: pixels})[0], dtype=np.float32)

        return run_openvino
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_onnxruntime(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"pixels": pixels})[0], dtype=np.float32)

    return run_onnxruntime


def _rates(candidates: dict[str, Callable[[np.ndarray], np.ndarray]], pixels: np.ndarray) -> dict[str, float]:
    """Images/s of each candidate, best of PROBE_RUNS, the candidates taking turns: on a shared machine
    the load comes and goes, and turns spread it over all of them alike."""
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(PROBE_RUNS):
        for name, run in candidates.items():
            started = time.perf_counter()
            run(pixels)
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: len(pixels) / max(seconds, 1e-9) for name, seconds in best.items()}


def probe_images(size: int, count: int = PROBE_IMAGES) -> Any:
    """Smooth noise with fine grain (like photos, unlike white noise): what the candidates embed."""
    import torch

    gen = torch.Generator().manual_seed(0)
    coarse = torch.randn(count, 3, 7, 7, generator=gen)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (images + 0.3 * torch.randn(images.shape, generator=gen)).contiguous()


def lowest_cosine(reference: np.ndarray, got: np.ndarray) -> float:
    """The lowest cosine between matching rows (0 for rows of another shape, or not finite)."""
    if got.shape != reference.shape or not np.isfinite(got).all():
        return 0.0
    ref = reference.astype(np.float64)
    out = got.astype(np.float64)
    dots = (ref * out).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    return float(np.min(dots / np.maximum(norms, 1e-30)))


def image_flops(visual: Any, size: int) -> float:
    """Floating-point operations per image of ``visual`` (torch's counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # with gradients on: torch's fused attention path (taken without them) is not counted
    with contextlib.suppress(Exception), torch.enable_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            visual(torch.zeros(1, 3, size, size))
        return float(counter.get_total_flops())
    return 0.0


# -- keys -------------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name, the vector extensions that decide its kernels, and any cap on them."""
    name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            head, _, value = line.partition(":")
            if head.strip() == "model name":
                name = value.strip()
                break
    flags = cpu_flags()
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "bf16")
    cap = f" capped at {isa_cap()}" if isa_cap() else ""
    return " ".join([name or os.uname().machine, "[" + ",".join(f for f in wanted if f in flags) + "]"]) + cap


def _key(loaded: ClipModel, threads: int, want: str) -> str:
    """A folder name for this model's weights, on this CPU, with these threads and library versions."""
    import torch

    versions = [f"torch-{torch.__version__}"]
    for package in ("openvino", "onnxruntime", "onnx"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{package}-{version(package)}")
    digest = hashlib.sha256()
    for part in (loaded.spec.key(), cpu_name(), str(threads), want, str(loaded.image_size), *versions):
        digest.update(part.encode() + b"\0")
    with torch.inference_mode():  # the weights as loaded: ~4,096 evenly spaced values of each tensor
        for name, param in loaded.model.visual.state_dict().items():
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)].float().contiguous()
            digest.update(f"{name}{tuple(param.shape)}".encode() + sample.numpy().tobytes())
    return digest.hexdigest()[:24]
