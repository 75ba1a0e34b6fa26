"""Learned prompts (CoOp): 4 examples per class beat the hand-written template on outlined shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.shapes import CLASSES, render


def _outlined(folder: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(per_class):
        for colour, shape in CLASSES:
            target = folder / f"{colour}_{shape}"
            target.mkdir(parents=True, exist_ok=True)
            render(colour, shape, rng=rng, size=(128, 128), outlined=True, background="textured").save(
                target / f"{i}.png"
            )
    return folder


def test_learned_prompts_beat_the_single_template_on_outlined_shapes(demo_model: Any, tmp_path: Path) -> None:
    from mediasearch.prompt_learning import PromptOptions, compare, load_prompts, train_from_set

    train = _outlined(tmp_path / "train", 4, seed=1)
    test = _outlined(tmp_path / "test", 3, seed=2)
    out = tmp_path / "prompts.safetensors"
    info = train_from_set(demo_model, train, out, shots=4, options=PromptOptions(steps=60))
    assert info["examples"] == 96
    scores = compare(demo_model, load_prompts(out), test)
    assert scores["learned"] > scores["single"] + 0.05, scores


def test_finetune_prompt_learning_cli_and_classify_with_the_prompts(cli: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for colour, shape in (("red", "circle"), ("blue", "square")):
        (tmp_path / "set" / f"{colour}_{shape}").mkdir(parents=True)
        render(colour, shape, rng=rng, size=(96, 96)).save(tmp_path / "set" / f"{colour}_{shape}" / "a.png")
    out = tmp_path / "p.safetensors"
    report = cli.json("finetune", str(tmp_path / "set"), "--out", str(out), "--prompt-learning", "--shots", "1",
                      "--test", str(tmp_path / "set"))
    assert report["labels"] == ["blue square", "red circle"] and report["test_top1"]["learned"] == 1.0
    rows = cli.json("classify", str(tmp_path / "set" / "red_circle" / "a.png"), "--prompts", str(out))
    assert rows[0]["labels"][0]["label"] == "red circle"
