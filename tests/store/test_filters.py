"""The one filter translator: every Filter field has a rule and a payload index, and any Filter selects
the same points on the Edge shard as on a Qdrant server (qdrant-client's in-process server stands in)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as hs

from mediasearch import store as st
from mediasearch.media.discover import ancestor_dirs
from mediasearch.store.base import Filter, PointIn, Store
from mediasearch.store.filters import INDEX_KINDS, RULES, terms
from mediasearch.store.server import forget_memory_servers

DIM = 8
TAGS = ("red", "dog", "beach")
PEOPLE = ("p1", "p2", "p3")
PLACES = ("nice", "paris", "france")
WORDS = ("exit", "sign", "hello", "world", "menu")  # recognised-text words, already normalised
CAMERAS = ("Canon EOS R5", "Apple iPhone 12", "NIKON D750")
CITIES = ((43.70, 7.27), (48.86, 2.35), (51.51, -0.13), (-33.87, 151.21))  # Nice, Paris, London, Sydney
PATHS = tuple(f"/r{1 + i % 2}/{'ab'[i % 3 % 2]}/{'xy'[i % 2]}/f{i}.{'jpg' if i % 4 else 'mp4'}" for i in range(48))


def _payload(i: int, rng: np.random.Generator) -> dict[str, Any]:
    path = PATHS[i]

    def some(values: tuple[str, ...]) -> list[str]:
        return [v for v in values if rng.random() < 0.4]

    payload: dict[str, Any] = {
        "path": path,
        "dirs": ancestor_dirs(path),
        "root": path[:3],
        "kind": "video" if path.endswith(".mp4") else "image",
        "tags": some(TAGS),
        "people": some(PEOPLE),
        "places": some(PLACES),
    }
    if rng.random() < 0.8:  # some items have no date, place, camera or text at all
        payload["date"] = float(rng.integers(0, 100))
    if rng.random() < 0.7:
        lat, lon = CITIES[int(rng.integers(0, len(CITIES)))]
        payload["geo"] = {"lat": lat + float(rng.uniform(-0.05, 0.05)), "lon": lon + float(rng.uniform(-0.05, 0.05))}
    if rng.random() < 0.7:
        payload["camera"] = CAMERAS[int(rng.integers(0, len(CAMERAS)))]
    if rng.random() < 0.7:
        payload["ocr_text"] = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))).tolist())
    return payload


POINTS = [
    PointIn(st.point_id(f"file:{i}", None), np.eye(DIM, dtype=np.float32)[i % DIM], _payload(i, rng))
    for rng in [np.random.default_rng(7)]
    for i in range(len(PATHS))
]


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Store, Store]]:
    """The same points in an Edge shard and in the in-process server."""
    forget_memory_servers()
    fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # Edge fsyncs often: tmpfs when there is one
    home = Path(tempfile.mkdtemp(prefix="mediasearch-filters-", dir=fast))
    edge = st.open_store(home=home, collection="media_filters", dim=DIM)
    server = st.open_store(home=home, collection="media_filters", dim=DIM, qdrant_url=":memory:")
    for store in (edge, server):
        store.upsert(POINTS)
    yield edge, server
    edge.close()
    server.close()
    forget_memory_servers()
    shutil.rmtree(home, ignore_errors=True)


def _some(values: tuple[str, ...]) -> hs.SearchStrategy[tuple[str, ...]]:
    return hs.lists(hs.sampled_from(values), min_size=1, max_size=2, unique=True).map(tuple)


# Radii chosen far from every distance between the cities above, so that rounding never decides.
_NEAR = hs.tuples(hs.sampled_from(CITIES), hs.sampled_from((20.0, 500.0, 1000.0, 20000.0))).map(
    lambda c: (c[0][0], c[0][1], c[1])
)
FIELD_VALUES: dict[str, hs.SearchStrategy[Any]] = {
    "kind": hs.sampled_from(("image", "video", "audio")),
    "dir_prefix": hs.sampled_from(("/", "/r1", "/r2/a", "/r1/b/", "/r9")),
    "path": hs.sampled_from(PATHS[:6] + ("/nowhere.jpg",)),
    "root": hs.sampled_from(("/r1", "/r2", "/r3")),
    "tags": _some(TAGS + ("cat",)),
    "after": hs.integers(0, 100).map(float),
    "before": hs.integers(0, 100).map(float),
    "exclude_ids": _some(tuple(p.id for p in POINTS[:6])),
    "near": _NEAR,
    "camera": hs.sampled_from(("canon", "EOS r5", "iphone", "apple iphone 12", "nikon", "sony", "")),
    "ocr": _some(WORDS + ("cafe",)),
    "people": _some(PEOPLE + ("p9",)),
    "place": hs.sampled_from(PLACES + ("rome",)),
}


@hs.composite
def filters(draw: hs.DrawFn) -> Filter:
    """A Filter with one to three fields set (more would match nothing nearly always)."""
    chosen = draw(hs.lists(hs.sampled_from(sorted(FIELD_VALUES)), min_size=1, max_size=3, unique=True))
    return Filter(**{name: draw(FIELD_VALUES[name]) for name in chosen})


def _ids(records: Any) -> set[str]:
    return {record.id for record in records}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=filters())
def test_edge_and_server_select_the_same_points(stores: tuple[Store, Store], flt: Filter) -> None:
    """The invariant: a Filter means the same on both engines, for scroll, count, search and deletion's selector."""
    edge, server = stores
    chosen = _ids(edge.scroll(flt, fields=[]))
    event(f"matches: {'none' if not chosen else 'all' if len(chosen) == len(POINTS) else 'some'}")
    assert chosen == _ids(server.scroll(flt, fields=[]))
    assert edge.count(flt) == server.count(flt) == len(chosen)
    query = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    assert _ids(edge.search(query, len(POINTS), flt, exact=True)) == chosen
    assert _ids(server.search(query, len(POINTS), flt)) == chosen


