"""The one place that creates models: open_clip names, pretrained tags or files, fine-tune checkpoints,
the device and precision (bf16 on CPUs that run it natively, checked once per model), and the cached text
tower written for cold queries. torch and open_clip are imported inside functions.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediasearch.clip.checkpoint import LinearHead, is_checkpoint
from mediasearch.clip.image_runtime import cpu_has_native_bf16
from mediasearch.clip.model import ClipModel, encode_text_tokens
from mediasearch.clip.spec import DEMO_DIR, ModelSpec
from mediasearch.errors import ModelError, WeightsUnavailableError
from mediasearch.fsutil import atomic_write

if TYPE_CHECKING:
    pass


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MIN_COSINE = 0.999  # bf16 embeddings (images and texts) must match fp32 this closely, else fp32 stays
BF16_MIN_PARAMS = 20_000_000  # smaller image towers gain nothing from bf16 or from threads (overheads dominate)
PRECISION_FILE = "precision.json"
_PRECISION_VERDICTS: dict[str, bool] = {}  # per process, when there is no cache folder to keep them in
_VERDICT_LOCK = threading.Lock()


def resolve_device(requested: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ModelError("--device mps was asked for but MPS is not available")
    return requested


@contextlib.contextmanager
def _quiet_loaders() -> Iterator[None]:
    """open_clip and huggingface_hub log download errors themselves; we report them once, our way."""
    loggers = [logging.getLogger(n) for n in ("", "huggingface_hub", "open_clip")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def default_pretrained(name: str) -> str | None:
    """The pretrained tag used when none is given: the design's default for ViT-B-32, else the first."""
    from mediasearch.settings import DEFAULT_MODEL, DEFAULT_PRETRAINED

    if name == DEFAULT_MODEL:
        return DEFAULT_PRETRAINED
    import open_clip  # only here: importing it costs seconds

    tags = open_clip.list_pretrained_tags_by_model(name)
    return tags[0] if tags else None


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """Fill in the default pretrained tag for a bare open_clip model name; weights files become absolute."""
    if spec.pretrained is not None and os.path.isfile(spec.pretrained):
        return ModelSpec(spec.name, os.path.abspath(spec.pretrained))  # a collection records where it is
    if spec.is_demo or spec.pretrained is not None or spec.name.startswith(("hf-hub:", "local-dir:")):
        return spec
    return ModelSpec(spec.name, default_pretrained(spec.name))


def _create_from_checkpoint(
    spec: ModelSpec, device: str, precision: str, cache_dir: Path | None
) -> tuple[Any, Any, LinearHead | None]:
    """A fine-tune checkpoint: its base architecture, then its weights (and linear head) over it."""
    from mediasearch.clip import checkpoint

    meta, state, head = checkpoint.load(str(spec.pretrained))
    base = str((meta.get("base") or {}).get("name", ""))
    if base != spec.name:
        raise ModelError(f"{spec.pretrained} was fine-tuned from {base!r}: pass --model {base}")
    model, preprocess = _create(ModelSpec(spec.name), device, precision, cache_dir)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {spec.pretrained} does not fit {base}: {str(exc).splitlines()[0]}") from None
    return model, preprocess, head


def _create(spec: ModelSpec, device: str, precision: str, cache_dir: Path | None) -> tuple[Any, Any]:
    import open_clip

    name, pretrained = spec.name, spec.pretrained
    if spec.is_demo:
        name, pretrained = f"local-dir:{DEMO_DIR}", None
    elif not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise ModelError(f"unknown model {name!r}; see open_clip.list_models() for the names")
    try:
        with _quiet_loaders():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained,
                precision=precision,
                device=device,
                cache_dir=str(cache_dir) if cache_dir else None,
            )
    except RuntimeError as exc:
        if "download" in str(exc).lower() or "hub" in str(exc).lower():
            raise WeightsUnavailableError(
                f"could not download weights {pretrained or name!r} for {spec.name} (offline?); "
                "pass a local weights file with --pretrained FILE, or use --model demo"
            ) from None
        raise ModelError(f"cannot create model {spec.describe()}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model {spec.describe()}: {exc}") from None
    return model, preprocess


