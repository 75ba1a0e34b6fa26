"""Faces grouped into people, incrementally: a new face joins the person whose centre (the mean of
its faces' descriptors) is nearest, when that is within ``THRESHOLD``; otherwise it starts a person.

Ids never change once given, so names stay attached across runs. On the shared real photos
(`scripts/bench_faces.py`) this keeps face pairs apart with precision 1.00 at recall 0.96; dlib
calls two descriptors one person below 0.6, and 0.52 trades a little recall for precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

THRESHOLD = 0.52  # Euclidean distance between dlib descriptors (not normalised)
DIM = 128


class PeopleIndex:
    """The centre of every person, updated as faces join; ``assign`` gives a face its person."""

    def __init__(self, next_id: int = 1, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.next_id = next_id
        self._ids: list[str] = []
        self._sums = np.zeros((0, DIM), dtype=np.float64)
        self._counts = np.zeros(0, dtype=np.int64)
        # Kept current row by row, so that a face costs one matrix-vector product: |c - v|^2 = |c|^2 - 2 c.v + |v|^2.
        self._centres = np.zeros((0, DIM), dtype=np.float64)
        self._squares = np.zeros(0, dtype=np.float64)  # |c|^2; +inf for a person with no face left
        self._row: dict[str, int] = {}

    def __len__(self) -> int:
        return int((self._counts > 0).sum())

    def add(self, person: str, vector: np.ndarray) -> None:
        """Count a face as ``person``'s (a person seen for the first time is created)."""
        row = self._row.get(person)
        if row is None:
            row = len(self._ids)
            if row == len(self._counts):  # grow by doubling: adding n people costs O(n)
                capacity = max(16, 2 * row)
                grow = capacity - row
                self._sums = np.concatenate([self._sums, np.zeros((grow, DIM))])
                self._centres = np.concatenate([self._centres, np.zeros((grow, DIM))])
                self._counts = np.concatenate([self._counts, np.zeros(grow, dtype=np.int64)])
                self._squares = np.concatenate([self._squares, np.full(grow, np.inf)])
            self._row[person] = row
            self._ids.append(person)
        self._sums[row] += vector
        self._counts[row] += 1
        self._update(row)

    def _update(self, row: int) -> None:
        count = self._counts[row]
        self._centres[row] = self._sums[row] / max(1, count)
        self._squares[row] = float(self._centres[row] @ self._centres[row]) if count > 0 else np.inf

    def remove(self, person: str, vector: np.ndarray) -> None:
        """Take a face out of ``person`` (the face was deleted or moved to another person)."""
        row = self._row.get(person)
        if row is not None and self._counts[row] > 0:
            self._sums[row] -= vector
            self._counts[row] -= 1
            if self._counts[row] == 0:
                self._sums[row] = 0.0  # no rounding left over for the next face
            self._update(row)

    def nearest(self, vector: np.ndarray, exclude: Iterable[str] = ()) -> tuple[str | None, float]:
        """The person whose centre is nearest ``vector`` and its distance (None, inf with nobody)."""
        rows = len(self._ids)
        squares = self._squares[:rows].copy()
        for person in exclude:
            row = self._row.get(person)
            if row is not None:
                squares[row] = np.inf
        if not rows or not np.isfinite(squares).any():
            return None, float("inf")
        vector = np.asarray(vector, dtype=np.float64)
        distance = squares - 2.0 * (self._centres[:rows] @ vector) + float(vector @ vector)
        row = int(distance.argmin())
        return self._ids[row], float(np.sqrt(max(0.0, distance[row])))

    def assign(self, vector: np.ndarray, exclude: Iterable[str] = ()) -> str:
        """The person this face belongs to (joined to it), a new person when nobody is close enough;
        ``exclude`` names people the face was taken out of by hand."""
        person, distance = self.nearest(vector, exclude)
        if person is None or distance >= self.threshold:
            person = str(self.next_id)
            self.next_id += 1
        self.add(person, vector)
        return person

    def people(self) -> list[str]:
        """The ids of people with at least one face."""
        return [p for p in self._ids if self._counts[self._row[p]] > 0]


def group(vectors: Sequence[np.ndarray], index: PeopleIndex | None = None) -> list[str]:
    """Person ids for faces in order, each joining the people found so far (in ``index``)."""
    people = index if index is not None else PeopleIndex()
    return [people.assign(np.asarray(v, dtype=np.float64)) for v in vectors]
