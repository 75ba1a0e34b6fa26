#!/usr/bin/env python
"""`generate` on the demo model: does the model read each generated image back as its prompt's class?

    python scripts/generate_check.py [--steps 40] [--seed 0] [--out DIR] [--classes "red circle" ...]

For each class (default: all 24 of the demo domain) generates "a photo of a CLASS" with the code
behind `mediasearch generate`, writes the PNG to --out, and prints the prompt's score before and after,
the class the demo model's zero-shot classifier (template ensemble) gives the written file, and the
seconds taken. Ends with how many classes came back right.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import ModelSpec
from mediasearch.clip.zeroshot import ensemble_embeddings, templates_for
from mediasearch.lab.generate import GenerateOptions, generate
from mediasearch.lab.shapes import CLASSES, class_name
from mediasearch.search.query import encode_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("generated"))
    parser.add_argument("--classes", nargs="+", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(ModelSpec("demo"), device="cpu")
    labels = [class_name(c, s) for c, s in CLASSES]
    label_embs = ensemble_embeddings(model, labels, templates_for(model))
    args.out.mkdir(parents=True, exist_ok=True)
    options = GenerateOptions(steps=args.steps, lr=args.lr, views=args.views, seed=args.seed)
    print(f"{'class':<18} {'before':>7} {'after':>7}  {'read back as':<18} {'seconds':>7}")
    right = 0
    for label in args.classes or labels:
        started = time.monotonic()
        result = generate(model, f"a photo of a {label}", options)
        path = args.out / f"{label.replace(' ', '_')}.png"
        result.image.save(path, format="PNG")
        embs, _, _ = encode_files(model, [path])
        seen = labels[int((embs @ label_embs.T).argmax())]
        right += seen == label
        print(f"{label:<18} {result.initial_score:>7.3f} {result.final_score:>7.3f}  {seen:<18} "
              f"{time.monotonic() - started:>7.1f}")
    total = len(args.classes or labels)
    print(f"\n{right}/{total} generated images classified as their prompt's class; PNGs in {args.out}")
    return 0 if right == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
