"""`mediasearch finetune`: adapt a CLIP model to a user's captioned or labelled media, never for the worse.

The run: read and check the data (all problems counted up front) → decode every image once →
split train/validation/test by seed → contrastive training (``mediasearch.train``) with early stopping
on validation and a resumable state file beside the output → WiSE-FT: θ = (1−α)·θ_zero-shot + α·θ_tuned
with α chosen on validation (and, with a reference set of the original domain, only among the α that
keep its validation accuracy within ``max_reference_drop``) → optional linear head → the held-out test
set and the reference test set, zero-shot vs chosen → refuse (nothing written) unless it helped.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mediasearch.clip import checkpoint
from mediasearch.clip.checkpoint import LinearHead
from mediasearch.clip.model import ClipModel
from mediasearch.clip.zeroshot import ensemble_embeddings, logit_scale, templates_for
from mediasearch.errors import ConfigError, DataError, FinetuneRefused
from mediasearch.fsutil import atomic_path
from mediasearch.lab.dataset import Dataset, Example, read_dataset, split
from mediasearch.lab.evaluate import retrieval_recall
from mediasearch.lab.train import ContrastiveTrainer, TrainConfig, clip_loss

DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
REPLAY_RATIO = 2  # replay images per training image in an epoch: enough to hold the old domain in place


@dataclass(frozen=True)
class Recipe:
    """The training settings a model family needs; an option left at None takes its recipe's value."""

    epochs: int
    lr: float
    weight_decay: float
    lock_text: bool
    patience: int
    replay: int  # used only when a reference set exists (--reference, or the demo model's rendered one)
    threads: int | None  # CPU threads while training (None: as torch has them)


# Published CLIP fine-tuning defaults: a small learning rate, AdamW's usual decay, both towers.
CLIP_RECIPE = Recipe(epochs=10, lr=1e-5, weight_decay=0.1, lock_text=False, patience=3, replay=0, threads=None)
# The tiny demo model, trained from scratch, needs far larger steps (at which AdamW's decay would
# shrink every weight by a tenth over a run: none), forgets its own domain fast (its text tower stays as
# it is; 720 rendered filled shapes are replayed, held at their zero-shot embeddings) and improves
# slowly (45 epochs, no early stop). One thread: the same figures on any x86-64 machine.
DEMO_RECIPE = Recipe(epochs=45, lr=2e-3, weight_decay=0.0, lock_text=True, patience=45, replay=720, threads=1)


@dataclass(frozen=True)
class FinetuneOptions:
    """Everything a run can be told; the defaults suit a few hundred images on a CPU."""

    out: Path
    test: Path | None = None  # a separate held-out test set; without it, test_fraction of DATA is held out
    reference: Path | None = None  # a labelled set of the original domain (the demo: rendered filled shapes)
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    epochs: int | None = None  # None (here and below): the model's recipe (DEMO_RECIPE, CLIP_RECIPE)
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None  # None: a tenth of the optimiser steps
    accum_steps: int = 1
    lock_image: bool = False
    lock_text: bool | None = None
    unfreeze_last: int | None = None  # only the last N blocks of each unlocked tower (and what follows them)
    patience: int | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    max_reference_drop: float = 0.02
    replay: int | None = None  # reference images mixed into training (rehearsal), for a model that forgets fast
    replay_distill: float = 10.0  # weight of keeping the replay images' zero-shot embeddings
    augment: bool = True  # mirror half the training images, shift and scale them a little
    head: str | None = None  # "linear"
    skip_bad: bool = False
    restart: bool = False
    reference_size: int = 240  # rendered filled shapes per reference half (demo model only; 0: none)
    save_every: float = 120.0  # seconds between mid-epoch saves of the resumable state
    threads: int | None = None  # CPU threads while training; None: the recipe's
    deterministic: bool = True  # torch's deterministic algorithms while training (same seed, same figures)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The options that change training (a resumed run must match them)."""
        names = ("seed", "val_fraction", "test_fraction", "epochs", "batch_size", "lr", "weight_decay",
                 "warmup_steps", "accum_steps", "lock_image", "lock_text", "unfreeze_last", "replay",
                 "replay_distill", "augment", "threads")
        return {n: getattr(self, n) for n in names}

    def recipe(self, is_demo: bool) -> Recipe:
        """The settings this run trains with: these options over the model's recipe."""
        base = DEMO_RECIPE if is_demo else CLIP_RECIPE
        has_reference = self.reference is not None or (is_demo and self.reference_size > 0)
        replay = self.replay if self.replay is not None else (base.replay if has_reference else 0)
        return Recipe(
            epochs=base.epochs if self.epochs is None else self.epochs,
            lr=base.lr if self.lr is None else self.lr,
            weight_decay=base.weight_decay if self.weight_decay is None else self.weight_decay,
            lock_text=base.lock_text if self.lock_text is None else self.lock_text,
            patience=base.patience if self.patience is None else self.patience,
            replay=replay,
            threads=base.threads if self.threads is None else self.threads,
        )

    def resolved(self, is_demo: bool) -> FinetuneOptions:
        """These options with the recipe's values in place of every None it decides."""
        return dataclasses.replace(self, **dataclasses.asdict(self.recipe(is_demo)))


