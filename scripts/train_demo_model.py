#!/usr/bin/env python
"""Train the bundled demo model (`--model demo`) from scratch on the synthetic shapes domain.

    python scripts/train_demo_model.py            # writes mediasearch/demo_model/

Renders a seeded training set (JPEG/PNG/WebP round trips, 200-1600 px, any aspect ratio up to 2.5:1),
preprocesses it once with the exact open_clip transform the model's config declares, trains a tiny
CLIP with full, colour-only and shape-only captions, then evaluates on freshly rendered files and
writes the weights (fp16 safetensors), the open_clip local-dir config and TRAINING.md.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file

from mediasearch.lab import shapes
from mediasearch.lab.train import Batch, BatchSource, TrainConfig, train_contrastive

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "mediasearch" / "demo_model"
WEIGHTS_NAME = "open_clip_model.safetensors"  # the first name open_clip's local-dir loader looks for

IMAGE_SIZE = 96
MODEL_CFG: dict = {
    "embed_dim": 128,
    # open_clip's ModifiedResNet (a list of layers): convolutions learn outlines from little data, where a
    # ViT of this size trained from scratch learned the colours but barely the shapes.
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 16, "head_width": 64},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 3},
}
PREPROCESS_CFG: dict = {
    "size": IMAGE_SIZE,
    "mode": "RGB",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "squash",  # shapes sit anywhere in frames of any aspect: never crop them off
    "fill_color": 0,
}
FORMATS = ("jpg", "png", "webp")
Preprocess = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]

# Captions. {a} is the article for the word after it. Partial captions teach single-word queries.
FULL_TEMPLATES = (
    "a photo of {a} {c} {s}", "{c} {s}", "{a} {c} {s}", "a picture of {a} {c} {s}", "an image of {a} {c} {s}",
    "{a} {c} {s} on a grey background", "{a} {c} {s} on a plain background", "a photo of the {c} {s}",
    "the {c} {s}", "a drawing of {a} {c} {s}", "{a} {s} that is {c}", "a {s} coloured {c}",
    "a photo of a {c} coloured {s}", "a {c} {s} shape",
)
COLOUR_TEMPLATES = (
    "{c}", "something {c}", "{a} {c} shape", "a photo of something {c}", "{a} {c} object",
    "a photo of {a} {c} shape", "the colour {c}", "{c} colour", "a picture of something {c}",
)
SHAPE_TEMPLATES = (
    "{s}", "a {s}", "a photo of a {s}", "a picture of a {s}", "an image of a {s}", "a {s} shape",
    "the {s}", "a {s} on a grey background", "a photo of the {s}",
)
CAPTION_MIX = (0.6, 0.2, 0.2)  # full, colour-only, shape-only


@dataclass(frozen=True)
class Caption:
    text: str
    colour: str | None  # None: the caption does not name a colour
    shape: str | None


def _fill(template: str, colour: str | None, shape: str | None) -> str:
    word = colour if "{c}" in template else shape
    article = "an" if word and word[0] in "aeiou" else "a"
    return template.format(a=article, c=colour, s=shape)


def caption_bank() -> list[list[Caption]]:
    """For each class index, the captions that may describe it, grouped full / colour / shape."""
    bank = []
    for colour, shape in shapes.CLASSES:
        full = [Caption(_fill(t, colour, shape), colour, shape) for t in FULL_TEMPLATES]
        by_colour = [Caption(_fill(t, colour, None), colour, None) for t in COLOUR_TEMPLATES]
        by_shape = [Caption(_fill(t, None, shape), None, shape) for t in SHAPE_TEMPLATES]
        bank.append([*full, *by_colour, *by_shape])
    return bank


@functools.lru_cache(maxsize=1)
def build_preprocess() -> Preprocess:
    """The inference transform the saved config declares (open_clip builds the same one on load)."""
    cfg = open_clip.transform.PreprocessCfg(**PREPROCESS_CFG)
    return open_clip.transform.image_transform_v2(cfg, is_train=False)


# ---------------------------------------------------------------- data

def _render_one(job: tuple[int, int]) -> np.ndarray:
    """Render, encode+decode through a random format, preprocess; return the uint8 model input."""
    index, seed = job
    rng = np.random.default_rng([seed, index])
    colour, shape = shapes.CLASSES[index % len(shapes.CLASSES)]
    img = shapes.render(colour, shape, rng=rng)
    buffer = io.BytesIO()
    shapes.save_image(img, buffer, FORMATS[int(rng.integers(len(FORMATS)))], rng=rng)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        tensor = build_preprocess()(decoded.convert("RGB"))
    return _to_uint8(tensor)


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Undo Normalize: the transform's output came from uint8 pixels, so this is exact after rounding."""
    mean = torch.tensor(PREPROCESS_CFG["mean"]).view(3, 1, 1)
    std = torch.tensor(PREPROCESS_CFG["std"]).view(3, 1, 1)
    return (tensor * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(PREPROCESS_CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS_CFG["std"]).view(1, 3, 1, 1)
    return (pixels.float() / 255 - mean) / std


def render_dataset(n: int, seed: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` preprocessed images (uint8 [n,3,S,S]) balanced over the classes, and their class indices."""
    jobs = [(i, seed) for i in range(n)]
    started, images = time.monotonic(), []
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for i, pixels in enumerate(pool.imap(_render_one, jobs, chunksize=64)):
            images.append(pixels)
            if (i + 1) % 2000 == 0:
                print(f"  rendered {i + 1}/{n} ({time.monotonic() - started:.0f}s)", flush=True)
    labels = np.arange(n) % len(shapes.CLASSES)
    return np.stack(images), labels


def load_or_render(n: int, seed: int, workers: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The training set, from ``cache`` when it holds this exact (n, seed) set."""
    if cache is not None and cache.exists():
        data = np.load(cache)
        if int(data["seed"]) == seed and len(data["labels"]) == n:
            print(f"loaded {n} cached images from {cache}")
            return data["images"], data["labels"]
    images, labels = render_dataset(n, seed, workers)
    if cache is not None:
        np.savez(cache, images=images, labels=labels, seed=seed)
    return images, labels


def batch_source(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int) -> BatchSource:
    """Shuffled batches with a random caption per image and the attribute-based positive mask."""
    bank = caption_bank()
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=MODEL_CFG["text_cfg"]["context_length"])
    tokens = [tokenizer([c.text for c in captions]) for captions in bank]
    colours = np.array([list(shapes.COLOURS).index(c) for c, _ in shapes.CLASSES])
    kinds = np.array([0] * len(FULL_TEMPLATES) + [1] * len(COLOUR_TEMPLATES) + [2] * len(SHAPE_TEMPLATES))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(kinds))])
    shape_of = np.array([list(shapes.SHAPES).index(s) for _, s in shapes.CLASSES])

    def epoch_batches(epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            cls = labels[idx]
            kind = rng.choice(3, size=len(idx), p=CAPTION_MIX)
            pick = offsets[kind] + (rng.random(len(idx)) * np.bincount(kinds)[kind]).astype(int)
            text = torch.stack([tokens[c][p] for c, p in zip(cls, pick, strict=True)])
            same_colour = colours[cls][:, None] == colours[cls][None, :]
            same_shape = shape_of[cls][:, None] == shape_of[cls][None, :]
            mask = np.where(kind[None, :] == 1, same_colour, np.where(kind[None, :] == 2, same_shape,
                                                                      same_colour & same_shape))
            pixels = torch.from_numpy(images[idx])
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            pixels[flip] = pixels[flip].flip(-1)  # a mirrored shape is the same shape
            yield _normalise(pixels), text, torch.from_numpy(mask)

    return epoch_batches


# ---------------------------------------------------------------- model

def create_model(seed: int) -> open_clip.CLIP:
    torch.manual_seed(seed)
    return open_clip.CLIP(**MODEL_CFG)


def save_model(model: torch.nn.Module, out_dir: Path) -> None:
    """Write fp16 safetensors and the open_clip local-dir config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.safetensors"):
        stale.unlink()
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    (out_dir / WEIGHTS_NAME).chmod(0o644)  # safetensors writes 0600; package data must be world-readable
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_saved(out_dir: Path) -> tuple[open_clip.CLIP, Preprocess, Tokenizer]:
    """Load the written model exactly as mediasearch will: through open_clip's local-dir schema."""
    name = f"local-dir:{out_dir.resolve()}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def _encode_texts(model: open_clip.CLIP, tokenizer: Tokenizer, texts: Sequence[str]) -> torch.Tensor:
    return model.encode_text(tokenizer(list(texts)), normalize=True)


@torch.no_grad()
def _encode_files(model: open_clip.CLIP, preprocess: Preprocess, paths: Sequence[Path]) -> torch.Tensor:
    batch = []
    for path in paths:
        with Image.open(path) as img:
            batch.append(preprocess(img.convert("RGB")))
    return torch.cat([model.encode_image(torch.stack(batch[i:i + 64]), normalize=True)
                      for i in range(0, len(batch), 64)])


def _precision_at(scores: torch.Tensor, relevant: np.ndarray, k: int) -> float:
    top = torch.topk(scores, k).indices.numpy()
    return float(relevant[top].mean())


def evaluate(out_dir: Path, n: int, seed: int) -> dict[str, float]:
    """Zero-shot and retrieval figures of the saved model on ``n`` fresh files (never seen in training)."""
    model, preprocess, tokenizer = load_saved(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        library = shapes.make_library(Path(tmp), n, seed)
        image_features = _encode_files(model, preprocess, [p for p, _, _ in library])
    truth = np.array([shapes.CLASSES.index((c, s)) for _, c, s in library])
    prompts = [f"a photo of a {c} {s}" for c, s in shapes.CLASSES]
    sims = image_features @ _encode_texts(model, tokenizer, prompts).T  # [n, 24]
    hits5 = [int((truth[torch.topk(sims[:, k], 5).indices.numpy()] == k).sum()) for k in range(len(prompts))]
    colour_of = np.array([c for _, c, _ in library])
    shape_of = np.array([s for _, _, s in library])
    colour_sims = image_features @ _encode_texts(model, tokenizer, list(shapes.COLOURS)).T
    shape_sims = image_features @ _encode_texts(model, tokenizer, [f"a photo of a {s}" for s in shapes.SHAPES]).T
    colour_p10 = [_precision_at(colour_sims[:, k], colour_of == c, 10) for k, c in enumerate(shapes.COLOURS)]
    shape_p10 = [_precision_at(shape_sims[:, k], shape_of == s, 10) for k, s in enumerate(shapes.SHAPES)]
    colour_rp = [_precision_at(colour_sims[:, k], colour_of == c, int((colour_of == c).sum()))
                 for k, c in enumerate(shapes.COLOURS)]
    shape_rp = [_precision_at(shape_sims[:, k], shape_of == s, int((shape_of == s).sum()))
                for k, s in enumerate(shapes.SHAPES)]
    return {
        "zero_shot_top1": float((sims.argmax(1).numpy() == truth).mean()),
        "top5_hits_min": float(min(hits5)),
        "top5_hits_mean": float(np.mean(hits5)),
        "colour_word_top1": float((colour_sims.argmax(1).numpy() == [list(shapes.COLOURS).index(c)
                                                                      for c in colour_of]).mean()),
        "shape_prompt_top1": float((shape_sims.argmax(1).numpy() == [shapes.SHAPES.index(s)
                                                                      for s in shape_of]).mean()),
        "colour_word_p10_min": min(colour_p10),
        "shape_prompt_p10_min": min(shape_p10),
        "colour_word_rprec_mean": float(np.mean(colour_rp)),
        "shape_prompt_rprec_mean": float(np.mean(shape_rp)),
    }


def check_loaded_matches(model: open_clip.CLIP, out_dir: Path) -> float:
    """Max difference between the trained model's features and the reloaded fp16 weights' features."""
    loaded, _, tokenizer = load_saved(out_dir)
    pixels = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a photo of a red circle", "blue"])
    with torch.no_grad():
        diffs = [
            (model.encode_image(pixels, normalize=True) - loaded.encode_image(pixels, normalize=True)).abs().max(),
            (model.encode_text(tokens, normalize=True) - loaded.encode_text(tokens, normalize=True)).abs().max(),
        ]
    return float(max(diffs))


# ---------------------------------------------------------------- record

def write_record(out_dir: Path, args: argparse.Namespace, losses: list[float], metrics: dict[str, float],
                 timings: dict[str, float]) -> None:
    weights_mb = (out_dir / WEIGHTS_NAME).stat().st_size / 1e6
    lines = [
        "# The demo model: how these weights were made",
        "",
        "Generated by `scripts/train_demo_model.py`; do not edit by hand. Re-create with:",
        "",
        "```",
        f"python scripts/train_demo_model.py --seed {args.seed} --n-train {args.n_train} "
        f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr}",
        "```",
        "",
        "## Model",
        "",
        "- open_clip `CLIP`, config in `open_clip_config.json` (load with "
        "`open_clip.create_model_and_transforms('local-dir:<this folder>')`).",
        f"- Vision: modified ResNet {json.dumps(MODEL_CFG['vision_cfg'])}.",
        f"- Text: transformer {json.dumps(MODEL_CFG['text_cfg'])}, open_clip's standard CLIP BPE tokenizer.",
        f"- Embedding dim {MODEL_CFG['embed_dim']}. Weights `{WEIGHTS_NAME}`, fp16, {weights_mb:.2f} MB "
        "(most of it the 49408-token embedding).",
        f"- Preprocess: `{json.dumps(PREPROCESS_CFG)}`. `squash` resizes the whole frame to "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} without cropping, because shapes can sit anywhere.",
        "",
        "## Data",
        "",
        f"- {args.n_train} images from `mediasearch.shapes.render` (seed {args.seed}), balanced over the 24 "
        "classes: 200-1600 px per side (log-uniform), aspect up to 2.5:1 either way, plain or gradient "
        "grey backgrounds with noise, blur on a quarter, rotation up to 20 degrees, shape a fifth to three "
        "quarters of the short side, colour jitter +-20 per channel.",
        "- Each image was encoded as JPEG, PNG or WebP (random quality 60-95), decoded by Pillow and passed "
        "through the open_clip transform above, the same path as inference. Random horizontal flips per epoch.",
        f"- Captions drawn per image and epoch: {int(CAPTION_MIX[0] * 100)}% full ({len(FULL_TEMPLATES)} "
        f"phrasings, e.g. \"a photo of a red circle\", \"red circle\"), {int(CAPTION_MIX[1] * 100)}% "
        f"colour-only ({len(COLOUR_TEMPLATES)}, e.g. \"red\", \"something red\", \"a red shape\"), "
        f"{int(CAPTION_MIX[2] * 100)}% shape-only ({len(SHAPE_TEMPLATES)}, e.g. \"a circle\", \"a photo of a "
        "circle\"). The loss's positive mask comes from attributes: a caption is a positive for every image "
        "in the batch whose colour and shape it is consistent with.",
        "- No neutral captions (\"a photo\"): they match every image, so they carry no contrastive signal; "
        "their embeddings are whatever the text tower makes of them.",
        "",
        "## Training",
        "",
        f"- `mediasearch.train.train_contrastive`: AdamW lr {args.lr}, weight decay 0.1, "
        f"warmup {args.warmup} steps, cosine; batch {args.batch_size}; {args.epochs} epochs; "
        "logit scale learnable, clamped to ln(100).",
        f"- Loss per epoch: {', '.join(f'{x:.3f}' for x in losses)}.",
        f"- Time on {platform.processor() or platform.machine()} with {torch.get_num_threads()} threads: "
        f"rendering {timings['render']:.0f}s, training {timings['train']:.0f}s, total {timings['total']:.0f}s "
        "wall clock" + (f"; {timings['cpu']:.0f} CPU seconds in all" if "cpu" in timings else "")
        + " (wall time grows when other jobs share the cores).",
        "",
        f"## Evaluation ({args.n_eval} fresh files, seed {args.eval_seed}, JPEG/PNG/WebP via Pillow)",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| {k} | {v:.3f} |" for k, v in metrics.items()),
        "",
        "- zero_shot_top1: 24-way, prompt \"a photo of a {colour} {shape}\".",
        "- top5_hits_min/mean: for each of the 24 prompts, how many of the 5 nearest images are that class.",
        "- colour_word_*: query is the bare colour word (\"red\"); shape_prompt_*: \"a photo of a circle\". "
        "p10 is precision@10 (min over queries); rprec is precision at the number of relevant images.",
        "",
    ]
    (out_dir / "TRAINING.md").write_text("\n".join(lines))


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its (finished) render workers."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--n-eval", type=int, default=240)
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=None, help="npz file to reuse the rendered set")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    print(f"rendering {args.n_train} training images (seed {args.seed})", flush=True)
    images, labels = load_or_render(args.n_train, args.seed, args.workers, args.cache)
    rendered = time.monotonic()
    model = create_model(args.seed)
    steps = len(labels) // args.batch_size
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=steps, lr=args.lr, warmup_steps=args.warmup)
    losses = train_contrastive(model, batch_source(images, labels, args.batch_size, args.seed), config,
                               log=lambda line: print(line, flush=True))
    trained = time.monotonic()
    save_model(model, args.out)
    drift = check_loaded_matches(model, args.out)
    print(f"reloaded through local-dir: max feature difference (fp16 weights) {drift:.4f}")
    metrics = evaluate(args.out, args.n_eval, args.eval_seed)
    timings = {"render": rendered - started, "train": trained - rendered, "total": time.monotonic() - started,
               "cpu": _cpu_seconds()}
    write_record(args.out, args, losses, metrics, timings)
    print(json.dumps(metrics, indent=2))
    print(f"total {timings['total']:.0f}s wall, {timings['cpu']:.0f}s CPU; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
