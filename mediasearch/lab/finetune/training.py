"""What trains (towers, stems), the loss and batches, and training with early stopping and a resumable state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mediasearch.clip.model import ClipModel
from mediasearch.clip.zeroshot import templates_for
from mediasearch.errors import ConfigError
from mediasearch.fsutil import atomic_path
from mediasearch.lab.dataset import Example
from mediasearch.lab.finetune.options import CLIP_RECIPE, REPLAY_RATIO, Event, FinetuneOptions, ProgressFn, Recipe
from mediasearch.lab.finetune.parts import Part, Pixels, score_part, wrap
from mediasearch.lab.train import ContrastiveTrainer, TrainConfig, clip_loss

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
    memory = EarlyStopping(best_score=score_part(wrap(run.base, run.base.model), run.pixels, run.val))
    memory = _load_state(run, trainer, memory)
    resumed = {"epoch": trainer.state.epoch, "step": trainer.state.step} if trainer.state.step else None
    fixed = frozenset(run.anchors.rows) if run.anchors is not None else frozenset()
    replay = run.replay.examples if run.replay is not None else ()
    batches = batch_source(run.base, run.pixels, run.train, batch_size_of(run), opts.seed, augment=opts.augment,
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
    score = score_part(wrap(run.base, module), run.pixels, run.val)
    gain = score > memory.best_score + 1e-9
    kept = score >= memory.best_score - 1e-9  # on a tie, the later weights: further down the cosine schedule
    if kept:
        memory.best_score, memory.best_epoch = score, epoch
        memory.best_state = {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}
    memory.bad_epochs = 0 if gain else memory.bad_epochs + 1
    memory.stopped_early = memory.bad_epochs >= run.recipe.patience
    memory.history.append({"epoch": epoch, "loss": loss, "val": score, "best": float(kept)})


def batch_size_of(run: Run) -> int:
    replay = run.replay.examples if run.replay is not None else ()
    return min(run.options.batch_size, len(run.train.examples) + replay_count(run.train, replay))


def train_config(run: Run) -> TrainConfig:
    options, recipe, batch = run.options, run.recipe, batch_size_of(run)
    replay = run.replay.examples if run.replay is not None else ()
    steps = steps_per_epoch(len(run.train.examples) + replay_count(run.train, replay), batch)
    total = recipe.epochs * -(-steps // options.accum_steps)
    warmup = options.warmup_steps if options.warmup_steps is not None else max(1, total // 10)
    return TrainConfig(epochs=recipe.epochs, steps_per_epoch=steps, lr=recipe.lr, weight_decay=recipe.weight_decay,
                       warmup_steps=warmup, accum_steps=options.accum_steps)
