"""The one normaliser of recognised text and queries: case, accents, word prefixes, digit-for-letter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.ocr.text import PREFIX_MIN, index_text, normalise, query_words, snippet, words


def test_normalise_folds_case_accents_and_width() -> None:
    assert normalise("  Café  CRÈME\tÜber ") == "cafe creme uber"
    assert normalise("ＷＩＦＩ") == "wifi"  # full-width forms (screenshots of East Asian UIs)


def test_query_words_split_on_punctuation_once_each() -> None:
    assert query_words("WiFi-password: wifi!") == ("wifi", "password")


def test_index_text_adds_prefixes_of_long_words_only() -> None:
    text = index_text(["STARBUCKS coffee"])
    tokens = set(text.split())
    assert "starbucks" in tokens and "starbuck" in tokens and "starbu" in tokens
    assert "starb" not in tokens  # shorter than PREFIX_MIN
    assert "coffe" not in tokens  # "coffee" is not longer than PREFIX_MIN


def test_index_text_reads_digits_for_letters_in_words() -> None:
    tokens = set(index_text(["MMS 0YSTER SCE 156G"]).split())
    assert "oyster" in tokens and "0yster" in tokens
    assert "156g" in tokens and "lsbg" not in tokens  # a number with a unit stays a number


@settings(deadline=None)  # the first call loads the word list
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=5))
def test_every_word_of_the_lines_matches_their_index_text(lines: list[str]) -> None:
    """Invariant: what a query normalises a recognised word to is a whole word of the index text."""
    indexed = set(words(index_text(lines)))
    for line in lines:
        for word in query_words(line):
            assert word in indexed


@settings(deadline=None)
@given(st.text(alphabet=st.characters(categories=["Ll", "Lu"]), min_size=PREFIX_MIN + 1, max_size=20))
def test_a_long_word_is_found_from_each_beginning_of_prefix_length(word: str) -> None:
    indexed = set(words(index_text([word])))
    full = words(word)
    if len(full) == 1 and full[0].isalpha() and len(full[0]) > PREFIX_MIN:
        for end in range(PREFIX_MIN, len(full[0]) + 1):
            assert full[0][:end] in indexed


def test_snippet_is_the_line_with_the_most_query_words() -> None:
    lines = ["Welcome", "WiFi network: harbour", "password: harbour2024"]
    assert snippet(lines, ("password", "harbour")) == "password: harbour2024"
    assert snippet(lines, ("starbucks",)) is None
    long_line = "x" * 200 + " invoice " + "y" * 200
    cut = snippet([long_line], ("invoice",), width=60)
    assert cut is not None and "invoice" in cut and len(cut) <= 62


def test_words_run_together_are_found_one_by_one() -> None:
    """The recogniser drops the spaces of tight print: "CHEQUINGACCOUNT" must still match "account",
    and a word the frequency list lacks ("chequing") comes back whole from its pieces."""
    tokens = set(index_text(["CHEQUINGACCOUNT", "informationpleasecontactyourlocalpublichealthoffice"]).split())
    assert {"account", "chequing", "contact", "public", "health", "office"} <= tokens


def test_chinese_words_match_inside_a_line_without_spaces() -> None:
    tokens = set(index_text(["繁體中文測試"]).split())
    assert {"繁體", "測試", "中文測試"} <= tokens
    assert query_words("測試") == ("測試",)
