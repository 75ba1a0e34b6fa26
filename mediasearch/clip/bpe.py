"""CLIP's byte-pair tokenizer (open_clip's ``SimpleTokenizer`` with its defaults) without torch.

open_clip's tokenizer module imports torch at its top (seconds on a cold start) only to return a
tensor. This one reads the same vocabulary file and returns numpy arrays; ``onnx_text`` uses it only
after checking that it tokenizes like the model's own tokenizer.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mediasearch.errors import ModelError

_MERGES = 49152 - 256 - 2  # the merges open_clip reads from its vocabulary file
_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def vocabulary_file() -> Path:
    """open_clip's BPE vocabulary, found without importing open_clip."""
    package = importlib.util.find_spec("open_clip")
    if package is None or not package.submodule_search_locations:
        raise ModelError("open_clip is not installed")
    return Path(next(iter(package.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


@functools.cache
def _byte_symbols() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


class BpeTokenizer:
    """Texts → N×context_length int64 token ids: start token, BPE ids, end token, zero padding."""

    def __init__(self, context_length: int = 77, vocabulary: Path | None = None) -> None:
        import regex

        lines = gzip.open(vocabulary or vocabulary_file()).read().decode("utf-8").split("\n")[1 : _MERGES + 1]
        symbols = list(_byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + [line.replace(" ", "") for line in lines]
        vocab += ["<start_of_text>", "<end_of_text>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {line: i for i, line in enumerate(lines)}  # "first second": merges as written
        self.sot, self.eot = self.encoder["<start_of_text>"], self.encoder["<end_of_text>"]
        self.context_length = context_length
        self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)
        self._cache: dict[str, list[int]] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        import ftfy

        clean = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split()).lower()
        ids: list[int] = []
        byte_symbols = _byte_symbols()
        for word in self._pattern.findall(clean):
            if word in ("<start_of_text>", "<end_of_text>"):  # open_clip keeps these whole
                ids.append(self.encoder[word])
                continue
            ids.extend(self._word("".join(byte_symbols[b] for b in word.encode("utf-8"))))
        return ids

    def _word(self, token: str) -> list[int]:
        if token not in self._cache:
            self._cache[token] = [self.encoder[part] for part in self._merge(token)]
        return self._cache[token]

    def _merge(self, token: str) -> list[str]:
        """Merge the pair of lowest rank until none is left (the last symbol carries ``</w>``)."""
        word: list[str] = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {f"{a} {b}" for a, b in zip(word, word[1:], strict=False)}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            first, second = best.split(" ")
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word
