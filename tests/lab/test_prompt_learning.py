"""Learned prompts (CoOp): 4 examples per class beat the hand-written template on outlined shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.lab.shapes import CLASSES, render


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
    from mediasearch.clip.prompts import load_prompts
    from mediasearch.lab.prompt_learning import PromptOptions, compare, train_from_set

    train = _outlined(tmp_path / "train", 4, seed=1)
    test = _outlined(tmp_path / "test", 3, seed=2)
    out = tmp_path / "prompts.safetensors"
    info = train_from_set(demo_model, train, out, shots=4, options=PromptOptions(steps=60))
    assert info["examples"] == 96
    scores = compare(demo_model, load_prompts(out), test)
    assert scores["learned"] > scores["single"] + 0.05, scores
    # `eval zeroshot --prompts` puts the learned prompts beside the hand-written ones, with the same figures.
    from mediasearch.lab.evaluate import eval_zeroshot

    methods = eval_zeroshot(demo_model, [test], prompts=out)["domains"][0]["methods"]
    assert set(methods) >= {"prompt", "ensemble", "learned"}
    assert methods["learned"]["top1"] == pytest.approx(scores["learned"])
    assert methods["prompt"]["top1"] == pytest.approx(scores["single"])
    assert methods["ensemble"]["top1"] == pytest.approx(scores["ensemble"])


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
    methods = cli.json("eval", "zeroshot", str(tmp_path / "set"), "--prompts", str(out))["domains"][0]["methods"]
    assert methods["learned"]["top1"] == 1.0
    # `tag --prompts`: each indexed file gets the learned class it shows, and new files will too.
    cli.json("index", str(tmp_path / "set"))
    tagged = cli.json("tag", "--prompts", str(out))
    assert tagged["tags"] == {"red circle": 1, "blue square": 1}
    hits = cli.json("query", "a shape", "--tag", "red circle")
    assert [Path(h["path"]).parent.name for h in hits] == ["red_circle"]
    render("red", "circle", rng=rng, size=(96, 96)).save(tmp_path / "set" / "red_circle" / "b.png")
    cli.json("index", str(tmp_path / "set"))
    assert cli.json("tags") == {"red circle": 2, "blue square": 1}
    both = cli("tag", "--prompts", str(out), "--vocab", str(out), ok=False)
    assert both.exit_code == 1 and "not both" in both.stderr
