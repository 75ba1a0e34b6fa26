"""`mediasearch eval`: zero-shot accuracy (per class, per group, across domains) and retrieval recall."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mediasearch.lab.evaluate import group_accuracy, read_groups, recall_at_k, topk_correct
from mediasearch.lab.shapes import CLASSES, class_name, make_library, render, save_image

ALL_LABELS = ",".join(class_name(c, s) for c, s in CLASSES)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """The demo model encodes a file in milliseconds: threads would mostly wait for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def labelled_csv(tmp_path: Path, shapes_folder: tuple[Path, list[tuple[Path, str, str]]]) -> Path:
    """The shared 240 shape photos as a (path, label) CSV."""
    _, files = shapes_folder
    return _write_csv(tmp_path / "labels.csv", ["path", "label"], [[str(p), class_name(c, s)] for p, c, s in files])


# ---------------------------------------------------------------- metrics on arrays


def test_topk_and_recall_count_what_they_should() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    truth = np.array([0, 1, 1])
    assert topk_correct(scores, truth, 1).tolist() == [True, False, True]
    assert topk_correct(scores, truth, 2).tolist() == [True, True, True]
    # Rows are queries: image 0 finds its caption first, images 1 and 2 only second.
    relevant = np.array([[True, False, False], [False, True, False], [True, False, False]])
    assert recall_at_k(scores, relevant, ks=(1, 2)) == {"recall@1": pytest.approx(1 / 3), "recall@2": 1.0}
    relevant[1, 2] = True  # a second caption of image 1, ranked first
    assert recall_at_k(scores, relevant, ks=(1,)) == {"recall@1": pytest.approx(2 / 3)}
    relevant[2] = False  # a query without any relevant item is left out
    assert recall_at_k(scores, relevant, ks=(1,)) == {"recall@1": 1.0}


def test_group_accuracy_reports_the_largest_gap() -> None:
    correct = np.array([True, True, False, True, False, False, True])
    groups = ["day", "day", "day", "night", "night", "night", None]
    result = group_accuracy(correct, groups)
    assert result["groups"]["day"] == {"n": 3, "top1": pytest.approx(2 / 3)}
    assert result["groups"]["night"]["n"] == 3  # the file without a group is left out
    assert result["gap"] == pytest.approx(1 / 3) and (result["best"], result["worst"]) == ("day", "night")
    assert result["ungrouped"] == 1


def test_groups_file_forms(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_text("path,group\na.jpg,day\nsub/b.jpg,night\n")
    (tmp_path / "g.jsonl").write_text(json.dumps({"path": "a.jpg", "group": "day"}) + "\n")
    assert read_groups(tmp_path / "g.csv") == {tmp_path / "a.jpg": "day", tmp_path / "sub" / "b.jpg": "night"}
    assert read_groups(tmp_path / "g.jsonl") == {tmp_path / "a.jpg": "day"}


# ---------------------------------------------------------------- the commands


def test_eval_zeroshot_reproduces_classify(
    cli: Any, labelled_csv: Path, shapes_folder: tuple[Path, list[tuple[Path, str, str]]]
) -> None:
    _, files = shapes_folder
    report = cli.json("eval", "zeroshot", str(labelled_csv))
    domain = report["domains"][0]
    assert domain["files"] == 240 and domain["failed"] == 0 and len(report["labels"]) == 24
    classified = cli.json("classify", *[str(p) for p, _, _ in files], "--labels", ALL_LABELS)
    truth = {str(p): class_name(c, s) for p, c, s in files}
    accuracy = np.mean([item["labels"][0]["label"] == truth[item["path"]] for item in classified])
    assert domain["methods"]["ensemble"]["top1"] == pytest.approx(accuracy)
    assert domain["methods"]["ensemble"]["top1"] >= 0.9
    assert set(domain["methods"]) == {"prompt", "ensemble"}  # no linear head on the plain demo model
    assert domain["methods"]["prompt"]["top5"] >= domain["methods"]["prompt"]["top1"]
    assert sum(row["n"] for row in domain["per_class"].values()) == 240
    assert all(c["true"] != c["predicted"] for c in domain["confusions"])


def test_eval_retrieval_finds_shape_captions(
    cli: Any, tmp_path: Path, shapes_folder: tuple[Path, list[tuple[Path, str, str]]]
) -> None:
    _, files = shapes_folder
    rows = [[str(p), f"a photo of a {c} {s}"] for p, c, s in files]
    report = cli.json("eval", "retrieval", str(_write_csv(tmp_path / "captions.csv", ["path", "caption"], rows)))
    assert (report["images"], report["texts"], report["pairs"]) == (240, 24, 240)
    assert report["image_to_text"]["recall@1"] >= 0.9
    assert report["text_to_image"]["recall@1"] >= 0.9
    assert report["text_to_image"]["recall@10"] >= report["text_to_image"]["recall@1"]
    table = cli("eval", "retrieval", str(tmp_path / "captions.csv")).stdout
    assert "image → text" in table and "recall@5" in table


def test_groups_show_the_gap_between_clear_and_faint_shapes(cli: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(96):
        colour, shape = CLASSES[i % 24]
        contrast, group = (1.0, "clear") if i % 2 else (0.12, "faint")
        folder = tmp_path / "set" / f"{colour}_{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.png"
        save_image(render(colour, shape, rng=rng, size=(200, 200), contrast=contrast), path, "png")
        rows.append([str(path), group])
    groups_file = _write_csv(tmp_path / "groups.csv", ["path", "group"], rows)
    report = cli.json("eval", "zeroshot", str(tmp_path / "set"), "--groups", str(groups_file))
    result = report["domains"][0]["groups"]
    assert result["groups"]["clear"]["n"] == result["groups"]["faint"]["n"] == 48
    assert result["best"] == "clear" and result["worst"] == "faint"
    assert result["gap"] >= 0.2
    table = cli("eval", "zeroshot", str(tmp_path / "set"), "--groups", str(groups_file)).stdout
    assert "largest gap" in table and "faint" in table


def test_domain_shift_table_filled_vs_outlined(cli: Any, tmp_path: Path) -> None:
    filled, outlined = tmp_path / "filled", tmp_path / "outlined"
    make_library(filled, 48, seed=11, class_folders=True)
    make_library(outlined, 48, seed=12, outlined=True, background="textured", class_folders=True)
    report = cli.json("eval", "zeroshot", str(filled), str(outlined))
    first, second = report["shift"]
    assert first["source"] == str(filled) and first["drop"]["ensemble"] == 0
    assert first["top1"]["ensemble"] >= 0.9
    assert second["drop"]["ensemble"] >= 0.3  # the demo model never saw an outline
    table = cli("eval", "zeroshot", str(filled), str(outlined)).stdout
    assert "domain shift" in table and "template ensemble" in table


def test_eval_needs_labels_and_reports_unusable_files(cli: Any, tmp_path: Path) -> None:
    captions = _write_csv(tmp_path / "c.csv", ["path", "caption"], [["a.png", "a red circle"]])
    result = cli("eval", "zeroshot", str(captions), ok=False)
    assert result.exit_code == 1 and "needs labels" in result.stderr
    folder = tmp_path / "set"
    make_library(folder, 24, seed=5, class_folders=True)
    (folder / "red_circle" / "broken.png").write_text("not an image")
    domain = cli.json("eval", "zeroshot", str(folder))["domains"][0]
    assert domain["files"] == 24 and domain["failed"] == 1
    assert domain["errors"][0]["path"].endswith("broken.png")
