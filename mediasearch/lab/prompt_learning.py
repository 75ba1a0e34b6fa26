"""Learned prompts (CoOp, Zhou et al. 2022): a few context vectors in front of the class names.

The model stays frozen; only ``n_ctx`` token embeddings are trained, with cross-entropy over the
classes on a handful of labelled images. The result is a small safetensors file (the context vectors,
the class names and the model's key) that ``classify --prompts FILE`` uses in place of templates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.clip.prompts import LearnedPrompts, _text_parts, encode_with_context, save_prompts
from mediasearch.errors import DataError

if TYPE_CHECKING:
    import torch

    from mediasearch.clip.model import ClipModel


@dataclass(frozen=True)
class PromptOptions:
    n_ctx: int = 4
    steps: int = 150
    lr: float = 0.01
    seed: int = 0


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

    from mediasearch.clip.zeroshot import logit_scale

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
    from mediasearch.lab.dataset import read_dataset
    from mediasearch.search.query import encode_files

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


def compare(
    model: ClipModel, prompts: LearnedPrompts | str | os.PathLike[str], source: str | os.PathLike[str]
) -> dict[str, float]:
    """Top-1 accuracy on a labelled set: single template, template ensemble, learned prompts (or their file)."""
    if not isinstance(prompts, LearnedPrompts):
        from mediasearch.clip.prompts import load_prompts

        prompts = load_prompts(prompts)
    from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
    from mediasearch.lab.dataset import read_dataset
    from mediasearch.lab.evaluate import single_prompt
    from mediasearch.search.query import encode_files

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
