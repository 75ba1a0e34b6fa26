"""The model layer: any open_clip model behind one small interface.

``encode_images`` and ``encode_texts`` return L2-normalised float32 arrays, normalised here for this
model (the text-only models normalise their own, once, in ``text_only.TextOnly``). torch and
open_clip are imported inside functions so that the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch import lane
from mediasearch.clip.checkpoint import LinearHead
from mediasearch.clip.spec import ModelSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mediasearch.clip.image_runtime import ImageRuntime
    from mediasearch.clip.onnx_text import OnnxTower


SMALL_TEXT_TOKENS = 512  # text batches up to this many tokens run on one thread (see few_threads)
_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 0}


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
    fast_text: OnnxTower | None = None  # int8 ONNX text tower (see loading)
    fast_text_of: Any = field(default=None, repr=False)  # the weights it was exported from
    fast_image: ImageRuntime | None = None  # the image tower on OpenVINO or ONNX Runtime (see loading)
    fast_image_of: Any = field(default=None, repr=False)  # the weights it was converted from
    _text_cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _fast_image(self) -> ImageRuntime | None:
        """The converted image tower, when it runs here: on the CPU, for the weights it was converted
        from (not a fine-tuned copy's)."""
        return self.fast_image if self.fast_image_of is self.model and self.device == "cpu" else None

    @property
    def image_runtime(self) -> str:
        """Where images are encoded: "openvino bf16", "onnxruntime fp32", or torch and its dtype."""
        fast = self._fast_image()
        if fast is not None:
            return fast.name
        return f"torch {str(self.dtype).replace('torch.', '').replace('float32', 'fp32').replace('bfloat16', 'bf16')}"

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

        fast = self._fast_image()
        if fast is not None:
            pixels = batch.float().numpy()
            return lane.run(lambda: _normalise_array(fast(pixels)), threads=fast.threads)

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
        `few_threads`; on the int8 tower, all cores on the lane while no other process wants them, see
        `lane.spare_cpus`, else the session that has been faster lately, see `OnnxTower.faster`); more
        texts run on the lane with all its threads."""
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
        fast = self.fast_text if self.fast_text_of is self.model else None  # not a fine-tuned copy's
        if fast is not None and count <= SMALL_TEXT_TOKENS:  # a query's few texts
            array = tokens.numpy()

            def on_the_lane() -> np.ndarray:  # no batch can start meanwhile: all cores where no other task
                # wants them; else the session that has been faster lately (others may be niced)
                return fast.wide(array) if lane.spare_cpus() > 0 else fast.faster(array)

            return _normalise_array(lane.run_if_idle(on_the_lane, otherwise=lambda: fast(array)))
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
    return _normalise_array(feats.float().cpu().numpy())


def _normalise_array(feats: np.ndarray) -> np.ndarray:
    arr = feats.astype(np.float32, copy=False)
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
