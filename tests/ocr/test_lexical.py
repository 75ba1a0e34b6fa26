"""The lexical side of text search on both store backends: words in recognised text, prefixes of long
words, digit-for-letter readings, rarity, fusion with the CLIP ranking, a video's moment."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from mediasearch import store as st
from mediasearch.media.discover import ancestor_dirs
from mediasearch.ocr.text import index_text
from mediasearch.search.lexical import RRF_K, fuse, lexical_search, searchable_words, text_moment
from mediasearch.store.base import Filter, PointIn, Store
from mediasearch.store.server import forget_memory_servers

DIM = 8
PICTURES = {
    "/p/receipt.jpg": ["STARBUCKS COFFEE", "Caffè Latte 4.50", "TOTAL 4.50"],
    "/p/sign.jpg": ["WiFi password: harbour2024"],
    "/p/menu.jpg": ["Coffee", "Tea", "Cake"],
    "/p/oyster.jpg": ["MMS 0YSTER SCE 156G"],
    "/p/dog.jpg": [],
}
SLIDE = ["Quarterly results", "Revenue grew"]  # on the video's frames at 4 and 6 s


def _point(path: str, lines: list[str], i: int, timestamp: float | None = None) -> PointIn:
    payload: dict[str, Any] = {
        "path": path,
        "dirs": ancestor_dirs(path),
        "kind": "video" if path.endswith(".mp4") else "image",
        "ocr_text": index_text(lines) or None,
        "ocr_lines": [{"text": t, "conf": 0.9, "box": [0, 0, 1, 1]} for t in lines],
    }
    if timestamp is not None:
        payload["timestamp"] = timestamp
    return PointIn(st.point_id(path, timestamp), np.eye(DIM, dtype=np.float32)[i % DIM], payload)


def _points() -> list[PointIn]:
    points = [_point(path, lines, i) for i, (path, lines) in enumerate(PICTURES.items())]
    for t in (0.0, 2.0, 4.0, 6.0, 8.0, 10.0):
        points.append(_point("/p/talk.mp4", SLIDE if 4.0 <= t < 8.0 else [], 5, t))
    return points


@pytest.fixture(scope="module", params=["edge", "server"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    forget_memory_servers()
    fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    home = Path(tempfile.mkdtemp(prefix="mediasearch-lexical-", dir=fast))
    url = ":memory:" if request.param == "server" else None
    opened = st.open_store(home=home, collection="media_lexical", dim=DIM, qdrant_url=url)
    opened.upsert(_points())
    yield opened
    opened.close()
    forget_memory_servers()
    shutil.rmtree(home, ignore_errors=True)


def _paths(store: Store, text: str, flt: Filter | None = None) -> list[str]:
    return [hit.path for hit in lexical_search(store, searchable_words([text]), flt)]


def test_query_words_leave_out_stopwords() -> None:
    assert searchable_words(["the receipt from Starbucks", "a photo of WiFi"]) == ("receipt", "starbucks", "wifi")


def test_words_are_matched_case_and_accent_insensitively(store: Store) -> None:
    assert _paths(store, "the receipt from starbucks") == ["/p/receipt.jpg"]
    assert _paths(store, "caffe latte") == ["/p/receipt.jpg"]
    assert _paths(store, "WIFI") == ["/p/sign.jpg"]


def test_long_words_match_from_their_beginning_and_digits_read_for_letters(store: Store) -> None:
    assert _paths(store, "starbuck") == ["/p/receipt.jpg"]
    assert _paths(store, "quarter") == ["/p/talk.mp4"]
    assert _paths(store, "oyster") == ["/p/oyster.jpg"]
    assert _paths(store, "starb") == []  # too short to be a prefix
    assert _paths(store, "cof") == []


def test_more_and_rarer_words_rank_first(store: Store) -> None:
    # "coffee" is on two pictures, "starbucks" on one: the picture holding both comes first.
    assert _paths(store, "starbucks coffee") == ["/p/receipt.jpg", "/p/menu.jpg"]
    assert _paths(store, "coffee", Filter(dir_prefix="/p")) == sorted(["/p/menu.jpg", "/p/receipt.jpg"])


def test_the_other_filters_still_hold(store: Store) -> None:
    assert _paths(store, "coffee", Filter(path="/p/menu.jpg")) == ["/p/menu.jpg"]
    assert _paths(store, "quarterly", Filter(kind="image")) == []


def test_the_ocr_filter_on_both_backends(store: Store) -> None:
    ids = {r.payload["path"] for r in store.scroll(Filter(ocr=("password", "harbour2024")), fields=["path"])}
    assert ids == {"/p/sign.jpg"}
    assert store.count(Filter(ocr=("password", "starbucks"))) == 0  # every word must be there


def test_a_video_moment_is_where_the_words_appear(store: Store) -> None:
    assert text_moment(store, "/p/talk.mp4", ("revenue",)) == (4.0, 4.0, 6.0)
    assert text_moment(store, "/p/talk.mp4", ("starbucks",)) is None
    (hit,) = lexical_search(store, ("revenue",))
    assert hit.record.payload["timestamp"] == 4.0 and hit.words == ["revenue"]


def test_fusion_puts_an_item_in_both_rankings_first() -> None:
    clip = ["a", "b", "c", "d"]
    lexical = ["d"]
    assert fuse(clip, lexical)[0] == "d"
    assert fuse(clip, []) == clip
    assert fuse(clip, ["x"]) == ["a", "x", "b", "c", "d"]  # ties keep the CLIP ranking's order


@given(hs.lists(hs.text("abcdef", min_size=1, max_size=3), unique=True, max_size=8), hs.permutations(list("abc")))
def test_fusion_keeps_every_item_once_and_agrees_with_identical_rankings(ranking: list[str], other: list[str]) -> None:
    fused = fuse(ranking, other)
    assert sorted(fused) == sorted(set(ranking) | set(other))
    assert fuse(ranking, ranking) == ranking
    assert RRF_K > 0