def test_every_filter_field_has_one_rule() -> None:
    """A field added to Filter without a rule would be silently ignored by both engines (and one
    missing from the property test above would go untested)."""
    covered = [name for rule in RULES for name in rule.fields]
    assert sorted(covered) == sorted(f.name for f in dataclasses.fields(Filter)) == sorted(FIELD_VALUES)


def test_every_rule_has_a_payload_index() -> None:
    """Each payload key a filter tests is indexed with the index its condition needs."""
    for rule in RULES:
        if rule.kind != "not_ids":
            assert rule.key in INDEX_KINDS[rule.kind], rule


def test_terms_expand_each_element_and_skip_empty_values() -> None:
    flt = Filter(tags=("a", "b"), ocr=("exit",), camera="", after=3.0, dir_prefix="/x/")
    got = [(rule.key, value) for rule, value in terms(flt)]
    assert got == [("dirs", "/x"), ("tags", "a"), ("tags", "b"), ("date", (3.0, None)), ("ocr_text", "exit")]
    assert terms(Filter()) == [] and Filter().is_empty() and not flt.is_empty()


def test_existing_store_gains_the_indexes_it_lacks(tmp_path: Path) -> None:
    """A store made before a field was indexed gets that index when it is next opened."""
    import qdrant_edge as qe

    st.open_store(home=tmp_path, collection="media_old", dim=DIM, indexed=("kind",)).close()
    shard_dir = tmp_path / "store" / "media_old"
    before = qe.EdgeShard.load(str(shard_dir))
    assert set(before.info().payload_schema) == {"kind"}
    before.close()
    st.open_store(home=tmp_path, collection="media_old", dim=DIM).close()
    after = qe.EdgeShard.load(str(shard_dir))
    indexed = set(after.info().payload_schema)
    after.close()
    assert {rule.key for rule in RULES if rule.kind != "not_ids"} <= indexed