def load_model(
    spec: ModelSpec,
    *,
    device: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 0,
    precision: str = "auto",
    image_runtime: str = "auto",
) -> ClipModel:
    """Create the model, load its weights and put it in eval mode on the chosen device.

    ``precision`` "auto": fp16 on GPUs; on CPUs with native bf16, bf16 weights when the embeddings
    match fp32 (checked once per model, remembered under ``cache_dir``); else fp32.
    ``image_runtime`` (CPU, precision "auto", with a ``cache_dir``): "auto" runs the image tower on the
    runtime measured fastest and faithful on this machine (see ``image_runtime``), "torch" keeps torch.
    ``batch_size`` 0 picks one for the device.
    """
    import open_clip
    import torch

    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = resolve_device(device)
    spec = resolve_spec(spec)
    if spec.pretrained and (spec.is_demo or _looks_like_path(spec.pretrained)):
        if not os.path.isfile(spec.pretrained):
            raise WeightsUnavailableError(f"weights file not found: {spec.pretrained}")
    created = _create_precision(dev, precision)
    head = None
    if spec.pretrained and is_checkpoint(spec.pretrained):
        model, transform, head = _create_from_checkpoint(spec, dev, created, cache_dir)
    elif spec.is_demo and spec.pretrained:
        raise ModelError("--model demo takes only a `mediasearch finetune` checkpoint as --pretrained")
    else:
        model, transform = _create(spec, dev, created, cache_dir)
    model.eval()
    name = f"local-dir:{DEMO_DIR}" if spec.is_demo else spec.name
    tokenizer = open_clip.get_tokenizer(name, cache_dir=str(cache_dir) if cache_dir else None)
    with torch.inference_mode():
        dim = int(encode_text_tokens(model, tokenizer(["x"]).to(dev)).shape[-1])
    batch = batch_size or default_batch_size(dev, model)
    loaded = ClipModel(spec, dev, model, transform, tokenizer, batch, dim, _image_size(model), head)
    if cache_dir is not None:  # from the weights as loaded, before any cast to bf16
        from mediasearch.clip import text_tower

        text_tower.ensure_cached(loaded, cache_dir)
        if dev == "cpu" and precision == "auto":
            loaded.fast_text, loaded.fast_text_of = _int8_text_tower(loaded.spec, cache_dir), model
    if dev == "cpu" and precision == "auto" and cache_dir is not None:  # measured on the float32 weights
        from mediasearch.clip import image_runtime as runtimes

        fast = runtimes.prepare(loaded, cache_dir, want=image_runtime, torch_bf16=_bf16_pays(model))
        loaded.fast_image, loaded.fast_image_of = fast, model
    elif image_runtime not in ("auto", "torch"):
        raise ModelError(f"--image-runtime {image_runtime} needs the CPU, precision auto and a model cache")
    if dev == "cpu" and precision in ("auto", "bf16"):
        _use_bf16(loaded, cache_dir, force=precision == "bf16")
    loaded.channels_last = _wants_channels_last(model, dev)
    if loaded.channels_last:
        model.visual.to(memory_format=torch.channels_last)
    return loaded


def _int8_text_tower(spec: ModelSpec, cache_dir: Path) -> Any:
    """The cached ONNX text tower when it is int8 (it passed its cosine check), for a query's few
    texts: on 2 cores, 7 texts in ~0.5x the time of the bf16 torch tower on one thread. Its main
    session runs on one thread, the caller's own: no pool of its own to compete with torch's while
    indexing runs; a second one on all usable cores serves while the daemon's lane is idle (see
    ``ClipModel._encode_tokens``)."""
    from mediasearch.clip import onnx_text, text_tower

    weights, _ = text_tower.cache_paths(cache_dir, spec.key())
    model = onnx_text.load_onnx_text_model(spec, weights, threads=1, wide=onnx_text.usable_threads())
    return model.model if model is not None and model.model.int8 else None


def _create_precision(device: str, precision: str) -> str:
    """The precision open_clip creates the model in (on a CPU, bf16 is cast afterwards, if at all)."""
    if precision == "auto":
        return "fp16" if device in ("cuda", "mps") else "fp32"
    if device == "cpu" and precision != "fp32":
        return "fp32"  # fp16 matmuls are slow on CPUs; bf16 is cast after the text-tower cache is saved
    return precision


