"""Labelled or captioned media sets for fine-tuning and evaluation: reading, checking, splitting.

A set is a CSV or JSONL file of rows (a path plus a caption and/or a label; relative paths are
relative to the file), or a folder of class folders (the folder name, underscores as spaces, is the
label). Problems (missing files, empty captions, unreadable images) are collected, never raised one
by one, so that a user sees them all with counts before any training starts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mediasearch.errors import DataError
from mediasearch.media.discover import fingerprint, media_kind

PATH_KEYS = ("path", "file", "filepath", "filename", "image")
CAPTION_KEYS = ("caption", "text", "title")
LABEL_KEYS = ("label", "class", "category")
LIST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class Example:
    """One file with its caption (free text) and/or its label (a class name)."""

    path: Path
    caption: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Problems:
    """What is wrong with a set's rows; ``first`` keeps a few examples to show."""

    rows: int = 0
    missing: int = 0
    unreadable: int = 0
    empty: int = 0
    malformed: int = 0
    first: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return self.missing + self.unreadable + self.empty + self.malformed

    def add(self, kind: str, where: str) -> Problems:
        first = self.first + (where,) if len(self.first) < 3 else self.first
        return replace(self, **{kind: getattr(self, kind) + 1, "first": first})

    def summary(self) -> str:
        """'2 missing files, 1 unreadable image, 0 empty captions, 0 malformed rows (of 210)'."""
        return (
            f"{self.missing} missing files, {self.unreadable} unreadable images, "
            f"{self.empty} empty captions or labels, {self.malformed} malformed rows (of {self.rows})"
        )


@dataclass(frozen=True)
class Dataset:
    """The usable examples of a set and the problems found on the way."""

    source: str
    examples: tuple[Example, ...]
    problems: Problems = field(default_factory=Problems)

    @property
    def labelled(self) -> bool:
        return bool(self.examples) and all(e.label for e in self.examples)

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.examples if e.label})

    def without(self, bad: dict[Path, str]) -> Dataset:
        """The set without the files in ``bad`` (path → reason), counted as unreadable."""
        problems = self.problems
        for path, reason in bad.items():
            problems = problems.add("unreadable", f"{path}: {reason}")
        return Dataset(self.source, tuple(e for e in self.examples if e.path not in bad), problems)

    def digest(self) -> str:
        """A hash of the examples and their files' contents: the checkpoint's "data hash"."""
        h = hashlib.blake2b(digest_size=12)
        for e in sorted(self.examples, key=lambda e: (str(e.path), e.caption or "", e.label or "")):
            content = fingerprint(str(e.path), e.path.stat().st_size)
            h.update(json.dumps([e.path.name, e.caption, e.label, content]).encode())
        return h.hexdigest()

    def check(self, *, skip_bad: bool) -> None:
        """Fail with the counts when any row had a problem (unless ``skip_bad``), or when nothing is left."""
        bad = self.problems
        if bad.count and not skip_bad:
            raise DataError(
                f"{self.source}: {bad.summary()}; first: {'; '.join(bad.first)}. "
                "Fix them or pass --skip-bad to leave them out"
            )
        if not self.examples:
            raise DataError(f"{self.source}: no usable examples ({bad.summary()})")


def read_dataset(source: str | os.PathLike[str], *, videos: bool = False) -> Dataset:
    """Read a set from a CSV/JSONL file or a folder of class folders; missing files are counted."""
    path = Path(source)
    if path.is_dir():
        return _read_class_folders(path, videos)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() not in LIST_SUFFIXES:
        raise DataError(f"{path}: expected a .csv or .jsonl file, or a folder of class folders")
    rows = _jsonl_rows(path) if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else _csv_rows(path)
    return _from_rows(str(path), path.parent, rows)


def label_of_folder(name: str) -> str:
    """A class folder's label: 'red_circle' → 'red circle'."""
    return " ".join(name.replace("_", " ").split())


