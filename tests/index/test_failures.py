"""Broken files are remembered by fingerprint: an unchanged one is not decoded again and loads no model;
a changed one, or `index --retry-failed`, tries again; `status` keeps listing it; gone, it is forgotten."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.index import runner as indexer
from mediasearch.index.failures import RETRY_HINT, FailureLog
from mediasearch.lab.shapes import render, save_image
from mediasearch.library.local import LocalLibrary
from mediasearch.media.discover import FileEntry


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What each run decoded, and how often the model was loaded for indexing."""
    seen: dict[str, list[Any]] = {"decoded": [], "loads": []}
    real_decode, real_load = indexer.decode_file, LocalLibrary._index_model

    def decode(entry: FileEntry, *args: Any) -> Any:
        seen["decoded"].append(entry.path)
        return real_decode(entry, *args)

    def load(self: LocalLibrary) -> Any:
        seen["loads"].append(1)
        return real_load(self)

    monkeypatch.setattr(indexer, "decode_file", decode)
    monkeypatch.setattr(LocalLibrary, "_index_model", load)
    return seen


def _library(root: Path, make_broken: Callable[[str | Path, str], Path]) -> list[Path]:
    root.mkdir(parents=True)
    save_image(render("red", "circle", rng=np.random.default_rng(0)), root / "good.png", "png")
    return [
        make_broken(root / "cut.jpg", "truncated_jpeg"),
        make_broken(root / "noise.jpg", "random_bytes"),
        make_broken(root / "empty.png", "empty"),
    ]


def test_an_unchanged_broken_file_is_not_decoded_again(
    tmp_path: Path, cli: Any, make_broken: Callable[[str | Path, str], Path], watched: dict[str, list[Any]]
) -> None:
    lib = tmp_path / "lib"
    broken = _library(lib, make_broken)
    first = cli.json("index", str(lib))
    assert (first["added"], first["failed"]) == (1, 3)
    reasons = {e["path"]: e["error"] for e in first["errors"]}

    watched["decoded"].clear()
    watched["loads"].clear()
    again = cli.json("index", str(lib))
    assert (again["unchanged"], again["failed"], again["added"]) == (1, 3, 0)
    assert watched["decoded"] == [] and watched["loads"] == []  # nothing decoded, no model loaded
    for error in again["errors"]:
        assert error["error"] == f"{reasons[error['path']]} ({RETRY_HINT})"

    status = cli.json("status")
    assert {f["path"] for f in status["failures"]} == {str(p) for p in broken}

    retried = cli.json("index", str(lib), "--retry-failed")
    assert retried["failed"] == 3 and sorted(watched["decoded"]) == sorted(str(p) for p in broken)
    assert {e["error"] for e in retried["errors"]} == set(reasons.values())


def test_a_changed_broken_file_is_tried_again_and_a_fixed_one_is_forgotten(
    tmp_path: Path, cli: Any, make_broken: Callable[[str | Path, str], Path], watched: dict[str, list[Any]]
) -> None:
    lib = tmp_path / "lib"
    cut, noise, empty = _library(lib, make_broken)
    cli.json("index", str(lib))
    watched["decoded"].clear()

    save_image(render("blue", "star", rng=np.random.default_rng(1)), cut, "jpeg")  # repaired: decodes now
    os.utime(noise, (1e9, 1e9))  # only touched: the same content still fails, without a decode
    empty.unlink()  # gone: its failure is forgotten
    run = cli.json("index", str(lib))
    assert watched["decoded"] == [str(cut)]
    assert (run["added"], run["failed"]) == (1, 1)
    remembered = json.loads((cli.home / "failures.json").read_text())["files"]
    assert set(remembered) == {str(noise)}

    shutil.copy(lib / "good.png", noise)  # a new version of it
    run = cli.json("index", str(lib))
    assert run["failed"] == 0 and run["added"] == 1
    assert json.loads((cli.home / "failures.json").read_text())["files"] == {}


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12)


@given(
    files=st.dictionaries(names.filter(lambda n: n not in (".", "..") and "/" not in n), st.integers(0, 3), max_size=6),
    retry=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_the_log_holds_back_exactly_the_unchanged_failures(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, int], retry: bool
) -> None:
    """Whatever files failed, changed or not, a saved and reloaded log holds back exactly the unchanged ones."""
    folder = tmp_path_factory.mktemp("log")
    log = FailureLog(folder / "failures.json")
    entries = {}
    for i, (name, version) in enumerate(sorted(files.items())):
        path = folder / f"{i}-{name}"
        path.write_bytes(b"x" * (10 + i))
        st_ = path.stat()
        entries[str(path)] = FileEntry(str(path), str(folder), "image", st_.st_size, st_.st_mtime)
        log.record(entries[str(path)], f"reason {version}")
        if version % 2:  # changed since: new size
            path.write_bytes(b"y" * (100 + i))
            st_ = path.stat()
            entries[str(path)] = FileEntry(str(path), str(folder), "image", st_.st_size, st_.st_mtime)
    log.save()
    again = FailureLog(folder / "failures.json")
    held = {p for p, e in entries.items() if again.remembered(e) is not None}
    unchanged = {str(folder / f"{i}-{n}") for i, (n, v) in enumerate(sorted(files.items())) if v % 2 == 0}
    assert held == unchanged
    assert len(again) == len(files)


def test_skipped_means_not_media_and_is_counted_by_extension(tmp_path: Path, cli: Any) -> None:
    """One word per meaning: `skipped` counts files of other types (by extension), `failed` broken media."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("notes.txt", "b.txt", "a.XMP", "README"):
        (lib / name).write_text("x")
    (lib / "bad.jpg").write_text("not a photo")
    run = cli.json("index", str(lib))
    assert (run["skipped"], run["failed"]) == (4, 1)
    assert run["skipped_extensions"] == {"txt": 2, "(none)": 1, "xmp": 1}
    status = cli.json("status")
    assert status["skipped_extensions"] == run["skipped_extensions"]
    assert [f["path"] for f in status["failures"]] == [str(lib / "bad.jpg")]
