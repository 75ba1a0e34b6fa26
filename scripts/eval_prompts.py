"""Prompt ensemble vs raw text on the demo model: retrieval quality over freshly rendered images.

    python scripts/eval_prompts.py [--n 240] [--seed 4242] [--contrast 1.0 0.35]

For the 24 class queries and the 10 single-attribute queries, prints precision@5, precision@10, mean
average precision and the separation margin (lowest relevant score minus highest irrelevant score,
averaged over queries: positive means every relevant image outranks every other) with the template
ensemble (the default) and with --raw text, at each shape contrast (1.0 = the normal domain; lower
values pull the shape's colour toward the background and make the task harder).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mediasearch.clip.loading import load_model
from mediasearch.clip.spec import ModelSpec
from mediasearch.lab.shapes import CLASSES, COLOURS, SHAPES, render, save_image
from mediasearch.media.decode import load_image
from mediasearch.search.query import text_vector


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = relevant[order]
    if not hits.any():
        return 0.0
    precision_at = np.cumsum(hits) / (np.arange(len(hits)) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def render_set(folder: Path, n: int, seed: int, contrast: float) -> list[tuple[Path, str, str]]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        colour, shape = CLASSES[i % len(CLASSES)]
        fmt = ("jpg", "png", "webp")[i % 3]
        path = folder / f"{i:04d}.{fmt}"
        save_image(render(colour, shape, rng=rng, contrast=contrast), path, fmt, rng=rng)
        files.append((path, colour, shape))
    return files


def evaluate(model: object, embs: np.ndarray, files: list[tuple[Path, str, str]], contrast: float) -> None:
    colours = np.array([c for _, c, _ in files])
    shapes = np.array([s for _, _, s in files])
    queries: list[tuple[str, str, np.ndarray]] = []
    for c, s in CLASSES:
        queries.append(("class", f"{c} {s}", (colours == c) & (shapes == s)))
    queries += [("attribute", c, colours == c) for c in COLOURS]
    queries += [("attribute", s, shapes == s) for s in SHAPES]
    for group in ("class", "attribute"):
        for raw in (False, True):
            p5, p10, aps, margins = [], [], [], []
            for g, text, relevant in queries:
                if g != group:
                    continue
                scores = embs @ text_vector(model, text, raw=raw)  # type: ignore[arg-type]
                order = np.argsort(-scores)
                p5.append(relevant[order[:5]].mean())
                p10.append(relevant[order[:10]].mean())
                aps.append(average_precision(scores, relevant))
                margins.append(scores[relevant].min() - scores[~relevant].max())
            name = "raw" if raw else "ensemble"
            print(
                f"{contrast:>8.2f} {group:<10} {name:<10} {np.mean(p5):6.3f} {np.mean(p10):6.3f} "
                f"{np.mean(aps):6.3f} {np.mean(margins):+7.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--contrast", type=float, nargs="+", default=[1.0, 0.35])
    args = parser.parse_args()
    model = load_model(ModelSpec("demo"), device="cpu")
    print(f"{args.n} images per contrast; 24 class queries ('red circle'), 10 attribute queries ('red')\n")
    print(f"{'contrast':>8} {'queries':<10} {'prompting':<10} {'P@5':>6} {'P@10':>6} {'mAP':>6} {'margin':>7}")
    for contrast in args.contrast:
        with tempfile.TemporaryDirectory() as tmp:
            files = render_set(Path(tmp), args.n, args.seed, contrast)
            images = [load_image(str(p), target=model.image_size)[0] for p, _, _ in files]
            embs = model.encode_images(images)
        evaluate(model, embs, files, contrast)


if __name__ == "__main__":
    main()
