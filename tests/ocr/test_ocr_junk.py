"""The junk filter: which recognised lines count as writing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mediasearch.ocr.junk import MIN_CONF, SHORT_CONF, SHORT_LEN, keep_line


def test_confident_words_stay_and_texture_goes() -> None:
    assert keep_line("Harbour", 0.9) and keep_line("TOTAL 4.50", 0.6)
    assert not keep_line("||-=_", 0.99)  # strokes of a fence or a railing
    assert not keep_line("ab", 0.8)  # short and unsure: a smudge read as letters
    assert keep_line("OK", 0.95) and keep_line("37%", 0.9)
    assert not keep_line("", 1.0) and not keep_line("   ", 1.0)


@given(st.text(max_size=40), st.floats(0.0, 1.0))
def test_the_rules_as_invariants(text: str, conf: float) -> None:
    kept = keep_line(text, conf)
    alnum = sum(ch.isalnum() for ch in text)
    if kept:
        assert conf >= MIN_CONF and alnum > 0
        assert alnum > SHORT_LEN or conf >= SHORT_CONF
        assert 2 * alnum >= len(text.replace(" ", ""))
    if conf < MIN_CONF:
        assert not kept
