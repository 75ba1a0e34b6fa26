"""Learned prompts (CoOp, Zhou et al. 2022): a few context vectors in front of the class names.

The model stays frozen; only ``n_ctx`` token embeddings are trained, with cross-entropy over the
classes on a handful of labelled images. The result is a small safetensors file (the context vectors,
the class names and the model's key) that ``classify --prompts FILE`` uses in place of templates.
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

    from mediasearch.model import ClipModel

META_KEY = "mediasearch-prompts"
FORMAT = "mediasearch-prompts/1"


@dataclass(frozen=True)
class PromptOptions:
    n_ctx: int = 4
    steps: int = 150
    lr: float = 0.01
    seed: int = 0


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


def initial_context(model: ClipModel, n_ctx: int) -> torch.Tensor:
    """Start from the token embeddings of "a photo of a" (CoOp's initialisation), cut or padded."""
    import torch

    inner = _text_parts(model)
    ids = model.tokenizer(["a photo of a"])[0]
    words = ids[1 : int(ids.argmax())]
    start = inner.token_embedding(words.to(model.device)).detach().float()
    if len(start) >= n_ctx:
        return start[-n_ctx:].clone()
    pad = 0.02 * torch.randn(n_ctx - len(start), start.shape[1])
    return torch.cat([pad.to(start.device), start])


def learn_prompts(
    model: ClipModel, embs: np.ndarray, truth: np.ndarray, labels: Sequence[str], options: PromptOptions
) -> torch.Tensor:
    """Context vectors that make the frozen model classify ``embs`` (rows) as ``labels[truth]``."""
    import torch
    import torch.nn.functional as F

    from mediasearch.zeroshot import logit_scale

    torch.manual_seed(options.seed)
    ctx = initial_context(model, options.n_ctx).requires_grad_(True)
    images = torch.from_numpy(embs).float().to(model.device)
    target = torch.from_numpy(truth).long().to(model.device)
    scale = logit_scale(model)
    optimiser = torch.optim.Adam([ctx], lr=options.lr)
    for _ in range(options.steps):
        loss = F.cross_entropy(scale * images @ encode_with_context(model, ctx, labels).T, target)
        optimiser.zero_grad()
        (grad,) = torch.autograd.grad(loss, [ctx])  # the model's own weights collect nothing
        ctx.grad = grad
        optimiser.step()
    return ctx.detach()


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


def few_shot(labels_of: Sequence[str], shots: int, seed: int) -> list[int]:
    """Indices of at most ``shots`` examples per label, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for label in sorted(set(labels_of)):
        rows = [i for i, lab in enumerate(labels_of) if lab == label]
        picked += sorted(rng.permutation(rows)[:shots].tolist())
    return picked


def train_from_set(
    model: ClipModel, source: str | os.PathLike[str], out: Path, shots: int, options: PromptOptions
) -> dict[str, Any]:
    """Learn prompts from ``shots`` labelled images per class of a labelled set; write them to ``out``."""
    from mediasearch.dataset import read_dataset
    from mediasearch.evaluate import encode_files

    data = read_dataset(source)
    if not data.labelled or len(data.labels) < 2:
        raise DataError(f"{source}: prompt learning needs labelled images of at least two classes")
    chosen = [data.examples[i] for i in few_shot([str(e.label) for e in data.examples], shots, options.seed)]
    embs, kept, _ = encode_files(model, [e.path for e in chosen])
    labels = data.labels
    truth = np.array([labels.index(str(chosen[i].label)) for i in kept])
    ctx = learn_prompts(model, embs, truth, labels, options)
    save_prompts(out, LearnedPrompts(ctx.cpu().numpy(), tuple(labels), model.spec.key()))
    return {"out": str(out), "labels": labels, "examples": len(kept), "n_ctx": options.n_ctx}


def compare(model: ClipModel, prompts: LearnedPrompts, source: str | os.PathLike[str]) -> dict[str, float]:
    """Top-1 accuracy on a labelled set: single template, template ensemble, learned prompts."""
    from mediasearch.dataset import read_dataset
    from mediasearch.evaluate import encode_files, single_prompt
    from mediasearch.zeroshot import ensemble_embeddings, templates_for

    data = read_dataset(source)
    labels = list(prompts.labels)
    embs, kept, _ = encode_files(model, [e.path for e in data.examples])
    truth = np.array([labels.index(str(data.examples[i].label)) for i in kept])
    methods = {
        "single": ensemble_embeddings(model, labels, [single_prompt(model)]),
        "ensemble": ensemble_embeddings(model, labels, templates_for(model)),
        "learned": prompts.label_embeddings(model),
    }
    return {name: float(((embs @ t.T).argmax(axis=1) == truth).mean()) for name, t in methods.items()}


def classify_files(
    model: ClipModel, paths: Sequence[str], labels: Sequence[str], prompts_file: str | os.PathLike[str]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """``classify`` with learned prompts: probabilities of ``labels`` (default: the trained ones) per file."""
    from mediasearch.evaluate import encode_files
    from mediasearch.zeroshot import classify_embeddings, logit_scale

    prompts = load_prompts(prompts_file)
    chosen = list(labels) or list(prompts.labels)
    embs, kept, errors = encode_files(model, [Path(p) for p in paths])
    scores = classify_embeddings(embs, prompts.label_embeddings(model, chosen), chosen, logit_scale(model))
    rows = [
        {"path": paths[i], "labels": [{"label": s.label, "prob": round(s.prob, 4)} for s in row]}
        for i, row in zip(kept, scores, strict=True)
    ]
    return rows, errors
