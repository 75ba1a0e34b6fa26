"""Prompt ensemble vs raw text on the demo model: retrieval precision over freshly rendered images.

    python scripts/eval_prompts.py [--n 240] [--seed 4242]

Prints, for the 24 class queries and the 10 single-attribute queries, precision@5, precision@10 and
mean average precision with the template ensemble (the default) and with --raw text.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mediasearch.decode import load_image
from mediasearch.model import ModelSpec, load_model
from mediasearch.search import text_vector
from mediasearch.shapes import CLASSES, COLOURS, SHAPES, make_library


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = relevant[order]
    if not hits.any():
        return 0.0
    precision_at = np.cumsum(hits) / (np.arange(len(hits)) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--seed", type=int, default=4242)
    args = parser.parse_args()
    model = load_model(ModelSpec("demo"), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_library(Path(tmp), args.n, args.seed)
        images = [load_image(str(p), target=model.image_size)[0] for p, _, _ in files]
        embs = model.encode_images(images)
    colours = np.array([c for _, c, _ in files])
    shapes = np.array([s for _, _, s in files])
    queries: list[tuple[str, str, np.ndarray]] = []
    for c, s in CLASSES:
        queries.append(("class", f"a {c} {s}", (colours == c) & (shapes == s)))
    queries += [("attribute", c, colours == c) for c in COLOURS]
    queries += [("attribute", f"a {s}", shapes == s) for s in SHAPES]
    print(f"{len(files)} images; {len(queries)} queries\n")
    print(f"{'queries':<10} {'prompting':<10} {'P@5':>6} {'P@10':>6} {'mAP':>6}")
    for group in ("class", "attribute"):
        for raw in (False, True):
            p5, p10, aps = [], [], []
            for g, text, relevant in queries:
                if g != group:
                    continue
                scores = embs @ text_vector(model, text, raw=raw)
                order = np.argsort(-scores)
                p5.append(relevant[order[:5]].mean())
                p10.append(relevant[order[:10]].mean())
                aps.append(average_precision(scores, relevant))
            name = "raw" if raw else "ensemble"
            print(f"{group:<10} {name:<10} {np.mean(p5):6.3f} {np.mean(p10):6.3f} {np.mean(aps):6.3f}")


if __name__ == "__main__":
    main()
