"""The public Python API, `mediasearch.Library`: the documented example runs, results are typed and match
the CLI's JSON, and a library opened here sees what another one (or the CLI) did."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

import mediasearch as ms

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 rendered shapes (one per class) and nothing else."""
    from mediasearch.lab.shapes import make_library

    root = tmp_path_factory.mktemp("apilib")
    make_library(root, 24, 3)
    return root


def _doc_example() -> str:
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None, "docs/python-api.md has no python code block"
    return block.group(1)


def test_the_documented_example_runs(folder: Path, tmp_path: Path, demo_model: Any, capsys: Any) -> None:
    exec(compile(_doc_example(), str(DOC), "exec"), {"HOME": tmp_path / "home", "FOLDER": folder})
    out = capsys.readouterr().out.splitlines()
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    assert out[0] == f"{files} added, 0 failed"
    assert out[-2] == f"{files} files indexed"
    assert out[-1] == "forgot 1"
    top = out[1:6]
    assert "red_circle" in top[0], top


def test_index_query_status_forget_typed(folder: Path, tmp_path: Path, demo_model: Any) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with ms.Library.open(home=tmp_path / "home", model="demo") as lib:
        assert lib.daemon is None
        report = lib.index([folder])
        assert isinstance(report, ms.IndexReport)
        assert (report.added, report.failed, report.scanned) == (len(files), 0, len(files))
        hits = lib.query("a red circle", limit=5)
        assert all(isinstance(h, ms.Hit) for h in hits) and len(hits) == 5
        assert "red_circle" in Path(hits[0].path).name
        assert hits[0].score >= hits[-1].score and 0.0 <= hits[0].calibrated <= 1.0
        status = lib.status()
        assert isinstance(status, ms.Status)
        assert (status.files, status.images, status.videos) == (len(files), len(files), 0)
        assert lib.forget(hits[0].path) == 1
        assert hits[0].path not in {h.path for h in lib.query("a red circle", limit=50)}
        assert lib.status().files == len(files) - 1


def test_results_have_exactly_the_json_keys_of_the_cli(folder: Path, cli: Any) -> None:
    cli.json("index", str(folder))
    with ms.Library.open(home=cli.home, model="demo") as lib:
        hits = lib.query("a blue star", limit=3)
        status = lib.status()
    printed = cli.json("query", "a blue star", "--limit", "3")
    assert [h.to_json() for h in hits] == printed
    assert {f.name for f in dataclasses.fields(ms.Hit)} == set(printed[0])
    assert set(dataclasses.asdict(status)) == set(cli.json("status"))


def test_negatives_and_filters(folder: Path, tmp_path: Path, demo_model: Any) -> None:
    with ms.Library.open(home=tmp_path / "home", model="demo") as lib:
        lib.index([folder])
        reds = lib.query("something red", limit=4)
        not_circles = lib.query("something red", negatives=["a circle"], limit=3)
        only_images = lib.query("a green square", kind="image", limit=3)
        with pytest.raises(ms.MediaSearchError, match="kind"):
            lib.query("x", kind="audio")
    assert {Path(h.path).name.split("_")[0] for h in reds} == {"red"}
    assert any("circle" in h.path for h in reds)
    names = [Path(h.path).name for h in not_circles]
    assert names[0].startswith("red_") and not any("circle" in n for n in names), names
    assert all(h.kind == "image" for h in only_images)


def test_classify_and_embed_report_bad_files(folder: Path, tmp_path: Path, demo_model: Any) -> None:
    image = next(p for p in sorted(folder.rglob("*")) if "red_circle" in p.name)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    errors: list[ms.FileError] = []
    with ms.Library.open(home=tmp_path / "home", model="demo") as lib:
        rows = lib.classify([image, bad], ["red circle", "blue star", "green square"], on_error=errors.append)
        embedded = lib.embed_texts(["a red circle"]) + lib.embed_images([image])
        with pytest.raises(ms.MediaSearchError):
            lib.embed_images([bad])
    assert [e.path for e in errors] == [str(bad)]
    assert len(rows) == 1 and rows[0].labels[0].label == "red circle"
    assert abs(sum(lab.prob for lab in rows[0].labels) - 1.0) < 1e-3
    text_vec, image_vec = (e.embedding for e in embedded)
    assert abs(sum(v * v for v in text_vec) - 1.0) < 1e-4
    assert sum(a * b for a, b in zip(text_vec, image_vec, strict=True)) > 0.2
    assert json.dumps(embedded[0].to_json())  # a JSON row, as `embed --json` prints


def test_import_is_light() -> None:
    import subprocess
    import sys

    heavy = "('torch', 'qdrant_edge', 'open_clip')"
    code = f"import sys, mediasearch; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