def _read_class_folders(root: Path, videos: bool) -> Dataset:
    examples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(folder.rglob("*")):
            kind = media_kind(file.name)
            if file.is_file() and not file.name.startswith(".") and (kind == "image" or (videos and kind)):
                examples.append(Example(file.resolve(), None, label_of_folder(folder.name)))
    if not examples:
        raise DataError(f"{root}: no images in class folders (expected {root}/<class name>/<images>)")
    return Dataset(str(root), tuple(examples), Problems(rows=len(examples)))


def _pick(row: dict[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        if key in row:
            value = row[key]
            return "" if value is None else str(value).strip()
    return None


def _from_rows(source: str, base: Path, rows: Iterable[tuple[int, dict[str, str] | None]]) -> Dataset:
    examples: list[Example] = []
    problems = Problems()
    for number, row in rows:
        problems = replace(problems, rows=problems.rows + 1)
        where = f"row {number}"
        raw_path = _pick(row, PATH_KEYS) if row is not None else None
        if not raw_path:
            problems = problems.add("malformed", f"{where}: no path")
            continue
        caption, label = _pick(row, CAPTION_KEYS), _pick(row, LABEL_KEYS)  # type: ignore[arg-type]
        file = (base / os.path.expanduser(raw_path)).resolve()
        if caption is None and label is None:
            problems = problems.add("malformed", f"{where}: no caption or label column")
        elif not (caption or label):
            problems = problems.add("empty", f"{where}: empty caption")
        elif not file.is_file():
            problems = problems.add("missing", f"{where}: missing {file}")
        else:
            examples.append(Example(file, caption or None, label or None))
    return Dataset(source, tuple(examples), problems)


def _csv_rows(path: Path) -> Iterable[tuple[int, dict[str, str] | None]]:
    """Rows as dicts; a file without a recognised header is read as (path, caption) pairs."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        lines = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{path}: not a valid CSV file ({exc})") from None
    if not lines:
        raise DataError(f"{path}: empty file")
    header = [h.strip().lower() for h in lines[0]]
    has_header = any(h in PATH_KEYS for h in header)
    names = header if has_header else ["path", "caption"]
    body = lines[1:] if has_header else lines
    return [(i + 1 + has_header, dict(zip(names, cells, strict=False)))
            for i, cells in enumerate(body) if any(c.strip() for c in cells)]


def _jsonl_rows(path: Path) -> Iterable[tuple[int, dict[str, str] | None]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    rows: list[tuple[int, dict[str, str] | None]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        rows.append((number, value if isinstance(value, dict) else None))
    return rows


@dataclass(frozen=True)
class Split:
    """Train, validation and held-out test examples; an image's rows never straddle two parts."""

    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split(examples: Sequence[Example], *, seed: int, val_fraction: float, test_fraction: float) -> Split:
    """A deterministic split by ``seed``, stratified by label when there are labels.

    Each label's (or, without labels, the whole set's) files are shuffled and cut by the fractions;
    a part with a non-zero fraction gets at least one file of each label that has three or more.
    """
    by_path: dict[Path, list[Example]] = {}
    for e in sorted(examples, key=lambda e: (str(e.path), e.caption or "", e.label or "")):
        by_path.setdefault(e.path, []).append(e)
    strata: dict[str, list[Path]] = {}
    for path, rows in by_path.items():
        strata.setdefault(rows[0].label or "", []).append(path)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for key in sorted(strata):
        paths = [strata[key][i] for i in rng.permutation(len(strata[key]))]
        n_test = _cut(len(paths), test_fraction)
        n_val = min(_cut(len(paths), val_fraction), len(paths) - n_test - 1)
        for name, chosen in (("test", paths[:n_test]), ("val", paths[n_test : n_test + n_val]),
                             ("train", paths[n_test + n_val :])):
            parts[name] += [e for p in chosen for e in by_path[p]]
    return Split(tuple(parts["train"]), tuple(parts["val"]), tuple(parts["test"]))


def _cut(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 3:
        return 0
    return min(max(1, int(round(n * fraction))), n - 2)