@dataclass(frozen=True)
class Event:
    """Progress for a front end: a stage's count (``done`` of ``total``) or a finished epoch (``info``)."""

    stage: str  # "prepare", "train", "epoch", "sweep", "note"
    done: int = 0
    total: int | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[Event], None]


def _quiet(_: Event) -> None:
    return None


# ---------------------------------------------------------------- pixels and parts


class Pixels:
    """Every image of the run decoded once, as the model's input before normalisation (uint8 when exact)."""

    def __init__(self, model: ClipModel) -> None:
        self.pre, self.mean, self.std = _split_transform(model.transform)
        self.rows: dict[Path, int] = {}
        self.tensors: list[Tensor] = []
        self.data: Tensor | None = None

    def add(self, paths: Sequence[Path], target: int, progress: ProgressFn) -> dict[Path, str]:
        """Decode the new ones; returns the unreadable ones with the reason."""
        from mediasearch.errors import MediaSearchError
        from mediasearch.media.decode import load_image
        from mediasearch.media.discover import media_kind

        bad: dict[Path, str] = {}
        todo = [p for p in dict.fromkeys(paths) if p not in self.rows]
        for i, path in enumerate(todo):
            try:
                if media_kind(path.name) != "image":
                    raise DataError("not an image (fine-tuning uses images only)")
                image, _ = load_image(path, target=target)
                self.rows[path] = len(self.tensors)
                self.tensors.append(self._store(self.pre(image)))
            except (MediaSearchError, OSError) as exc:
                bad[path] = str(exc)
            progress(Event("prepare", i + 1, len(todo)))
        self.data = None
        return bad

    def _store(self, tensor: Tensor) -> Tensor:
        return tensor.mul(255).round().to(torch.uint8) if self.mean is not None else tensor

    def batch(self, paths: Sequence[Path]) -> Tensor:
        """Normalised model input for these files."""
        if self.data is None:
            self.data = torch.stack(self.tensors)
        raw = self.data[[self.rows[p] for p in paths]]
        if self.mean is None or self.std is None:
            return raw.float()
        return (raw.float() / 255 - self.mean) / self.std


def _split_transform(transform: Any) -> tuple[Callable[[Any], Tensor], Tensor | None, Tensor | None]:
    """The transform without its final Normalize (so images can be kept as exact uint8), and its mean/std."""
    from torchvision.transforms import Compose, Normalize

    steps = getattr(transform, "transforms", None)
    if isinstance(transform, Compose) and steps and isinstance(steps[-1], Normalize):
        norm = steps[-1]
        return Compose(steps[:-1]), torch.tensor(norm.mean).view(3, 1, 1), torch.tensor(norm.std).view(3, 1, 1)
    return transform, None, None


@dataclass(frozen=True)
class Part:
    """A split (or a reference half): its examples, and the class names it is scored over."""

    name: str
    examples: tuple[Example, ...]
    classes: tuple[str, ...] | None  # None: a captioned part, scored by retrieval

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys(e.path for e in self.examples))


# ---------------------------------------------------------------- scoring


def _wrap(base: ClipModel, module: nn.Module) -> ClipModel:
    """``base``'s encoders around another set of weights (with its own text cache)."""
    return dataclasses.replace(base, model=module, head=None, _text_cache={})


def embed_part(model: ClipModel, pixels: Pixels, paths: Sequence[Path]) -> np.ndarray:
    chunks = [model.encode_tensors(pixels.batch(paths[i : i + 64])) for i in range(0, len(paths), 64)]
    return np.concatenate(chunks) if chunks else np.empty((0, model.dim), np.float32)


def score_part(model: ClipModel, pixels: Pixels, part: Part) -> float:
    """Top-1 zero-shot accuracy (template ensemble) on a labelled part; mean recall@1 on a captioned one."""
    paths = part.paths
    embs = embed_part(model, pixels, paths)
    if part.classes is not None:
        label_of = {e.path: e.label for e in part.examples}
        truth = np.array([part.classes.index(label_of[p] or "") for p in paths])
        label_embs = ensemble_embeddings(model, part.classes, templates_for(model))
        return float(((embs @ label_embs.T).argmax(axis=1) == truth).mean())
    texts = list(dict.fromkeys(e.caption or "" for e in part.examples))
    relevant = np.zeros((len(paths), len(texts)), bool)
    for e in part.examples:
        relevant[paths.index(e.path), texts.index(e.caption or "")] = True
    recall = retrieval_recall(embs, model.encode_texts(texts), relevant)
    return (recall["image_to_text"]["recall@1"] + recall["text_to_image"]["recall@1"]) / 2


