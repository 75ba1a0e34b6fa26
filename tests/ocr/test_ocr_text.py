"""The one normaliser of recognised text and queries: case, accents, word prefixes, digit-for-letter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mediasearch.ocr.text import CJK_GRAMS, PART_MIN, PREFIX_MIN, index_text, normalise, query_words, snippet, words


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


def test_short_runs_of_words_are_split_too() -> None:
    """Sign text is short: "NOLITTER" must match "litter", "OCBCBank" "bank"; a whole word stays whole."""
    tokens = set(index_text(["NOLITTER", "OCBCBank"]).split())
    assert {"litter", "bank"} <= tokens
    for word in ("together", "question", "sandwich", "yesterday"):
        assert all(word.startswith(token) for token in index_text([word]).split())  # prefixes only


@given(
    st.text(alphabet="港区東京中文", min_size=1, max_size=4),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
)
def test_latin_beside_chinese_in_one_token_is_found(cjk: str, latin: str) -> None:
    """A bilingual sign read without a space ("港区MINATOCITY") still matches its Latin words."""
    tokens = set(words(index_text([f"@{cjk}{latin.upper()}"])))
    assert latin in tokens
    assert len(cjk) < min(CJK_GRAMS) or cjk[: max(CJK_GRAMS)] in tokens


def test_bilingual_sign_read_as_one_token() -> None:
    tokens = set(index_text(["@港区MINATOCITY"]).split())
    assert {"minato", "city", "minatocity", "港区"} <= tokens


def test_chinese_words_match_inside_a_line_without_spaces() -> None:
    tokens = set(index_text(["繁體中文測試"]).split())
    assert {"繁體", "測試", "中文測試"} <= tokens
    assert query_words("測試") == ("測試",)


def test_words_run_together_are_split_where_the_case_changes() -> None:
    """A name the word list lacks, glued to the next word: "OCBCBank" must match "ocbc"."""
    tokens = set(index_text(["OCBCBank", "collectMovieShots,", "ÉcoleNormale"]).split())
    assert {"ocbc", "bank", "collect", "movie", "shots", "ecole", "normale"} <= tokens
    assert index_text(["SALE ALL YEAR", "Sale"]) == "sale all year\nsale"  # no change of case inside: as read


_UPPER = st.text(alphabet="BCDFGHJKLMNPQRSTVWXZ", min_size=PART_MIN, max_size=8)
_LOWER = st.text(alphabet="bcdfghjklmnpqrstvwxz", min_size=PART_MIN - 1, max_size=8)


@settings(deadline=None)
@given(st.lists(st.one_of(_UPPER, st.tuples(_UPPER, _LOWER)), min_size=2, max_size=4))
def test_each_word_of_a_run_glued_across_a_case_change_is_found(pieces: list[str | tuple[str, str]]) -> None:
    """Invariant: words glued together in "UPPER", "Capitalised" and "camelCase" runs ("OCBCBank",
    "NewYorkTimes") are each a whole word of the index text, whatever the word list knows."""
    glued = [p if isinstance(p, str) else p[0][0] + p[1] for p in pieces]
    # Two upper-case words in a row are one run to any reader: join them before asking.
    wanted: list[str] = []
    for piece, original in zip(glued, pieces, strict=True):
        if wanted and isinstance(original, str) and wanted[-1].isupper():
            wanted[-1] += piece
        else:
            wanted.append(piece)
    indexed = set(words(index_text(["".join(glued)])))
    for word in wanted:
        assert word.lower() in indexed, (glued, word)
