"""Property-based tests (hypothesis): query-option parsing and the path / fingerprint code.

Each property is one a user's input must never break: any text either parses or is refused with a
QueryError, and any file name survives the round trip through the store's payload.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mediasearch.errors import QueryError
from mediasearch.media.discover import display_path, fingerprint, path_from_payload, path_payload
from mediasearch.search.query import parse_date, parse_weighted

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# File names as the kernel gives them: any bytes but NUL and "/", decoded the way Python does.
name_bytes = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b and b"/" not in b)
path_bytes = st.lists(name_bytes, min_size=1, max_size=4).map(lambda parts: b"/" + b"/".join(parts))
fs_paths = path_bytes.map(os.fsdecode)

TERMINAL_CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029", "\u202e", "\u2066"]

# -- query options ---------------------------------------------------------------------------------


@FAST
@given(st.text())
@example("2: ")
@example("1" * 400 + ":dog")
def test_parse_weighted_never_crashes(text: str) -> None:
    try:
        weight, term = parse_weighted(text)
    except QueryError:
        return
    assert math.isfinite(weight)
    assert term == term.strip()
    if text.strip():
        assert term, f"{text!r} lost its text"


@FAST
@given(
    st.floats(min_value=-1000, max_value=1000, allow_nan=False).map(lambda w: round(w, 3)),
    st.text(min_size=1).filter(lambda t: t.strip() and "\n" not in t and "\r" not in t),
)
def test_parse_weighted_round_trip(weight: float, text: str) -> None:
    got_weight, got_text = parse_weighted(f"{weight}:{text}")
    if "e" in repr(weight):  # 1e-05: not the plain decimal the syntax accepts, so all of it is text
        return
    assert got_weight == pytest.approx(weight)
    assert got_text == text.strip()


@FAST
@given(st.text())
@example("9999-12-31")
@example("0001-01-01")
@example("9999")
def test_parse_date_parses_or_refuses(text: str) -> None:
    for end in (False, True):
        try:
            value = parse_date(text, end=end)
        except QueryError as exc:
            assert "\n" not in str(exc).strip("'")  # one line (the text itself is shown repr'd)
            continue
        assert math.isfinite(value)


@FAST
@given(st.dates(min_value=dt.date(1971, 1, 2), max_value=dt.date(9998, 12, 30)))
def test_parse_date_day_month_year(day: dt.date) -> None:
    start = parse_date(day.isoformat())
    assert start == dt.datetime(day.year, day.month, day.day).timestamp()
    assert parse_date(day.isoformat(), end=True) > start
    assert (
        parse_date(f"{day.year:04d}-{day.month:02d}") <= start < parse_date(f"{day.year:04d}-{day.month:02d}", end=True)
    )
    assert parse_date(f"{day.year:04d}") <= start < parse_date(f"{day.year:04d}", end=True)


texts = st.text(min_size=1, max_size=30)


@FAST
@given(
    st.one_of(st.none(), texts),
    st.one_of(st.none(), st.floats(-10, 10, allow_nan=False)),
    st.lists(texts, max_size=3),
    st.lists(texts, max_size=3),
    st.lists(st.sampled_from(["a.jpg", "b.png"]).map(Path), max_size=2),
    st.lists(st.sampled_from(["c.jpg"]).map(Path), max_size=2),
)
def test_cli_terms(
    text: str | None,
    weight: float | None,
    also: list[str],
    nots: list[str],
    images: list[Path],
    not_images: list[Path],
) -> None:
    """Every part becomes one term; --not and --not-image subtract, the rest adds."""
    from mediasearch.library.requests import _terms

    values = {"text": text, "weight": weight, "also": also, "image": images, "negatives": nots, "not_image": not_images}
    try:
        terms = _terms(values)
    except QueryError:
        return  # a weight out of range
    expected = (1 if text else 0) + len(also) + len(images) + len(nots) + len(not_images)
    assert len(terms) == expected
    images_in = [t for t in terms if t.kind == "image"]
    assert [t.weight for t in images_in] == [1.0] * len(images) + [-1.0] * len(not_images)
    if text and weight is not None:
        assert terms[0].weight == weight
    for term, raw in zip(terms[len(terms) - len(nots) - len(not_images) :], nots, strict=False):
        assert term.weight == -parse_weighted(raw)[0]
    assert all(math.isfinite(t.weight) for t in terms)


# -- paths and fingerprints ------------------------------------------------------------------------


@FAST
@given(fs_paths)
@example("/photos/caf\udce9.jpg")
@example("/photos/line\nbreak\x1b[31m.jpg")
@example("/photos/\u202eevil.jpg")
def test_path_payload_round_trips(path: str) -> None:
    payload = path_payload(path)
    assert path_from_payload(payload) == path
    assert payload["path"] == display_path(path)
    payload["path"].encode("utf-8")  # storable as JSON / UTF-8, never a lone surrogate
    assert ("path_raw" in payload) == (payload["path"] != path)


@FAST
@given(fs_paths)
def test_display_path_is_safe_to_print(path: str) -> None:
    shown = display_path(path)
    assert not any(ch in shown for ch in TERMINAL_CONTROLS)
    assert display_path(shown) == shown  # showing twice changes nothing
    if path.isprintable() and shown == path:
        assert path_payload(path) == {"path": path}


def _write(folder: str, data: bytes) -> str:
    path = os.path.join(folder, "f.bin")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


CHUNK = 64 * 1024


@settings(max_examples=60, deadline=None)
@given(
    st.binary(min_size=0, max_size=3 * CHUNK).filter(lambda b: len(b) > 0),
    st.integers(min_value=0),
    st.integers(min_value=1, max_value=255),
)
def test_fingerprint_sees_head_and_tail_changes(data: bytes, where: int, flip: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, data)
        before = fingerprint(path, len(data))
        assert fingerprint(path, len(data)) == before  # deterministic
        i = where % len(data)
        changed = bytearray(data)
        changed[i] ^= flip
        _write(folder, bytes(changed))
        after = fingerprint(path, len(data))
    in_window = len(data) <= 2 * CHUNK or i < CHUNK or i >= len(data) - CHUNK
    assert (after != before) == in_window


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=1000), st.binary(max_size=1000))
def test_fingerprint_includes_the_size(a: bytes, b: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        first = fingerprint(_write(folder, a), len(a))
        second = fingerprint(_write(folder, b), len(b))
    assert (first == second) == (a == b)


def test_fingerprint_refuses_what_is_no_longer_a_regular_file(tmp_path: Path) -> None:
    """A FIFO put in a photo's place after discovery must not block the indexer."""
    from mediasearch.errors import MediaError

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="not a regular file"):
        fingerprint(str(fifo), 1000)
    with pytest.raises(MediaError, match="cannot read file"):
        fingerprint(str(tmp_path / "gone.jpg"), 10)
