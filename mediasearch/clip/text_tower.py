"""A cached copy of a model's text encoder, so that a cold text query needs neither open_clip nor the image tower.

``import open_clip`` pulls in torchvision and ``torch._dynamo`` (seconds), and creating a model builds and
randomly initialises both towers before the weights overwrite them. A text query needs none of it: when
``load_model`` has a cache folder, it saves the text tower's weights (fp32 safetensors) and its shape
next to the other caches, after checking that this module's plain-torch copy of open_clip's standard
text transformer gives the same embeddings and that the tokenizer file alone tokenizes the same. A
model that does not fit (HF text towers, SigLIP, ...) gets no cache and is loaded the usual way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.clip.text_only import TextOnly
from mediasearch.errors import ModelError
from mediasearch.fsutil import atomic_path, atomic_write

if TYPE_CHECKING:
    import torch

    from mediasearch.clip.model import ClipModel
    from mediasearch.clip.onnx_text import OnnxTextModel
    from mediasearch.clip.spec import ModelSpec

FORMAT = 1
MIN_COSINE = {"fp32": 0.99999, "other": 0.999}  # ours vs open_clip; a half-precision model is noisier
PROBE_TEXTS = ("a photo of a dog", "A Café's  NEON sign, at 3 a.m.!", "x")
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclass(frozen=True)
class TowerShape:
    """What the plain-torch text transformer needs to know besides its weights."""

    context_length: int
    vocab_size: int
    width: int
    heads: int
    layers: int
    embed_dim: int
    quick_gelu: bool
    eps: float
    logit_scale: float  # the log of CLIP's temperature, as open_clip keeps it


def cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    """(weights, description) files of a model's cached text tower."""
    stem = f"text-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def ensure_cached(model: ClipModel, cache_dir: Path) -> bool:
    """Save ``model``'s text tower for cold queries unless it is there already; False if it cannot be.

    With onnxruntime installed, an ONNX copy is exported beside it too (``onnx_text``), once."""
    weights, desc = cache_paths(cache_dir, model.spec.key())
    if weights.is_file() and desc.is_file():
        _ensure_onnx(weights, desc)
        return True
    shape = _shape_of(model.model)
    if shape is None or not _tokenizer_matches(model.tokenizer, shape.context_length):
        return False
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.model.state_dict().items() if _is_text(k)}
    tower = build_tower(shape, state)
    if tower is None or not _embeddings_match(model, tower):
        return False
    meta = {"format": FORMAT, "key": model.spec.key(), "dim": model.dim, **asdict(shape)}
    _write(weights, desc, state, meta)
    if desc.is_file():
        from mediasearch.clip import onnx_text

        onnx_text.export(tower, weights, meta, _simple_tokenizer_class()(context_length=shape.context_length))
    return True


def _ensure_onnx(weights: Path, desc: Path) -> None:
    """Export the ONNX copy of a text tower cached before there was one (onnxruntime installed since)."""
    from mediasearch.clip import onnx_text

    if onnx_text.paths(weights)[2].is_file() or not onnx_text.available():
        return
    try:
        meta = json.loads(desc.read_text(encoding="utf-8"))
        shape = TowerShape(**{k: meta[k] for k in TowerShape.__dataclass_fields__})
        from safetensors.torch import load_file

        tower = build_tower(shape, load_file(str(weights)))
    except (OSError, ValueError, KeyError, TypeError):
        return
    if tower is not None:
        onnx_text.export(tower, weights, meta, _simple_tokenizer_class()(context_length=shape.context_length))


