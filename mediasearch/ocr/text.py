"""Recognised text as the index holds it and as queries match it, on the one normaliser of the project
(``mediasearch.textnorm``: lowercase, accents folded, words split on what is not a letter or digit).

``index_text`` is what goes into the payload's ``ocr_text``: the normalised lines, then extra words so
that a whole-word match also finds
- a long word from its beginning: "starbuck" finds "STARBUCKS" (``PREFIX_MIN`` letters or more);
- a word the recogniser read with a digit for a letter: "oyster" finds "0YSTER";
- a word inside words the recogniser ran together (it often drops the spaces of tight print):
  "account" finds "CHEQUINGACCOUNT", split by word frequencies (wordninja's English list), and "ocbc"
  finds "OCBCBank", split where the case changes (names the list lacks);
- a word of Chinese or Japanese, written without spaces: every run of 2-4 of its characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import cast

from mediasearch import textnorm

PREFIX_MIN = 6  # a query word this long matches the words it begins
PREFIX_MAX_WORD = 24  # longer "words" are lines whose spaces the recogniser dropped: no prefixes
# A run of letters this long may be several words without their spaces: signs read "NOLITTER",
# "OCBCBank". At 8, wordninja splits 4 of the 7268 commonest 8-9-letter words ("infamous" -> "famous").
GLUED_MIN = 8
PART_MIN = 3  # shorter pieces of a split run are not words of their own
CJK_GRAMS = (2, 3, 4)
_DIGIT_FOR_LETTER = str.maketrans({"0": "o", "1": "l", "5": "s", "8": "b"})


def normalise(text: str) -> str:
    """Lowercase, accents removed (``textnorm.fold``), whitespace collapsed; punctuation kept."""
    return " ".join(textnorm.fold(text).split())


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (``textnorm.words``: letters and digits; punctuation splits)."""
    return list(textnorm.words(text))


def query_words(text: str) -> tuple[str, ...]:
    """The words a ``--ocr`` query asks for, each once, in order."""
    return tuple(dict.fromkeys(words(text)))


def index_text(lines: Iterable[str]) -> str:
    """The payload ``ocr_text`` of recognised ``lines``: the text, then the extra words to match."""
    kept = [line for line in lines if line.strip()]
    text = "\n".join(normalise(line) for line in kept)
    parts = [word for line in kept for part in _case_parts(line) for word in words(part)]
    extra = dict.fromkeys([*parts, *(word for token in [*words(text), *parts] for word in _variants(token))])
    present = set(words(text))
    tail = " ".join(word for word in extra if word not in present)
    return f"{text}\n{tail}" if tail else text


def _variants(token: str) -> list[str]:
    out = []
    if any(ch.isdigit() for ch in token) and sum(ch.isalpha() for ch in token) >= 2:
        out.append(token.translate(_DIGIT_FOR_LETTER))
    if _CJK.search(token):
        # A sign's Latin beside its Chinese or Japanese, read as one token ("港区MINATOCITY").
        latin = [run for run in _CJK.split(token) if run]
        return out + _cjk_grams(token) + latin + [v for run in latin for v in _variants(run)]
    for word in list(out) + [token]:
        if len(word) >= GLUED_MIN and word.isascii():
            out.extend(_split_glued(word))
    for word in [token, *out]:
        if PREFIX_MIN < len(word) <= PREFIX_MAX_WORD and word.isalpha():
            out.extend(word[:end] for end in range(PREFIX_MIN, len(word)))
    return out


def _case_parts(line: str) -> list[str]:
    """The words of the letter runs in ``line`` whose case changes inside them, where a word begins:
    "OCBCBank" -> "OCBC", "Bank"; "MovieShots" -> "Movie", "Shots" (the case is gone once normalised)."""
    out: list[str] = []
    for run in _LETTERS.findall(line):
        starts = [0] + [
            i
            for i in range(1, len(run))
            if run[i].isupper() and (run[i - 1].islower() or (i + 1 < len(run) and run[i + 1].islower()))
        ]
        if len(starts) > 1:
            pieces = (run[a:b] for a, b in zip(starts, [*starts[1:], len(run)], strict=True))
            out.extend(piece for piece in pieces if len(piece) >= PART_MIN)
    return out


_LETTERS = re.compile(r"[^\W\d_]+")


def _split_glued(run: str) -> list[str]:
    """The words of a run the recogniser glued together, and runs of short pieces joined back (a word
    the frequency list lacks comes out in pieces: "che" "quin" "g" -> "chequing")."""
    parts = _splitter()(run)
    if len(parts) < 2:
        return []
    words = [p for p in parts if len(p) >= PART_MIN and p.isalpha()]
    short: list[str] = []
    for part in [*parts, ""]:
        if part and len(part) <= 4 and part.isalpha():
            short.append(part)
            continue
        if len(short) >= 2:
            words.append("".join(short))
        short = []
    return words


@functools.cache
def _splitter() -> Callable[[str], list[str]]:
    import wordninja

    return cast(Callable[[str], list[str]], wordninja.split)


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")


def _cjk_grams(token: str) -> list[str]:
    out: list[str] = []
    for run in _CJK.findall(token):
        for n in CJK_GRAMS:
            out.extend(run[i : i + n] for i in range(len(run) - n + 1))
    return out


def snippet(lines: Sequence[str], wanted: Sequence[str], width: int = 80) -> str | None:
    """The recognised line(s) holding the most of ``wanted`` (normalised words), shortened to about
    ``width`` characters around the first of them; None when no line holds any."""
    if not wanted:
        return None
    best, best_count = None, 0
    for line in lines:
        tokens = words(line)
        count = sum(any(tok.startswith(w) or _digit_folded(tok).startswith(w) for tok in tokens) for w in wanted)
        if count > best_count:
            best, best_count = line, count
    if best is None:
        return None
    return _shorten(best.strip(), wanted, width)


def _digit_folded(token: str) -> str:
    return token.translate(_DIGIT_FOR_LETTER) if any(ch.isalpha() for ch in token) else token


def _shorten(line: str, wanted: Sequence[str], width: int) -> str:
    if len(line) <= width:
        return line
    lowered = normalise(line)
    at = min((i for i in (lowered.find(w) for w in wanted) if i >= 0), default=0)
    start = max(0, at - width // 3)
    piece = line[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(line) else "")