# ---------------------------------------------------------------- what trains


_STEM = {"image": ("conv1.", "bn1.", "conv2.", "bn2.", "conv3.", "bn3.", "ln_pre.", "class_embedding",
                   "positional_embedding", "patch_dropout."),
         "text": ("token_embedding.", "positional_embedding")}


def _tower(module: nn.Module, tower: str) -> tuple[dict[str, nn.Parameter], list[str]]:
    """The tower's parameters (names relative to it) and its blocks' name prefixes, first to last."""
    if tower == "image":
        visual: Any = module.visual
        params = dict(visual.named_parameters())
        if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
            blocks = [f"transformer.resblocks.{i}." for i in range(len(visual.transformer.resblocks))]
        else:
            blocks = [f"layer{i}." for i in range(1, 5) if hasattr(visual, f"layer{i}")]
    else:
        params = {n: p for n, p in module.named_parameters()
                  if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")}
        text: Any = module.transformer
        blocks = [f"transformer.resblocks.{i}." for i in range(len(text.resblocks))]
    if not blocks:
        raise ConfigError("--unfreeze-last is not supported for this model's architecture")
    return params, blocks


def set_trainable(module: nn.Module, options: FinetuneOptions) -> int:
    """Freeze what the options lock; returns the number of trainable parameters."""
    if options.lock_image and options.lock_text:
        raise ConfigError("--lock-image and --lock-text together leave nothing to train")
    module.requires_grad_(False)
    clip: Any = module
    clip.logit_scale.requires_grad_(True)
    for tower, locked in (("image", options.lock_image), ("text", options.lock_text)):
        if locked:
            continue
        params, blocks = _tower(module, tower)
        last = blocks[-options.unfreeze_last:] if options.unfreeze_last else blocks
        for name, param in params.items():
            in_block = any(name.startswith(b) for b in blocks)
            before = name.startswith(_STEM[tower])
            if options.unfreeze_last is None or any(name.startswith(b) for b in last) or not (in_block or before):
                param.requires_grad_(True)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# images, tokens, positive mask, the files (so that the loss can find the replay images among them)
FinetuneBatch = tuple[Tensor, Tensor, Tensor, list[Path]]


@dataclass(frozen=True)
class Anchors:
    """The zero-shot model's embeddings of the replay images; training is pulled towards keeping them."""

    rows: dict[Path, int]
    targets: Tensor
    weight: float


def make_loss(anchors: Anchors | None) -> Callable[[nn.Module, FinetuneBatch, Any], Tensor]:
    """The contrastive loss, plus ``weight``·(1 − cos) between replay images' embeddings and their anchors."""

    def loss(model: nn.Module, batch: FinetuneBatch, device: Any) -> Tensor:
        images, tokens, mask, paths = batch
        clip: Any = model
        image_features = clip.encode_image(images.to(device), normalize=True)
        text_features = clip.encode_text(tokens.to(device), normalize=True)
        total = clip_loss(image_features, text_features, clip.logit_scale.exp(), mask)
        anchored = [i for i, p in enumerate(paths) if anchors is not None and p in anchors.rows]
        if anchors is not None and anchored:
            targets = anchors.targets[[anchors.rows[paths[i]] for i in anchored]].to(device)
            drift = 1 - (image_features[anchored].float() * targets).sum(dim=-1)
            total = total + anchors.weight * drift.mean()
        return total

    return loss


def batch_source(
    model: ClipModel, pixels: Pixels, train: Part, batch_size: int, seed: int, *, augment: bool = False,
    replay: Sequence[Example] = (), fixed: frozenset[Path] = frozenset(),
) -> Callable[[int], Iterator[FinetuneBatch]]:
    """Shuffled batches; labelled examples get a random template per epoch, positives by label or caption.

    Each epoch mixes in ``replay_count`` examples drawn afresh from ``replay``. ``augment`` jitters the
    images (not those in ``fixed``: the replay images keep their anchors).
    """
    templates = templates_for(model)
    extra = replay_count(train, replay)

    def epoch_examples(epoch: int) -> tuple[list[Example], list[str]]:
        rng = np.random.default_rng([seed, epoch, 1])
        drawn = [replay[i] for i in np.sort(rng.permutation(len(replay))[:extra])] if extra else []
        examples = [*train.examples, *drawn]
        picks = rng.integers(len(templates), size=len(examples))
        return examples, [e.caption or templates[k].format(e.label) for e, k in zip(examples, picks, strict=True)]

    def epoch_batches(epoch: int) -> Iterator[FinetuneBatch]:
        examples, texts = epoch_examples(epoch)
        order = np.random.default_rng([seed, epoch]).permutation(len(examples))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                break
            keys = [examples[i].label or texts[i] for i in idx]
            paths = [examples[i].path for i in idx]
            mask = torch.tensor([[a == b or pa == pb for b, pb in zip(keys, paths, strict=True)]
                                 for a, pa in zip(keys, paths, strict=True)])
            images = pixels.batch(paths)
            if augment:
                chosen = torch.tensor([p not in fixed for p in paths])
                images[chosen] = jitter(images[chosen], np.random.default_rng([seed, epoch, start]))
            yield images, model.tokenizer([texts[i] for i in idx]), mask, paths

    return epoch_batches


def jitter(images: Tensor, rng: np.random.Generator) -> Tensor:
    """Light augmentation: a mirror image half the time, a zoom out of up to 20 % and a shift of up to
    8 % of the side (reflected at the borders); nothing that could change what a caption says but a
    left-right reading."""
    n = len(images)
    if n == 0:
        return images
    scale = 1 / rng.uniform(0.8, 1.0, n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    shift = rng.uniform(-0.16, 0.16, (n, 2))  # grid units: the side is 2
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 1, 1] = scale * mirror, scale
    theta[:, :, 2] = shift
    grid = nn.functional.affine_grid(torch.from_numpy(theta), list(images.shape), align_corners=False)
    return nn.functional.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


def replay_count(train: Part, replay: Sequence[Example]) -> int:
    """Replay examples per epoch: REPLAY_RATIO per training example, drawn from the whole replay set."""
    return min(len(replay), REPLAY_RATIO * len(train.examples))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size + (1 if n % batch_size >= 2 else 0)


# ---------------------------------------------------------------- training with early stopping


def resume_path(out: Path) -> Path:
    """The resumable state of a run writing ``out``: beside it, removed when the run completes."""
    return out.with_name(out.name + ".resume")


@dataclass
class EarlyStopping:
    """Early stopping's memory; saved with the trainer so a resumed run decides as the first would have."""

    best_score: float
    best_epoch: int = 0  # 0: the zero-shot weights
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class Run:
    """One fine-tuning run's fixed parts."""

    base: ClipModel
    options: FinetuneOptions
    pixels: Pixels
    train: Part
    val: Part
    fingerprint: str
    progress: ProgressFn
    replay: Part | None = None  # original-domain examples mixed into training
    anchors: Anchors | None = None
    recipe: Recipe = CLIP_RECIPE  # the options resolved over the model's recipe


def _save_state(run: Run, trainer: ContrastiveTrainer, memory: EarlyStopping) -> None:
    path = resume_path(run.options.out)
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": run.fingerprint, "trainer": trainer.state_dict(),
                    "memory": vars(memory)}, tmp)


