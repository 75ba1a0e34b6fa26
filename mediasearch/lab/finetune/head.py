"""The optional linear head over frozen image embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mediasearch.clip.checkpoint import LinearHead
from mediasearch.clip.model import ClipModel
from mediasearch.clip.zeroshot import ensemble_embeddings, logit_scale, templates_for
from mediasearch.lab.finetune.parts import Part, Pixels, embed_part


def train_head(model: ClipModel, pixels: Pixels, train: Part, val: Part, classes: Sequence[str]) -> LinearHead:
    """A linear probe on frozen image embeddings, started from the zero-shot classifier; the L2 pull
    towards that start is chosen on validation."""
    x_train, y_train = labelled_embeddings(model, pixels, train, classes)
    x_val, y_val = labelled_embeddings(model, pixels, val, classes)
    w0 = torch.from_numpy(ensemble_embeddings(model, classes, templates_for(model))) * logit_scale(model)
    best: tuple[float, float, LinearHead] | None = None
    for l2 in (1.0, 0.1, 0.01, 0.001):  # strongest first: on a tie, stay closest to zero-shot
        weight, bias = _fit_linear(x_train, y_train, w0, l2)
        head = LinearHead(tuple(classes), weight.numpy(), bias.numpy())
        acc = float((head.probabilities(x_val.numpy()).argmax(axis=1) == y_val.numpy()).mean())
        if best is None or acc > best[0] + 1e-9:
            best = (acc, l2, head)
    assert best is not None
    return best[2]


def labelled_embeddings(model: ClipModel, pixels: Pixels, part: Part, classes: Sequence[str]) -> tuple[Tensor, Tensor]:
    label_of = {e.path: e.label for e in part.examples}
    paths = part.paths
    x = torch.from_numpy(embed_part(model, pixels, paths))
    return x, torch.tensor([list(classes).index(label_of[p] or "") for p in paths])


def _fit_linear(x: Tensor, y: Tensor, w0: Tensor, l2: float, steps: int = 300) -> tuple[Tensor, Tensor]:
    weight = w0.clone().requires_grad_(True)
    bias = torch.zeros(len(w0), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight.T + bias, y) + l2 * (weight - w0).pow(2).sum() / len(w0)
        loss.backward()
        optimizer.step()
    return weight.detach(), bias.detach()
