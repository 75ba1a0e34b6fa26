"""What a fine-tune run is asked to do (options, recipes) and what it reports as it goes (events)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediasearch.errors import ConfigError

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


def quiet(_: Event) -> None:
    return None


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