def load_text_model(spec: ModelSpec, cache_dir: Path) -> TextModel | OnnxTextModel | None:
    """The cached text tower of ``spec`` on the CPU, or None when there is none: its ONNX copy run by
    onnxruntime when there is one (no torch import), else the torch copy."""
    from mediasearch.clip import onnx_text

    weights, desc = cache_paths(cache_dir, spec.key())
    fast = onnx_text.load_onnx_text_model(spec, weights)
    if fast is not None:
        return fast
    try:
        meta = json.loads(desc.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("key") != spec.key():
            return None
        shape = TowerShape(**{k: meta[k] for k in TowerShape.__dataclass_fields__})
        from safetensors.torch import load_file

        state = load_file(str(weights))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    tower = build_tower(shape, state)
    if tower is None:
        return None
    tokenizer = _simple_tokenizer_class()(context_length=shape.context_length)
    return TextModel(spec, int(meta["dim"]), tower, tokenizer)


def _is_text(key: str) -> bool:
    return key.startswith(_TEXT_PREFIXES)


def _write(weights: Path, desc: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Best effort, atomically, description last: without a writable cache, cold queries load the model."""
    from safetensors.torch import save_file

    with contextlib.suppress(OSError):
        weights.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(weights) as tmp_weights:
            save_file(state, str(tmp_weights))
        atomic_write(desc, json.dumps(meta, indent=1))


def _shape_of(model: Any) -> TowerShape | None:
    """The text tower's shape if it is open_clip's standard one (nothing else is copied)."""
    import torch

    from mediasearch.clip.model import has_standard_text_tower

    if not has_standard_text_tower(model) or not isinstance(model.text_projection, torch.nn.Parameter):
        return None  # pooled at the end-of-text token, with a projection matrix
    try:
        blocks = list(model.transformer.resblocks)
        first = blocks[0]
        act = type(first.mlp.gelu).__name__
        plain = all(
            type(b.ls_1).__name__ == type(b.ls_2).__name__ == "Identity"
            and type(getattr(b, "ln_attn", None)).__name__ in ("Identity", "NoneType")
            and type(b.attn).__name__ == "MultiheadAttention"
            and b.attn.batch_first
            for b in blocks
        )
        if not plain or act not in ("GELU", "QuickGELU") or not getattr(model.transformer, "batch_first", True):
            return None
        return TowerShape(
            context_length=int(model.positional_embedding.shape[0]),
            vocab_size=int(model.token_embedding.num_embeddings),
            width=int(model.positional_embedding.shape[1]),
            heads=int(first.attn.num_heads),
            layers=len(blocks),
            embed_dim=int(model.text_projection.shape[1]),
            quick_gelu=act == "QuickGELU",
            eps=float(model.ln_final.eps),
            logit_scale=float(model.logit_scale.detach().float().cpu()),
        )
    except (AttributeError, IndexError, TypeError):
        return None


def _tokenizer_matches(tokenizer: Any, context_length: int) -> bool:
    """Whether the tokenizer file alone, with default options, tokenizes like the model's tokenizer."""
    if type(tokenizer).__name__ != "SimpleTokenizer" or getattr(tokenizer, "reduction_fn", None) is not None:
        return False
    ours = _simple_tokenizer_class()(context_length=context_length)
    return bool((ours(list(PROBE_TEXTS)) == tokenizer(list(PROBE_TEXTS))).all())


def _embeddings_match(model: ClipModel, tower: Any) -> bool:
    import torch

    with torch.inference_mode():
        tokens = model.tokenizer(list(PROBE_TEXTS))
        theirs = model.model.encode_text(tokens.to(model.device)).float().cpu()
        ours = tower(tokens)
    cosine = float(torch.nn.functional.cosine_similarity(theirs, ours, dim=-1).min())
    fp32 = next(model.model.transformer.parameters()).dtype == torch.float32
    return cosine >= MIN_COSINE["fp32" if fp32 else "other"]


@functools.cache
def _simple_tokenizer_class() -> Any:
    """open_clip's SimpleTokenizer, loaded from its file alone when open_clip is not imported yet.

    The tokenizer module imports nothing from the rest of the package; the package's ``__init__``
    imports everything (torchvision, ``torch._dynamo``), which is what a cold query must avoid.
    """
    import sys

    if "open_clip" in sys.modules:
        from open_clip.tokenizer import SimpleTokenizer

        return SimpleTokenizer
    package = importlib.util.find_spec("open_clip")
    if package is None or not package.submodule_search_locations:
        raise ModelError("open_clip is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("mediasearch._open_clip_tokenizer", path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot load open_clip's tokenizer from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer


def build_tower(shape: TowerShape, state: dict[str, Any]) -> TextTower | None:
    """The text tower with ``state`` as its weights (None if they do not fit the shape)."""
    width, layers = shape.width, shape.layers
    expected = {
        "token_embedding.weight": (shape.vocab_size, width),
        "positional_embedding": (shape.context_length, width),
        "ln_final.weight": (width,),
        "text_projection": (width, shape.embed_dim),
        **{f"transformer.resblocks.{i}.attn.in_proj_weight": (3 * width, width) for i in range(layers)},
        **{f"transformer.resblocks.{i}.mlp.c_fc.weight": (4 * width, width) for i in range(layers)},
    }
    if any(tuple(state[k].shape) != v if k in state else True for k, v in expected.items()):
        return None
    return TextTower(shape, state)


class TextTower:
    """open_clip's CLIP text path (``encode_text``) in plain torch functions, run up to the longest
    text's end-of-text token. No ``nn.Module``: building one initialises its weights first (and on the
    meta device that imports ``torch._dynamo``, seconds), while these are given."""

    def __init__(self, shape: TowerShape, state: dict[str, Any]) -> None:
        self.shape, self.weights = shape, state
        self.logit_scale = shape.logit_scale  # zeroshot.logit_scale reads it

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F  # noqa: N812

        w, shape = self.weights, self.shape
        ends = tokens.argmax(dim=-1)  # the end-of-text token has the highest id
        length = int(ends.max()) + 1
        x = F.embedding(tokens[:, :length], w["token_embedding.weight"]) + w["positional_embedding"][:length]
        mask = torch.full((length, length), float("-inf")).triu_(1)
        for i in range(shape.layers):
            x = self._block(x, f"transformer.resblocks.{i}.", mask)
        x = self._norm(x, "ln_final.")[torch.arange(x.shape[0]), ends]
        return x @ w["text_projection"]

    def _block(self, x: torch.Tensor, prefix: str, mask: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F  # noqa: N812

        w, heads = self.weights, self.shape.heads
        batch, length, width = x.shape
        h = self._norm(x, prefix + "ln_1.")
        qkv = F.linear(h, w[prefix + "attn.in_proj_weight"], w[prefix + "attn.in_proj_bias"])
        q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(attended, w[prefix + "attn.out_proj.weight"], w[prefix + "attn.out_proj.bias"])
        h = F.linear(self._norm(x, prefix + "ln_2."), w[prefix + "mlp.c_fc.weight"], w[prefix + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h) if self.shape.quick_gelu else F.gelu(h)
        return x + F.linear(h, w[prefix + "mlp.c_proj.weight"], w[prefix + "mlp.c_proj.bias"])

    def _norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        import torch.nn.functional as F  # noqa: N812

        w = self.weights
        return F.layer_norm(x, (x.shape[-1],), w[prefix + "weight"], w[prefix + "bias"], self.shape.eps)


@dataclass
class TextModel(TextOnly):
    """An ``Embedder`` for texts only (a cold text query); the image side needs ``load_model``."""

    spec: ModelSpec
    dim: int
    model: Any  # the tower; zeroshot.logit_scale reads its ``logit_scale``
    tokenizer: Any
    device: str = "cpu"
    _text_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _features(self, chunk: list[str]) -> np.ndarray:
        import torch

        from mediasearch.clip.model import few_threads, token_count

        tokens = self.tokenizer(chunk)
        with torch.inference_mode(), few_threads(token_count(tokens)):
            return self.model(tokens).numpy().astype(np.float32)
