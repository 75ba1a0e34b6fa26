"""CLIP-guided image synthesis: optimise an image so that the model sees the prompt in it.

The image is a small set of differentiable parameters: one soft shape (centre, size, an outline whose
radius is a Fourier series in the angle, a fill colour) over a plain grey background or over a starting
image. Each step scores several randomly cropped, shifted and noised views of it, so the optimiser
cannot win with a pixel-exact adversarial pattern: whatever it draws must still read as the prompt
after the augmentations. The shape always stays inside the frame (a clipped circle has corners).

Gradient ascent on a shape gets stuck: a start that drifts towards a triangle rarely becomes a circle.
So several starts (``restarts``: a round one, then rough 3-, 4-, 5-fold outlines, then random ones)
each take the first quarter of the steps, and only the one the model scores highest goes on. Steps
follow a noisy estimate (random views), so the result is the best image seen, by its plain score.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mediasearch.errors import MediaSearchError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mediasearch.clip.model import ClipModel

ProgressFn = Callable[[int, int, float], None]
FOLDS = (0, 3, 4, 5)  # the outlines the first starts take: round, then 3-, 4- and 5-fold
OUTLINE_LR, COLOUR_LR = 0.2, 3.0  # step sizes of the outline's terms and of the colours, relative to --lr


class GenerateError(MediaSearchError):
    """Generation cannot start (bad size, steps, or an unreadable --init image)."""


@dataclass(frozen=True)
class GenerateOptions:
    """How to generate: optimiser steps, output size (0: the model's input size), augmented views."""

    steps: int = 120
    size: int = 0
    seed: int = 0
    lr: float = 0.05
    views: int = 8
    noise: float = 0.05
    harmonics: int = 6  # angular Fourier terms of the outline
    simplicity: float = 0.0  # weight of a penalty on those terms (favours plain outlines)
    restarts: int = 4  # random starts explored for a quarter of the steps each; the best one goes on
    init: Path | None = None


@dataclass(frozen=True)
class Generated:
    """The result: the image, and the prompt's cosine similarity before and after."""

    image: Image.Image
    initial_score: float
    final_score: float
    steps: int


def normalisation(model: ClipModel) -> tuple[list[float], list[float]]:
    """The mean and std of the model's own preprocessing (CLIP's when it has no Normalize step)."""
    for step in getattr(model.transform, "transforms", []):
        if type(step).__name__ == "Normalize":
            return list(step.mean), list(step.std)
    return [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def image_encoder(model: ClipModel) -> Any:
    """The image tower in fp32 (a bf16/fp16 tower is copied up: gradients want full precision)."""
    import torch

    visual = model.model.visual
    if next(visual.parameters()).dtype != torch.float32:
        visual = copy.deepcopy(visual).float()
    return visual


class SoftShape:
    """A learnable image: one soft shape over a plain grey background (or over the ``--init`` image).

    The outline is a radius that varies with the angle as a short Fourier series, so circles
    (constant), triangles, squares and stars (3, 4 and 5-fold terms) are all reachable by gradient
    descent; edges are a sigmoid, so every parameter gets a gradient.
    """

    def __init__(self, size: int, harmonics: int, base: torch.Tensor | None, generator: torch.Generator,
                 fold: int = 0) -> None:
        import torch

        def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return (scale * torch.randn(shape, generator=generator)).requires_grad_(True)

        self.size = size
        self.centre = rand(2, scale=0.1)
        self.radius = rand(1, scale=0.1)
        self.harmonics = rand(harmonics, 2, scale=0.05)
        if 0 < fold <= harmonics:  # start from a rough ``fold``-fold outline (3: triangle-like, 4: square...)
            with torch.no_grad():
                self.harmonics[fold - 1, 0] += 0.4
        self.fill = rand(3, scale=0.5)
        self.background = rand(1, scale=0.5)  # a grey: the shape alone must carry the prompt
        self.base = base
        axis = torch.linspace(-1.0, 1.0, size)
        self.grid_y, self.grid_x = torch.meshgrid(axis, axis, indexing="ij")

    def colours(self) -> list[torch.Tensor]:
        """The fill, and the grey below it unless ``--init`` gives the background."""
        return [self.fill] if self.base is not None else [self.fill, self.background]

    def parameters(self) -> list[torch.Tensor]:
        return [self.centre, self.radius, self.harmonics, *self.colours()]

    def mask(self) -> torch.Tensor:
        """The shape's soft mask, H×W in [0, 1].

        The whole shape stays inside the frame, its farthest point between a fifth and three quarters
        of the half-width from its centre: a shape cut off by the frame's edges reads as another one
        (a clipped circle has corners).
        """
        import torch

        k = torch.arange(1, len(self.harmonics) + 1, dtype=torch.float32)[:, None, None]

        def wave(theta: torch.Tensor) -> torch.Tensor:
            cos, sin = self.harmonics[:, 0, None, None], self.harmonics[:, 1, None, None]
            return torch.exp(torch.tanh((cos * torch.cos(k * theta) + sin * torch.sin(k * theta)).sum(0)))

        reach = 0.2 + 0.55 * torch.sigmoid(self.radius)
        around = torch.linspace(-torch.pi, torch.pi, 181)[None, :]
        peak = wave(around).max()
        centre = torch.tanh(self.centre) * (0.98 - reach)
        dx, dy = self.grid_x - centre[0], self.grid_y - centre[1]
        r, theta = torch.sqrt(dx * dx + dy * dy + 1e-8), torch.atan2(dy, dx)
        outline = reach * wave(theta) / peak
        return torch.sigmoid((outline - r) * self.size / 2.0)

    def __call__(self) -> torch.Tensor:
        """The image as a 1×3×H×W tensor in [0, 1]."""
        import torch

        mask = self.mask()[None]
        grey = torch.sigmoid(self.background).expand(3)[:, None, None]
        below = torch.sigmoid(self.base) if self.base is not None else grey
        return (mask * torch.sigmoid(self.fill)[:, None, None] + (1 - mask) * below)[None]


def init_logits(path: Path, size: int) -> torch.Tensor:
    """A starting image as the logits the parameterisation adds its changes to."""
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    except (OSError, UnidentifiedImageError) as exc:
        raise GenerateError(f"cannot read --init image {path}: {exc}") from None
    pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return torch.logit(pixels.clamp(0.02, 0.98))


def augment(image: torch.Tensor, out: int, views: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """``views`` random crops (85-100% of the side), shifts, mirrors and noise, resized to ``out``."""
    import torch
    import torch.nn.functional as F

    size = image.shape[-1]
    crops = []
    for _ in range(views):
        side = int(size * (0.85 + 0.15 * float(torch.rand(1, generator=generator))))
        y, x = (int(torch.randint(0, size - side + 1, (1,), generator=generator)) for _ in "yx")
        crop = image[..., y : y + side, x : x + side]
        if float(torch.rand(1, generator=generator)) < 0.5:
            crop = crop.flip(-1)
        crops.append(F.interpolate(crop, size=(out, out), mode="bilinear", align_corners=False))
    batch = torch.cat(crops)
    return batch + noise * torch.randn(batch.shape, generator=generator)


def _scorer(model: ClipModel, prompt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels in [0, 1] (N×3×H×W at the model's size) → cosine similarity of each to the prompt."""
    import torch

    visual = image_encoder(model)
    mean, std = normalisation(model)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    text = torch.from_numpy(model.encode_texts([prompt])[0]).float()

    def score(pixels: torch.Tensor) -> torch.Tensor:
        feats = visual(((pixels - mean_t) / std_t).to(model.device))
        feats = feats.float().cpu()
        return (feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)) @ text

    return score


def generate(
    model: ClipModel, prompt: str, options: GenerateOptions, progress: ProgressFn | None = None
) -> Generated:
    """Optimise an image towards ``prompt`` for ``options.steps`` steps; returns it with its scores.

    Progress counts every step taken, the exploring starts' included.
    """
    import torch
    import torch.nn.functional as F

    _check(prompt, options)
    out = model.image_size
    size = options.size or out
    gen = torch.Generator().manual_seed(options.seed)
    base = init_logits(options.init, size) if options.init is not None else None
    score = _scorer(model, prompt)

    def plain_score(image: SoftShape) -> float:
        with torch.no_grad():
            return float(score(F.interpolate(image(), size=(out, out), mode="bilinear", align_corners=False))[0])

    starts = [SoftShape(size, options.harmonics, base, gen, fold=FOLDS[i] if i < len(FOLDS) else 0)
              for i in range(options.restarts)]
    initial = plain_score(starts[0])
    explore = max(1, options.steps // 4) if len(starts) > 1 else options.steps
    total = explore * len(starts) + options.steps - explore
    done = 0

    def ascend(run: _Run, steps: int) -> None:
        nonlocal done
        for _ in range(steps):
            image = run.image
            sims = score(augment(image(), out, options.views, options.noise, gen))
            # A simple outline unless the prompt asks for more: a circle has no angular terms at all.
            loss = -sims.mean() + options.simplicity * image.harmonics.pow(2).sum()
            # Gradients for the image only: the (shared) model's own weights must not collect any.
            for param, grad in zip(image.parameters(), torch.autograd.grad(loss, image.parameters()), strict=True):
                param.grad = grad
            run.optimiser.step()
            run.keep_if_best(plain_score(image))
            done += 1
            if progress is not None:
                progress(done, total, run.best_score)

    runs = [_Run(image, _optimiser(image, options), plain_score(image)) for image in starts]
    for run in runs:
        ascend(run, explore)
    best = max(runs, key=lambda run: run.best_score)
    ascend(best, options.steps - explore)
    best.restore()
    return Generated(to_pil(best.image()), initial, best.best_score, options.steps)


class _Run:
    """One start being optimised, and the best image it has shown so far (its parameters).

    The steps follow the score of randomly augmented views, a noisy estimate: a step can make the image
    itself worse, so the result is the best one seen, not the last.
    """

    def __init__(self, image: SoftShape, optimiser: torch.optim.Optimizer, score: float) -> None:
        self.image, self.optimiser = image, optimiser
        self.best_score = score
        self.best_state = [p.detach().clone() for p in image.parameters()]

    def keep_if_best(self, score: float) -> None:
        if score > self.best_score:
            self.best_score = score
            self.best_state = [p.detach().clone() for p in self.image.parameters()]

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for param, saved in zip(self.image.parameters(), self.best_state, strict=True):
                param.copy_(saved)


def _optimiser(image: SoftShape, options: GenerateOptions) -> torch.optim.Optimizer:
    """Adam with a step size per part. Adam moves every parameter by about its ``lr`` a step whatever
    the gradient's size: the outline's terms get a fifth of it (noise in the augmented views would
    otherwise throw the outline about), the colours three times (a colour must be reached within the
    few steps each start is explored for)."""
    import torch

    groups: list[dict[str, Any]] = [
        {"params": [image.centre, image.radius]},
        {"params": [image.harmonics], "lr": options.lr * OUTLINE_LR},
        {"params": image.colours(), "lr": options.lr * COLOUR_LR},
    ]
    return torch.optim.Adam(groups, lr=options.lr)


def _check(prompt: str, options: GenerateOptions) -> None:
    if not prompt.strip():
        raise GenerateError("the prompt is empty")
    if options.steps < 1:
        raise GenerateError(f"--steps must be at least 1, got {options.steps}")
    if options.restarts < 1:
        raise GenerateError(f"--restarts must be at least 1, got {options.restarts}")
    if options.size and not 16 <= options.size <= 2048:
        raise GenerateError(f"--size must be between 16 and 2048 pixels, got {options.size}")


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """A 1×3×H×W tensor in [0, 1] as an RGB PIL image."""
    from PIL import Image

    arr = (pixels[0].detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")
