"""The model layer: any open_clip model behind one small interface.

``encode_images`` and ``encode_texts`` return L2-normalised float32 arrays; normalisation happens
here and nowhere else. torch and open_clip are imported inside functions so that the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mediasearch import lane
from mediasearch.checkpoint import LinearHead, is_checkpoint
from mediasearch.errors import ModelError, WeightsUnavailableError

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).parent / "demo_model"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MIN_COSINE = 0.999  # bf16 embeddings (images and texts) must match fp32 this closely, else fp32 stays
BF16_MIN_PARAMS = 20_000_000  # smaller image towers gain nothing from bf16 or from threads (overheads dominate)
PRECISION_FILE = "precision.json"
_PRECISION_VERDICTS: dict[str, bool] = {}  # per process, when there is no cache folder to keep them in
_VERDICT_LOCK = threading.Lock()
SMALL_TEXT_TOKENS = 512  # text batches up to this many tokens run on one thread (see few_threads)
_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 0}


class Embedder(Protocol):
    """What the pipeline needs from a model; tests may pass any object with this shape."""

    spec: ModelSpec
    dim: int

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: an open_clip name plus a pretrained tag, file or nothing."""

    name: str
    pretrained: str | None = None

    @property
    def is_demo(self) -> bool:
        return self.name == DEMO_NAME

    def key(self) -> str:
        """A stable identity for the weights; the store keys collections on it."""
        if self.is_demo and self.pretrained:  # a fine-tune checkpoint of the demo model
            return f"demo:file-{file_digest(Path(self.pretrained))}"
        if self.is_demo:
            return f"demo:{file_digest(DEMO_DIR / 'open_clip_model.safetensors')}"
        if self.name.startswith("hf-hub:"):
            return self.name
        if self.name.startswith("local-dir:"):
            found = _checkpoint_in(Path(self.name.split(":", 1)[1]))
            return f"{self.name}:{file_digest(found) if found else 'random'}"
        if self.pretrained and os.path.isfile(self.pretrained):
            return f"{self.name}:file-{file_digest(Path(self.pretrained))}"
        return f"{self.name}:{self.pretrained or 'random'}"

    def describe(self) -> str:
        if (self.is_demo and not self.pretrained) or self.name.startswith("hf-hub:"):
            return self.name
        return f"{self.name} ({self.pretrained or 'no weights'})"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """A short content hash of a weights file (size + head + tail), cheap even for GB files."""
    h = hashlib.blake2b(digest_size=8)
    try:
        size = path.stat().st_size
        h.update(str(size).encode())
        with path.open("rb") as fh:
            h.update(fh.read(chunk))
            if size > chunk:
                fh.seek(max(size - chunk, chunk))
                h.update(fh.read(chunk))
    except OSError as exc:
        raise ModelError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _checkpoint_in(folder: Path) -> Path | None:
    """The weights file open_clip picks in a local-dir model folder (safetensors first)."""
    for pattern in ("*.safetensors", "*.bin", "*.pth"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


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
    from mediasearch import checkpoint

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


@dataclass
class ClipModel:
    """A loaded open_clip model with batched, normalised encoders."""

    spec: ModelSpec
    device: str
    model: Any
    transform: Callable[[Any], Any]
    tokenizer: Callable[[Sequence[str]], Any]
    batch_size: int = 32
    dim: int = 0
    image_size: int = 224
    head: LinearHead | None = None  # a fine-tune checkpoint's linear probe, used by classify
    channels_last: bool = False  # conv image towers run faster on NHWC input
    _text_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        """The image tower's dtype: bf16 on CPUs that run it natively, fp16 on GPUs, else fp32."""
        visual = getattr(self.model, "visual", None)
        return next((visual if visual is not None else self.model).parameters()).dtype

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image → the model's input tensor (C×H×W, float32 on CPU)."""
        return self.transform(image)

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Encode an already preprocessed batch (N×C×H×W); pinned CPU memory is copied asynchronously."""
        import torch

        def encode() -> np.ndarray:
            with torch.inference_mode():
                moved = batch.to(self.device, dtype=self.dtype, non_blocking=True)
                if self.channels_last:
                    moved = moved.contiguous(memory_format=torch.channels_last)
                return _normalise(self.model.encode_image(moved))

        if self.device != "cpu":
            return encode()
        return lane.run(encode, threads=torch.get_num_threads())  # at the caller's thread count

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images in batches; one row per image."""
        import torch

        def encode() -> np.ndarray:
            out = [np.empty((0, self.dim), np.float32)]
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                out.append(self.encode_tensors(torch.stack([self.preprocess(im) for im in chunk])))
            return np.concatenate(out)

        return lane.run(encode) if self.device == "cpu" else encode()  # preprocessing is torch work too

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts (cached per process); one row per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            feats = self._encode_tokens(self.tokenizer(chunk))
            for text, row in zip(chunk, feats, strict=True):
                self._text_cache[text] = row
        if not texts:
            return np.empty((0, self.dim), np.float32)
        return np.stack([self._text_cache[t] for t in texts])

    def _encode_tokens(self, tokens: torch.Tensor) -> np.ndarray:
        """On a CPU, a few texts run on the lane while it is idle, else here on one thread (see
        `few_threads`); more texts run on the lane with all its threads."""
        import torch

        def encode() -> np.ndarray:
            with torch.inference_mode():
                return _normalise(encode_text_tokens(self.model, tokens.to(self.device)))

        def on_one_thread() -> np.ndarray:
            with few_threads(count):
                return encode()

        if self.device != "cpu":
            return encode()
        count = token_count(tokens)
        if count > SMALL_TEXT_TOKENS:
            return lane.run(encode)
        return lane.run_if_idle(encode, otherwise=on_one_thread)

    def info(self) -> dict[str, Any]:
        """What a collection records about the model that built it."""
        return {
            "name": self.spec.name,
            "pretrained": self.spec.pretrained,
            "key": self.spec.key(),
            "dim": self.dim,
            "image_size": self.image_size,
        }


def _normalise(feats: torch.Tensor) -> np.ndarray:
    arr = feats.float().cpu().numpy().astype(np.float32, copy=False)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)