def _load_state(run: Run, trainer: ContrastiveTrainer, memory: EarlyStopping) -> EarlyStopping:
    """Continue a killed run of the same data and options; anything else starts afresh."""
    path = resume_path(run.options.out)
    if run.options.restart or not path.is_file():
        return memory
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file (any unpickling error): say so and start again
        run.progress(Event("note", info={"message": f"ignoring unreadable resume state {path}"}))
        return memory
    if saved.get("fingerprint") != run.fingerprint:
        run.progress(Event("note", info={"message": f"{path} is from other data or options: starting afresh"}))
        return memory
    trainer.load_state_dict(saved["trainer"])
    state = trainer.state
    run.progress(Event("note", info={"message": f"resuming from epoch {state.epoch}, step {state.step}",
                                     "resumed_epoch": state.epoch, "resumed_step": state.step}))
    return EarlyStopping(**saved["memory"])


def train(run: Run, module: nn.Module, config: TrainConfig) -> tuple[EarlyStopping, dict[str, Any]]:
    """Train ``module`` epoch by epoch, keeping the best weights on validation; resumes a killed run."""
    opts = run.options
    trainer = ContrastiveTrainer(module, config, device=run.base.device, amp=True, train_mode=lambda m: m.eval(),
                                 loss_fn=make_loss(run.anchors))
    memory = EarlyStopping(best_score=score_part(_wrap(run.base, run.base.model), run.pixels, run.val))
    memory = _load_state(run, trainer, memory)
    resumed = {"epoch": trainer.state.epoch, "step": trainer.state.step} if trainer.state.step else None
    fixed = frozenset(run.anchors.rows) if run.anchors is not None else frozenset()
    replay = run.replay.examples if run.replay is not None else ()
    batches = batch_source(run.base, run.pixels, run.train, _batch_size(run), opts.seed, augment=opts.augment,
                           replay=replay, fixed=fixed)
    last_save = time.monotonic()

    def on_step(state: Any) -> None:
        nonlocal last_save
        if time.monotonic() - last_save >= opts.save_every:
            _save_state(run, trainer, memory)
            last_save = time.monotonic()
        run.progress(Event("train", state.step, config.total_steps))

    while trainer.state.epoch < run.recipe.epochs and not memory.stopped_early:
        loss = trainer.run_epoch(batches(trainer.state.epoch), on_step)
        _after_epoch(run, module, memory, trainer.state.epoch, loss)
        _save_state(run, trainer, memory)
        last_save = time.monotonic()
        run.progress(Event("epoch", trainer.state.epoch, run.recipe.epochs, memory.history[-1]))
    return memory, {"resumed_from": resumed, "steps": trainer.state.step, "losses": trainer.state.losses}


