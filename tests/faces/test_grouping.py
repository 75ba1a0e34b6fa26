"""Grouping faces into people: invariants on generated descriptors, quality on the shared real photos."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.faces.engine import Face
from mediasearch.faces.grouping import DIM, THRESHOLD, PeopleIndex, group


def clusters(seed: int, people: int, faces: int) -> tuple[np.ndarray, list[int]]:
    """Descriptors of ``people`` well apart (centres > 4 thresholds), faces within a third of one."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, DIM))
    centres *= (4 * THRESHOLD) / np.sqrt(2) / np.linalg.norm(centres, axis=1, keepdims=True) * 2
    labels = rng.integers(0, people, size=faces).tolist()
    noise = rng.normal(size=(faces, DIM))
    noise *= (THRESHOLD / 3) * rng.random((faces, 1)) / np.linalg.norm(noise, axis=1, keepdims=True)
    return centres[labels] + noise, labels


def same_partition(a: list[Any], b: list[Any]) -> bool:
    return all((a[i] == a[j]) == (b[i] == b[j]) for i, j in itertools.combinations(range(len(a)), 2))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 8), st.integers(1, 60))
def test_separate_people_are_found_whatever_the_order(seed: int, people: int, faces: int) -> None:
    vectors, labels = clusters(seed, people, faces)
    order = np.random.default_rng(seed + 1).permutation(faces)
    assert same_partition(group(vectors), labels)
    assert same_partition([group(vectors[order])[list(order).index(i)] for i in range(faces)], labels)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 6), st.integers(2, 40), st.data())
def test_ids_do_not_change_when_more_faces_come(seed: int, people: int, faces: int, data: st.DataObject) -> None:
    vectors, _ = clusters(seed, people, faces)
    split = data.draw(st.integers(1, faces - 1))
    index = PeopleIndex()
    first = group(vectors[:split], index)
    later = group(vectors[split:], index)
    assert first + later == group(vectors)  # one run or two: the same ids
    assert set(first) <= set(index.people())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 6), st.integers(1, 30))
def test_removing_every_face_of_a_person_makes_it_disappear(seed: int, people: int, faces: int) -> None:
    vectors, _ = clusters(seed, people, faces)
    index = PeopleIndex()
    ids = group(vectors, index)
    gone = ids[0]
    for vector, person in zip(vectors, ids, strict=True):
        if person == gone:
            index.remove(person, vector)
    assert gone not in index.people()
    assert set(index.people()) == set(ids) - {gone}
    # A face like the removed ones starts a new person: ids are never given twice.
    assert index.assign(vectors[0]) not in ids


def test_a_face_refused_by_a_person_goes_elsewhere() -> None:
    vectors, _ = clusters(3, 2, 10)
    index = PeopleIndex()
    ids = group(vectors, index)
    assert index.assign(vectors[0], exclude=[ids[0]]) != ids[0]


def pair_scores(groups: list[str], labels: list[str | None], missed: dict[str, int]) -> tuple[float, float]:
    """Pairwise precision and recall over labelled photos; a photo whose face was not found counts as
    a pair missed with every other photo of its person."""
    tp = fp = fn = 0
    for a, b in itertools.combinations([i for i, label in enumerate(labels) if label], 2):
        same, together = labels[a] == labels[b], groups[a] == groups[b]
        tp, fp, fn = tp + (same and together), fp + (together and not same), fn + (same and not together)
    for person, count in missed.items():
        found = sum(1 for label in labels if label == person)
        fn += count * found + count * (count - 1) // 2
    return tp / max(1, tp + fp), tp / max(1, tp + fn)


def test_real_faces_are_grouped_into_their_people(truth: dict[str, Any], detected: dict[str, list[Face]]) -> None:
    vectors, labels, missed = [], [], {}  # type: ignore[var-annotated]
    for name in sorted(truth):
        item = truth[name]
        person = item["people"][0] if item["kind"] == "person" else None
        if person and not detected[name]:
            missed[person] = missed.get(person, 0) + 1
        for number, face in enumerate(detected[name]):
            vectors.append(face.embedding)
            labels.append(person if number == 0 else None)  # the labelled person is the clearest face
    precision, recall = pair_scores(group(vectors), labels, missed)
    assert precision >= 0.95 and recall >= 0.85, (precision, recall)
