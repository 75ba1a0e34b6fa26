"""`mediasearch eval calibration`: how calibrated scores behave on a labelled set."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from mediasearch.errors import DataError
from mediasearch.lab.calibration import default_queries, read_queries, relation
from mediasearch.lab.shapes import class_name
from mediasearch.search.relevance import content_words

KNOWN = frozenset({"red", "blue", "circle", "square"})


@pytest.fixture
def labelled(tmp_path: Path, shapes_folder: tuple[Path, list[tuple[Path, str, str]]]) -> Path:
    """The shared 240 fresh shape photos (10 per class) as a (path, label) CSV."""
    target = tmp_path / "labels.csv"
    with target.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows([str(p), class_name(c, s)] for p, c, s in shapes_folder[1])
    return target


def test_pairs_are_grouped_by_their_words() -> None:
    def group(query: str, label: str) -> str:
        return relation(content_words(query), content_words(label), KNOWN)

    assert group("a photo of a red circle", "red circle") == "exact"
    assert group("red", "red circle") == "match"
    assert group("red circle", "red square") == "partial"
    assert group("blue square", "red circle") == "unrelated"
    assert group("a red cat", "red circle") == "unknown"


def test_default_queries_are_the_labels_their_words_and_unknown_descriptions(tmp_path: Path) -> None:
    queries = default_queries(["red circle", "blue circle", "cat"])
    assert queries.texts[:3] == ("red circle", "blue circle", "cat")
    assert queries.texts[3:6] == ("blue", "circle", "red")  # 'cat' is a label already
    assert "a cat" not in queries.texts and "zebra" in queries.texts  # a label's word is not unknown
    (tmp_path / "q.txt").write_text("# mine\nred circle\n\n zebra  # an animal\n")
    assert read_queries(tmp_path / "q.txt").texts == ("red circle", "zebra")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="no queries"):
        read_queries(tmp_path / "empty.txt")


def test_eval_calibration_on_fresh_shapes(cli: Any, labelled: Path, tmp_path: Path) -> None:
    report = cli.json("eval", "calibration", str(labelled))
    groups = report["groups"]
    assert report["files"] == 240 and report["min_score"] == 0.5
    assert groups["exact"]["pairs"] == 240 and groups["exact"]["pass_rate"] >= 0.98
    assert groups["match"]["pairs"] == 240 * 2 and groups["match"]["pass_rate"] >= 0.98
    assert groups["partial"]["pass_rate"] <= 0.02 and groups["unrelated"]["pass_rate"] <= 0.02
    assert groups["unknown"]["pairs"] == 240 * 6 and groups["unknown"]["pass_rate"] == 0.0
    unknown = [q for q in report["per_query"] if q["kind"] == "unknown"]
    assert [q["query"] for q in unknown] == ["a cat", "a dog on a beach", "zebra", "a mountain lake at sunset",
                                             "a birthday cake", "an old car"]
    assert all(q["hits"] == 0 and q["unknown_words"] for q in unknown)
    p = groups["exact"]["percentiles"]
    assert p["p1"] <= p["p10"] <= p["p50"] <= p["p90"] <= p["p99"] <= 1.0

    (tmp_path / "q.txt").write_text("red blue\nred\n")
    mine = cli.json("eval", "calibration", str(labelled), "--queries", str(tmp_path / "q.txt"), "--min-score", "0.9")
    assert mine["queries"]["count"] == 2 and mine["min_score"] == 0.9
    red_blue, red = mine["per_query"]
    assert red_blue["gate_margin"] < 0 and red_blue["hits"] == 0 and red["gate_margin"] > 0
    table = cli("eval", "calibration", str(labelled), "--queries", str(tmp_path / "q.txt"))
    rows = {line.split("│")[1].strip() for line in table.stdout.splitlines() if line.startswith("│")}
    assert {"match", "partial"} <= rows and "exact" not in rows  # no query is a whole label
    assert "unknown-word queries" not in table.stdout