def _after_epoch(run: Run, module: nn.Module, memory: EarlyStopping, epoch: int, loss: float) -> None:
    score = score_part(_wrap(run.base, module), run.pixels, run.val)
    gain = score > memory.best_score + 1e-9
    kept = score >= memory.best_score - 1e-9  # on a tie, the later weights: further down the cosine schedule
    if kept:
        memory.best_score, memory.best_epoch = score, epoch
        memory.best_state = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
    memory.bad_epochs = 0 if gain else memory.bad_epochs + 1
    memory.stopped_early = memory.bad_epochs >= run.recipe.patience
    memory.history.append({"epoch": epoch, "loss": loss, "val": score, "best": float(kept)})


# ---------------------------------------------------------------- WiSE-FT


def interpolate(zero: Mapping[str, Tensor], tuned: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """WiSE-FT: (1 − α)·θ_zero-shot + α·θ_fine-tuned for floating tensors; others from the tuned model."""
    out = {}
    for key, value in tuned.items():
        start = zero[key].to(value.device)
        out[key] = (1 - alpha) * start.to(value.dtype) + alpha * value if value.is_floating_point() else value
    return out


def sweep(
    run: Run, module: nn.Module, zero: Mapping[str, Tensor], tuned: Mapping[str, Tensor], ref_val: Part | None
) -> tuple[float, list[dict[str, float]]]:
    """Score each α on validation (and the reference's validation half); pick the best allowed α."""
    rows = []
    ref_zero = score_part(run.base, run.pixels, ref_val) if ref_val is not None else None
    for i, alpha in enumerate(run.options.alphas):
        module.load_state_dict(interpolate(zero, tuned, alpha))
        model = _wrap(run.base, module)
        row = {"alpha": alpha, "val": score_part(model, run.pixels, run.val)}
        if ref_val is not None:
            row["reference_val"] = score_part(model, run.pixels, ref_val)
        rows.append(row)
        run.progress(Event("sweep", i + 1, len(run.options.alphas), row))
    return choose_alpha(rows, run.options.max_reference_drop, ref_zero), rows


def choose_alpha(
    rows: Sequence[Mapping[str, float]], max_reference_drop: float, reference_zero: float | None = None
) -> float:
    """The α with the best validation score (the smaller α on a tie), among those that keep the
    reference's validation accuracy within ``max_reference_drop`` of the zero-shot model's."""
    allowed = [r for r in rows if reference_zero is None or "reference_val" not in r
               or r["reference_val"] >= reference_zero - max_reference_drop - 1e-9]
    if not allowed:
        return 0.0
    return min(allowed, key=lambda r: (-round(r["val"], 9), r["alpha"]))["alpha"]


# ---------------------------------------------------------------- linear head


def train_head(model: ClipModel, pixels: Pixels, train: Part, val: Part, classes: Sequence[str]) -> LinearHead:
    """A linear probe on frozen image embeddings, started from the zero-shot classifier; the L2 pull
    towards that start is chosen on validation."""
    x_train, y_train = _xy(model, pixels, train, classes)
    x_val, y_val = _xy(model, pixels, val, classes)
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


def _xy(model: ClipModel, pixels: Pixels, part: Part, classes: Sequence[str]) -> tuple[Tensor, Tensor]:
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


# ---------------------------------------------------------------- the run


def finetune(
    base: ClipModel, data: str | os.PathLike[str], options: FinetuneOptions, progress: ProgressFn = _quiet
) -> dict[str, Any]:
    """Fine-tune ``base`` on DATA and write ``options.out``; returns the report. Options left at None
    take the model's recipe (``DEMO_RECIPE`` for the demo model, ``CLIP_RECIPE`` otherwise).

    Raises ``DataError`` (before any training) for bad data and ``FinetuneRefused`` when the result
    is not better than zero-shot on the held-out test set (nothing is written then).
    """
    recipe = options.recipe(base.spec.is_demo)
    _check_options(options, recipe)
    with reproducible(recipe.threads, options.seed, deterministic=options.deterministic):
        return _finetune(base, data, options.resolved(base.spec.is_demo), recipe, progress)


@contextlib.contextmanager
def reproducible(threads: int | None, seed: int, *, deterministic: bool) -> Iterator[None]:
    """A fixed CPU thread count (sums split across threads round differently), a seeded torch and its
    deterministic algorithms (warnings only, where an operation has none) for the length of a run."""
    was = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(was[0])
        torch.use_deterministic_algorithms(was[1], warn_only=was[2])


def _finetune(
    base: ClipModel, data: str | os.PathLike[str], options: FinetuneOptions, recipe: Recipe, progress: ProgressFn
) -> dict[str, Any]:
    started = time.monotonic()
    pixels = Pixels(base)
    dataset, test_set = _load_sets(base, pixels, data, options, progress)
    train_part, val_part, test_part = _parts(dataset, test_set, options)
    reference = _reference(base, pixels, options, progress)
    if recipe.replay and (reference is None or reference.replay is None):
        raise ConfigError("--replay needs a reference set of the original domain (--reference DATA)")
    replay = reference.replay if reference is not None and reference.replay is not None else None
    run = Run(base, options, pixels, train_part, val_part, _fingerprint(base, dataset, test_set, options), progress,
              replay, _anchors(base, pixels, replay, options.replay_distill), recipe)
    module = copy.deepcopy(base.model).float()
    zero = {k: v.detach().clone() for k, v in base.model.state_dict().items()}
    memory, training = _train_if_asked(run, module)
    rows: list[dict[str, float]] = []
    alpha = 0.0
    if memory.best_state is not None:
        alpha, rows = sweep(run, module, zero, memory.best_state, reference.val if reference else None)
    module.load_state_dict(interpolate(zero, memory.best_state or zero, alpha))
    chosen = _wrap(base, module)
    head = train_head(chosen, pixels, train_part, val_part, val_part.classes or ()) if options.head else None
    report = {
        "out": str(options.out),
        "base": {"name": base.spec.name, "pretrained": base.spec.pretrained, "key": base.spec.key()},
        "data": _data_info(dataset, test_set, train_part, val_part, test_part, options),
        "metric": "top1" if test_part.classes is not None else "recall@1",
        "training": {**training, "best_epoch": memory.best_epoch, "stopped_early": memory.stopped_early,
                     "history": memory.history},
        "alpha": alpha,
        "sweep": rows,
        "test": _compare(base, chosen, head, pixels, test_part),
        "reference": _compare(base, chosen, None, pixels, reference.test, reference.source) if reference else None,
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    resume_path(options.out).unlink(missing_ok=True)  # the run is complete, whatever the verdict
    refuse_unless_better(report)
    checkpoint.save(options.out, module.state_dict(), _metadata(report, options), head)
    return report


def _train_if_asked(run: Run, module: nn.Module) -> tuple[EarlyStopping, dict[str, Any]]:
    """Training (with ``--epochs 0``: none, for a linear probe alone) and what the report says of it."""
    trainable = set_trainable(module, run.options)
    if not run.recipe.epochs:
        memory = EarlyStopping(best_score=score_part(run.base, run.pixels, run.val))
        return memory, {"resumed_from": None, "steps": 0, "losses": [], "trainable_params": 0}
    config = _train_config(run)
    memory, training = train(run, module, config)
    settings = {"lr": config.lr, "weight_decay": config.weight_decay, "warmup_steps": config.warmup_steps,
                "batch_size": _batch_size(run), "trainable_params": trainable}
    return memory, {**training, **settings}


def _check_options(options: FinetuneOptions, recipe: Recipe) -> None:
    if options.out.is_dir():
        raise ConfigError(f"--out {options.out} is a folder: give the checkpoint's file name")
    if options.head not in (None, "linear"):
        raise ConfigError(f"--head must be 'linear', got {options.head!r}")
    if not 0 < options.val_fraction < 1 or not 0 <= options.test_fraction < 1:
        raise ConfigError("--val-fraction must be in (0, 1) and --test-fraction in [0, 1)")
    if recipe.epochs < 0 or options.batch_size < 2 or options.accum_steps < 1 or recipe.patience < 1:
        raise ConfigError("need --epochs >= 0, --batch-size >= 2, --accum-steps >= 1, --patience >= 1")
    if not options.alphas or any(not 0 <= a <= 1 for a in options.alphas):
        raise ConfigError("--alphas must be numbers between 0 and 1")
    if options.unfreeze_last is not None and options.unfreeze_last < 1:
        raise ConfigError("--unfreeze-last must be at least 1")
    if recipe.threads is not None and recipe.threads < 1:
        raise ConfigError("--threads must be at least 1")


def _load_sets(
    base: ClipModel, pixels: Pixels, data: str | os.PathLike[str], options: FinetuneOptions, progress: ProgressFn
) -> tuple[Dataset, Dataset | None]:
    """Read DATA (and --test), decode every image once, and fail with all the counts if anything is bad."""
    sets = [read_dataset(data)] + ([read_dataset(options.test)] if options.test else [])
    checked = []
    for ds in sets:
        bad = pixels.add([e.path for e in ds.examples], base.image_size, progress)
        ds = ds.without(bad)
        ds.check(skip_bad=options.skip_bad)
        if ds.problems.count:
            progress(Event("note", info={"message": f"{ds.source}: left out {ds.problems.summary()}"}))
        checked.append(ds)
    if len(checked) == 2 and checked[0].labelled != checked[1].labelled:
        raise DataError("DATA and --test must both have labels, or both captions")
    return checked[0], checked[1] if len(checked) == 2 else None


def _parts(dataset: Dataset, test_set: Dataset | None, options: FinetuneOptions) -> tuple[Part, Part, Part]:
    test_fraction = 0.0 if test_set is not None else options.test_fraction
    if test_set is None and test_fraction <= 0:
        raise ConfigError("a held-out test set is required: pass --test DATA or a --test-fraction above 0")
    parts = split(dataset.examples, seed=options.seed, val_fraction=options.val_fraction, test_fraction=test_fraction)
    test = test_set.examples if test_set is not None else parts.test
    classes = None
    if options.head and not dataset.labelled:
        raise ConfigError("--head linear needs labelled data (class folders or a label column)")
    if dataset.labelled:
        classes = tuple(sorted(set(dataset.labels) | set(test_set.labels if test_set else [])))
        if len(classes) < 2:
            raise DataError(f"{dataset.source}: needs at least two classes")
    for name, examples in (("train", parts.train), ("validation", parts.val), ("test", test)):
        if len({e.path for e in examples}) < 2:
            raise DataError(f"{dataset.source}: too few examples for a {name} split ({parts.sizes()})")
    return Part("train", parts.train, classes), Part("val", parts.val, classes), Part("test", test, classes)


@dataclass(frozen=True)
class Reference:
    """A labelled set of the original domain: validation (α choice), test (report), replay (training)."""

    source: str
    val: Part
    test: Part
    replay: Part | None


def _reference(base: ClipModel, pixels: Pixels, options: FinetuneOptions, progress: ProgressFn) -> Reference | None:
    """The user's --reference split in parts, or for the demo model freshly rendered filled shapes."""
    if options.reference is not None:
        ds = read_dataset(options.reference)
        if not ds.labelled:
            raise DataError(f"--reference {options.reference} needs labels (class folders or a label column)")
        ds = ds.without(pixels.add([e.path for e in ds.examples], base.image_size, progress))
        ds.check(skip_bad=True)
        third = 1 / 3 if options.replay else 0.0
        parts = split(ds.examples, seed=options.seed, val_fraction=0.5 - third / 2, test_fraction=third)
        if not parts.val or not parts.train or (options.replay and not parts.test):
            raise DataError(f"--reference {options.reference} is too small to split: give 3+ images per class")
        classes = tuple(ds.labels)
        val, test = Part("reference_val", parts.val, classes), Part("reference", parts.train, classes)
        replay = Part("replay", parts.test[: options.replay], classes) if options.replay else None
        return Reference(ds.source, val, test, replay)
    if not base.spec.is_demo or options.reference_size <= 0:
        return None
    from mediasearch.lab.shapes import CLASSES, class_name, make_library

    classes = tuple(class_name(c, s) for c, s in CLASSES)
    rendered = []
    with tempfile.TemporaryDirectory(prefix="mediasearch-reference-") as tmp:
        # Fixed seeds: every run is compared on the same reference images.
        for seed, n in ((7001, options.reference_size), (7002, options.reference_size), (7003, options.replay)):
            files = make_library(Path(tmp) / str(seed), n, seed) if n else []
            examples = tuple(Example(p, None, class_name(c, s)) for p, c, s in files)
            pixels.add([e.path for e in examples], base.image_size, progress)
            rendered.append(examples)
    source = f"filled shapes (rendered, {options.reference_size} for validation and for test)"
    replay = Part("replay", rendered[2], classes) if options.replay else None
    return Reference(source, Part("reference_val", rendered[0], classes), Part("reference", rendered[1], classes),
                     replay)


def _fingerprint(base: ClipModel, dataset: Dataset, test_set: Dataset | None, options: FinetuneOptions) -> str:
    key = [base.spec.key(), dataset.digest(), test_set.digest() if test_set else None, options.fingerprint_fields()]
    return hashlib.blake2b(json.dumps(key, default=str).encode(), digest_size=12).hexdigest()


def _anchors(base: ClipModel, pixels: Pixels, replay: Part | None, weight: float) -> Anchors | None:
    """The zero-shot model's embeddings of the replay images (kept as they are by the loss)."""
    if replay is None or weight <= 0:
        return None
    paths = replay.paths
    return Anchors({p: i for i, p in enumerate(paths)}, torch.from_numpy(embed_part(base, pixels, paths)), weight)


def _batch_size(run: Run) -> int:
    replay = run.replay.examples if run.replay is not None else ()
    return min(run.options.batch_size, len(run.train.examples) + replay_count(run.train, replay))


def _train_config(run: Run) -> TrainConfig:
    options, recipe, batch = run.options, run.recipe, _batch_size(run)
    replay = run.replay.examples if run.replay is not None else ()
    steps = steps_per_epoch(len(run.train.examples) + replay_count(run.train, replay), batch)
    total = recipe.epochs * -(-steps // options.accum_steps)
    warmup = options.warmup_steps if options.warmup_steps is not None else max(1, total // 10)
    return TrainConfig(epochs=recipe.epochs, steps_per_epoch=steps, lr=recipe.lr, weight_decay=recipe.weight_decay,
                       warmup_steps=warmup, accum_steps=options.accum_steps)


# ---------------------------------------------------------------- report, verdict, checkpoint


def _compare(
    base: ClipModel, chosen: ClipModel, head: LinearHead | None, pixels: Pixels, part: Part, source: str | None = None
) -> dict[str, Any]:
    """Zero-shot vs the chosen model (and its head) on a held-out part."""
    out: dict[str, Any] = {"files": len(part.paths)}
    if source is not None:
        out["source"] = source
    out["zero_shot"] = score_part(base, pixels, part)
    out["fine_tuned"] = score_part(chosen, pixels, part)
    if head is not None and part.classes is not None:
        x, y = _xy(chosen, pixels, part, part.classes)
        index = [head.labels.index(c) for c in part.classes]
        out["linear_head"] = float((head.probabilities(x.numpy())[:, index].argmax(axis=1) == y.numpy()).mean())
    out["change"] = out["fine_tuned"] - out["zero_shot"]
    return out


def refuse_unless_better(report: Mapping[str, Any]) -> None:
    """Raise ``FinetuneRefused`` unless the result beats zero-shot on the test set and nothing is worse."""
    test, metric = report["test"], report["metric"]
    zero = test["zero_shot"]
    new = {"fine-tuned model": test["fine_tuned"]}
    if "linear_head" in test:
        new["linear head"] = test["linear_head"]
    where = f"on the held-out test set ({test['files']} files)"
    keep = f"nothing written to {report['out']}"
    worse = {name: v for name, v in new.items() if v < zero - 1e-9}
    if worse:
        name, value = next(iter(worse.items()))
        raise FinetuneRefused(
            f"refused: {where} the {name} scores {metric} {value:.3f} < zero-shot {zero:.3f}; {keep}", dict(report)
        )
    if max(new.values()) <= zero + 1e-9:
        why = "validation chose α = 0 (the zero-shot weights)" if report["alpha"] == 0 else "no gain"
        raise FinetuneRefused(f"refused: no improvement {where} ({metric} {zero:.3f}; {why}); {keep}", dict(report))


def _data_info(
    dataset: Dataset, test_set: Dataset | None, train: Part, val: Part, test: Part, options: FinetuneOptions
) -> dict[str, Any]:
    return {
        "source": dataset.source,
        "digest": dataset.digest(),
        "test_source": test_set.source if test_set else None,
        "test_digest": test_set.digest() if test_set else None,
        "kind": "labelled" if train.classes is not None else "captioned",
        "classes": list(train.classes) if train.classes is not None else None,
        "train": len(train.paths),
        "val": len(val.paths),
        "test": len(test.paths),
        "left_out": dataset.problems.count + (test_set.problems.count if test_set else 0),
        "seed": options.seed,
    }


def _metadata(report: Mapping[str, Any], options: FinetuneOptions) -> dict[str, Any]:
    """What the checkpoint carries about itself (readable without torch: ``checkpoint.read_metadata``)."""
    return {
        "base": report["base"],
        "data": {k: v for k, v in report["data"].items() if k != "classes"},
        "alpha": report["alpha"],
        "metric": report["metric"],
        "metrics": {"test": report["test"], "reference": report["reference"]},
        "training": {k: report["training"].get(k) for k in ("steps", "best_epoch", "stopped_early", "trainable_params",
                                                            "lr", "weight_decay")},
        "options": {**options.fingerprint_fields(), "head": options.head, "alphas": list(options.alphas)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_alphas(text: str) -> tuple[float, ...]:
    """'0,0.5,1' or 'start:stop:step' (inclusive) → the α values to try."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            count = int(round((stop - start) / step)) + 1
            return tuple(round(start + i * step, 6) for i in range(max(count, 0)))
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--alphas: expected 'a,b,c' or 'start:stop:step', got {text!r}") from None