def token_count(tokens: torch.Tensor) -> int:
    """Tokens up to each batch's longest text (what ``encode_text_tokens`` works on)."""
    return int(tokens.shape[0]) * (int(tokens.argmax(dim=-1).max()) + 1) if tokens.numel() else 0


@contextlib.contextmanager
def few_threads(tokens: int | None) -> Iterator[None]:
    """One torch thread for a small CPU text batch (``tokens`` <= SMALL_TEXT_TOKENS; None: no change).

    A query's few short texts are milliseconds of work split into hundreds of tiny parallel regions;
    on a busy machine each region waits for a descheduled worker thread, which made them 5-10x slower
    than one thread. Nested and concurrent users share one switch; the last one restores the count.
    """
    import torch

    if tokens is None or tokens > SMALL_TEXT_TOKENS:
        yield
        return
    with _THREADS_LOCK:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _THREADS_STATE["users"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


def has_standard_text_tower(model: Any) -> bool:
    """True for open_clip's own CLIP text tower: causal mask, pooled at the end-of-text token."""
    return (
        type(model).__name__ == "CLIP"
        and type(model).__module__.startswith("open_clip")
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) == "argmax"
    )


def encode_text_tokens(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text``, run only up to the longest text's end-of-text token where that is exact.

    Under a causal mask no position sees the padding after it, so cutting it off changes nothing but
    the work: a short query is ~10 tokens of the 77 the tokenizer pads to.
    """
    import torch

    if not has_standard_text_tower(model):
        return model.encode_text(tokens)
    ends = tokens.argmax(dim=-1)  # the end-of-text token has the highest id
    length = int(ends.max()) + 1
    tokens = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)[torch.arange(x.shape[0], device=x.device), ends]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def load_model(
    spec: ModelSpec,
    *,
    device: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 0,
    precision: str = "auto",
) -> ClipModel:
    """Create the model, load its weights and put it in eval mode on the chosen device.

    ``precision`` "auto": fp16 on GPUs; on CPUs with native bf16, bf16 weights when the embeddings
    match fp32 (checked once per model, remembered under ``cache_dir``); else fp32.
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
        from mediasearch import text_tower

        text_tower.ensure_cached(loaded, cache_dir)
    if dev == "cpu" and precision in ("auto", "bf16"):
        _use_bf16(loaded, cache_dir, force=precision == "bf16")
    loaded.channels_last = _wants_channels_last(model, dev)
    if loaded.channels_last:
        model.visual.to(memory_format=torch.channels_last)
    return loaded


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


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX (x86), BF16 (Arm): CPUs that run bf16 matrix products at full speed."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    flags: set[str] = set()
    for line in lines:
        if line.startswith(("flags", "Features")):
            flags.update(line.partition(":")[2].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _use_bf16(loaded: ClipModel, cache_dir: Path | None, *, force: bool) -> None:
    """Cast the model to bf16 where that is fast (native bf16, a real model) and faithful (checked)."""
    import torch

    if not force:
        if not cpu_has_native_bf16() or image_tower_params(loaded.model) < BF16_MIN_PARAMS:
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(verdicts, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def _image_size(model: Any) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
