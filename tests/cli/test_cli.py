"""The command-line contract: JSON shapes, exit codes, one-line errors, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.lab.shapes import render


def test_embed_json_files_and_texts(tmp_path: Path, cli: Any) -> None:
    img = tmp_path / "a.png"
    render("red", "circle", rng=np.random.default_rng(0), size=(200, 150)).save(img)
    rows = cli.json("embed", str(img), "--text", "a red circle", "--text", "a blue star")
    assert [r.get("path") or r.get("text") for r in rows] == [str(img), "a red circle", "a blue star"]
    vecs = np.array([r["embedding"] for r in rows])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]


def test_classify_json_sorted_probabilities(tmp_path: Path, cli: Any, make_broken: Any) -> None:
    files = []
    for colour, shape in (("green", "square"), ("orange", "triangle")):
        files.append(tmp_path / f"{colour}.jpg")
        render(colour, shape, rng=np.random.default_rng(1), size=(300, 200)).save(files[-1])
    bad = make_broken(tmp_path / "bad.jpg", "text_as_jpg")
    result = cli(
        "classify",
        *map(str, files),
        str(bad),
        "--labels",
        "green square, orange triangle, red star",
        "--json",
    )
    out = json.loads(result.stdout)
    assert [r["path"] for r in out] == [str(f) for f in files]
    assert [r["labels"][0]["label"] for r in out] == ["green square", "orange triangle"]
    for row in out:
        probs = [lab["prob"] for lab in row["labels"]]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
    assert "bad.jpg" in result.stderr  # reported, skipped


def test_domain_errors_exit_1_with_one_line(tmp_path: Path, cli: Any) -> None:
    result = cli("query", "anything", ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "nothing is indexed" in result.stderr
    assert "Traceback" not in result.output


def test_usage_errors_exit_2(cli: Any) -> None:
    assert cli("query", "x", "--type", "gif", ok=False).exit_code == 2
    assert cli("index", ok=False).exit_code == 2
    assert cli("classify", "x.jpg", "--labels", "only-one", ok=False).exit_code == 1


def test_query_output_forms(tmp_path: Path, cli: Any) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "star")] * 2):
        render(colour, shape, rng=np.random.default_rng(i), size=(160, 160)).save(lib / f"{colour}_{i}.png")
    cli.json("index", str(lib))
    hits = cli.json("query", "a photo of a red circle", "--limit", "2")
    assert set(hits[0]) >= {"path", "score", "kind", "timestamp", "start", "end", "tags"}
    assert [Path(h["path"]).name.split("_")[0] for h in hits] == ["red", "red"]
    paths = cli("query", "a photo of a blue star", "--limit", "2", "--paths").stdout.splitlines()
    assert [Path(p).name.split("_")[0] for p in paths] == ["blue", "blue"]
    table = cli("query", "a photo of a blue star", "--limit", "1").stdout
    assert "blue_" in table and "score" in table
    every = cli.json("query", "a photo of a red circle", "--limit", "4")  # --json: every hit, as it was
    assert [h["calibrated"] >= 0.5 for h in every] == [True, True, False, False]
    folded = cli("query", "a photo of a red circle", "--limit", "4").stdout
    assert "2 matches; below the line 2 weaker (match < 50%)" in folded
    assert sum(line.startswith("├") for line in folded.splitlines()) == 1  # the rule line at the cut
    assert "below the line" not in cli("query", "a photo of a red circle", "--limit", "2").stdout
    mismatch = cli("query", "x", model="RN50", ok=False)
    assert mismatch.exit_code == 1 and "built with demo" in mismatch.stderr


def test_demo_command_end_to_end(tmp_path: Path) -> None:
    """The quick start's command, as a user runs it: a real process, offline, from an empty folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "mediasearch", "demo", "--dir", str(tmp_path / "d"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["index"]["added"] == 49 and data["index"]["failed"] == 0
    assert all("red_circle" in h["path"] for h in data["queries"]["a red circle"][:2])
    triangle = data["queries"]["a yellow triangle"]
    video = [h for h in triangle if h["kind"] == "video"]
    assert video and 0 <= video[0]["timestamp"] < 8
