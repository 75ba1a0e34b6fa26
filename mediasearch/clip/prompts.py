"""The learned-prompts file (``finetune --prompt-learning``): context vectors, the labels they were trained
for and the model's key, in safetensors; and the text encoding that puts the context before a class name.
Training them lives in ``lab.prompt_learning``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.errors import DataError, ModelError

if TYPE_CHECKING:
    import torch

    from mediasearch.clip.model import ClipModel


META_KEY = "mediasearch-prompts"
FORMAT = "mediasearch-prompts/1"


def _text_parts(model: ClipModel) -> Any:
    inner = model.model
    if not all(hasattr(inner, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
        raise ModelError(f"{model.spec.describe()}: prompt learning needs an open_clip CLIP text tower")
    return inner


def _tokens(model: ClipModel, labels: Sequence[str], n_ctx: int) -> torch.Tensor:
    """Tokens of "X X X X {label}." (the Xs are placeholders the context vectors replace)."""
    return model.tokenizer([" ".join(["X"] * n_ctx) + f" {label}." for label in labels])


def encode_with_context(model: ClipModel, ctx: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
    """Normalised text embeddings of the labels behind the context vectors (differentiable in ``ctx``)."""
    import torch

    inner = _text_parts(model)
    tokens = _tokens(model, labels, len(ctx)).to(model.device)
    ends = tokens.argmax(dim=-1)  # the end-of-text token has the highest id
    cast = inner.transformer.get_cast_dtype()
    x = inner.token_embedding(tokens).to(cast)
    x = torch.cat([x[:, :1], ctx.to(cast)[None].expand(len(labels), -1, -1), x[:, 1 + len(ctx) :]], dim=1)
    x = x + inner.positional_embedding.to(cast)
    x = inner.transformer(x, attn_mask=inner.attn_mask)
    x = inner.ln_final(x)[torch.arange(x.shape[0], device=x.device), ends]
    proj = inner.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class LearnedPrompts:
    """Context vectors, the labels they were trained for, and the model they belong to."""

    ctx: np.ndarray
    labels: tuple[str, ...]
    model_key: str

    def label_embeddings(self, model: ClipModel, labels: Sequence[str] | None = None) -> np.ndarray:
        """Normalised embeddings of ``labels`` (default: the trained ones) behind the learned context."""
        import torch

        if model.spec.key() != self.model_key:
            raise ModelError(f"these prompts were learned for another model ({self.model_key})")
        with torch.no_grad():
            return encode_with_context(model, torch.from_numpy(self.ctx), labels or self.labels).cpu().numpy()


def save_prompts(path: Path, prompts: LearnedPrompts) -> None:
    import torch
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "labels": list(prompts.labels), "model": prompts.model_key}
    save_file({"ctx": torch.from_numpy(prompts.ctx)}, str(path), metadata={META_KEY: json.dumps(meta)})


def load_prompts(path: str | os.PathLike[str]) -> LearnedPrompts:
    """Read a prompts file written by :func:`save_prompts`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as fh:
            meta = json.loads((fh.metadata() or {})[META_KEY])
            ctx = fh.get_tensor("ctx")
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as exc:
        raise DataError(f"{path} is not a learned-prompts file: {exc}") from None
    return LearnedPrompts(np.asarray(ctx, np.float32), tuple(meta["labels"]), str(meta["model"]))
