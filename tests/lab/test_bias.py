"""`eval bias`: per-group gaps on a demo-domain bias set, and projecting an attribute out narrows them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.errors import DataError
from mediasearch.lab.bias import parse_pairs, project_out, read_bias_set
from mediasearch.lab.shapes import COLOURS, render


def _bias_set(folder: Path, shapes: tuple[str, ...], per_class: int = 4, contrast: float = 0.4) -> Path:
    """Low-contrast shapes, one group per shape, labelled by colour: a star shows less colour than a circle."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = [["path", "group", "label"]]
    for rep in range(per_class):
        for colour in COLOURS:
            for shape in shapes:
                name = f"{colour}_{shape}_{rep}.png"
                render(colour, shape, rng=rng, size=(128, 128), contrast=contrast).save(folder / name)
                rows.append([name, shape, colour])
    with (folder / "set.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return folder / "set.csv"


def test_colour_queries_favour_circles_and_debiasing_narrows_the_gap(cli: Any, tmp_path: Path) -> None:
    source = _bias_set(tmp_path / "bias", ("circle", "star"))
    labels = ",".join(COLOURS)
    pairs = "a photo of a circle|a photo of a star;circle|star"
    report = cli.json("eval", "bias", str(source), "--labels", labels, "--top-k", "4", "--debias", pairs)
    before, after = report["before"], report["after"]
    assert report["n"] == 48 and report["debias"]["directions"] == 2
    # Colour queries rank the circles (more coloured pixels) first: stars are under-represented.
    assert before["groups"]["star"]["topk_share"] < before["groups"]["star"]["data_share"] - 0.2
    assert before["share_gap"] > 0.25
    # Projecting the circle/star direction out narrows the gap a lot, without hurting accuracy much.
    assert after["share_gap"] < before["share_gap"] - 0.15
    assert after["accuracy"] >= before["accuracy"] - 0.1
    table = cli("eval", "bias", str(source), "--labels", labels, "--top-k", "4", "--debias", pairs).stdout
    assert "before: accuracy gap" in table and "after: accuracy gap" in table


def test_a_low_contrast_group_shows_an_accuracy_gap(demo_model: Any, tmp_path: Path) -> None:
    from mediasearch.lab.bias import eval_bias
    from mediasearch.lab.shapes import CLASSES, class_name

    folder = tmp_path / "contrast"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for colour, shape in CLASSES:
        for group, contrast in (("high", 1.0), ("low", 0.3)):
            path = folder / f"{colour}_{shape}_{group}.png"
            render(colour, shape, rng=rng, size=(128, 128), contrast=contrast).save(path)
            rows.append(f"{path.name},{group},{class_name(colour, shape)}")
    (folder / "set.csv").write_text("\n".join(rows) + "\n")
    report = eval_bias(demo_model, folder / "set.csv", [class_name(c, s) for c, s in CLASSES], top_k=2)
    groups = report["before"]["groups"]
    assert groups["high"]["accuracy"] > groups["low"]["accuracy"] + 0.3
    assert report["before"]["accuracy_gap"] > 0.3
    assert groups["low"]["topk_share"] < groups["low"]["data_share"]


def test_projection_and_parsing() -> None:
    basis = np.array([[1.0, 0.0, 0.0]], np.float32)
    out = project_out(np.array([[0.6, 0.8, 0.0]], np.float32), basis)
    assert np.allclose(out, [[0.0, 1.0, 0.0]])
    assert parse_pairs(" a | b ; c|d ;") == [("a", "b"), ("c", "d")]
    with pytest.raises(DataError):
        parse_pairs("a;b")


def test_bias_set_rows(tmp_path: Path) -> None:
    (tmp_path / "red_circle").mkdir()
    (tmp_path / "set.csv").write_text("path,group\nred_circle/a.png,x\nb.png,y,blue star\n")
    data = read_bias_set(tmp_path / "set.csv")
    assert data.groups == ("x", "y") and data.labels == ("red circle", "blue star")
    (tmp_path / "bad.csv").write_text("a.png\n")
    with pytest.raises(DataError, match="need a path and a group"):
        read_bias_set(tmp_path / "bad.csv")