def default_batch_size(device: str, model: Any) -> int:
    """Images per batch: 32 on a CPU (larger gains nothing there), more on a GPU with room for it."""
    if device != "cuda":
        return 32 if device == "cpu" else 64
    import torch

    visual = getattr(model, "visual", model)
    params = sum(p.numel() for p in visual.parameters())
    batch = 512 if params < 150_000_000 else 256 if params < 500_000_000 else 64
    memory_gib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
    return batch if memory_gib >= 40 else max(32, batch // 4)


def _wants_channels_last(model: Any, device: str) -> bool:
    """NHWC for convolutional image towers (ResNet, ConvNeXt) where the kernels want it: cuDNN's fp16
    and oneDNN's bf16 convolutions. A ViT has one convolution (patches) and gains nothing."""
    import torch

    visual = getattr(model, "visual", None)
    if visual is None or sum(isinstance(m, torch.nn.Conv2d) for m in visual.modules()) < 2:
        return False
    return device == "cuda" or next(visual.parameters()).dtype == torch.bfloat16


def image_tower_params(model: Any) -> int:
    """Parameters of an (open_clip) model's image tower; 0 when it has none."""
    visual = getattr(model, "visual", None)
    return sum(p.numel() for p in visual.parameters()) if visual is not None else 0


def _bf16_pays(model: Any) -> bool:
    """Whether a bf16 cast would be faster here: a CPU with native bf16 and an image tower big enough."""
    return cpu_has_native_bf16() and image_tower_params(model) >= BF16_MIN_PARAMS


def _use_bf16(loaded: ClipModel, cache_dir: Path | None, *, force: bool) -> None:
    """Cast the model to bf16 where that is fast (native bf16, a real model) and faithful (checked)."""
    import torch

    if not force:
        if not _bf16_pays(loaded.model):
            return
        if not _bf16_verdict(loaded, f"{loaded.spec.key()}|torch-{torch.__version__}", cache_dir):
            return
    loaded.model.to(torch.bfloat16)


def _bf16_verdict(loaded: ClipModel, key: str, cache_dir: Path | None) -> bool:
    """Whether bf16 keeps the embeddings at cosine >= BF16_MIN_COSINE (checked once per model)."""
    with _VERDICT_LOCK:
        verdicts = _read_verdicts(cache_dir) if cache_dir is not None else _PRECISION_VERDICTS
        if key in verdicts:
            return bool(verdicts[key])
        cosine = bf16_cosine(loaded)
        verdicts[key] = cosine >= BF16_MIN_COSINE
        logging.getLogger(__name__).info("bf16 weights: cosine %.5f vs fp32 (%s)", cosine, key)
        if cache_dir is not None:
            _write_verdicts(cache_dir, verdicts)
        return verdicts[key]


def bf16_cosine(loaded: ClipModel) -> float:
    """The lowest cosine between the fp32 model's embeddings and a bf16 copy's, over a few
    smooth-noise probe images and a few texts."""
    import torch

    gen = torch.Generator().manual_seed(0)
    size = loaded.image_size
    coarse = torch.randn(4, 3, 7, 7, generator=gen)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    images = images + 0.3 * torch.randn(images.shape, generator=gen)
    tokens = loaded.tokenizer(["a photo of a dog", "a red car parked by the sea at night", "x"])
    model, low = loaded.model, copy.deepcopy(loaded.model).to(torch.bfloat16)
    cosines = []
    with torch.inference_mode():
        dtype = next(model.visual.parameters()).dtype
        for ref, got in (
            (model.encode_image(images.to(dtype)), low.encode_image(images.to(torch.bfloat16))),
            (encode_text_tokens(model, tokens), encode_text_tokens(low, tokens)),
        ):
            cosines.append(torch.nn.functional.cosine_similarity(ref.float(), got.float(), dim=-1).min())
    return float(min(cosines))


def _read_verdicts(cache_dir: Path) -> dict[str, bool]:
    try:
        data = json.loads((cache_dir / PRECISION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): bool(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_verdicts(cache_dir: Path, verdicts: dict[str, bool]) -> None:
    """Best effort: without a writable cache the check simply runs again next time."""
    path = cache_dir / PRECISION_FILE
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(verdicts, indent=1, sort_keys=True))


def _image_size(model: Any) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
