"""CLIP's byte-level BPE tokenizer, written here from its definition.

Text is cleaned as CLIP does (HTML entities unescaped twice, runs of whitespace made one space,
stripped, lower-cased; CLIP's ftfy mojibake repair is not applied, as no dependency here provides
it: it changes only text with broken encodings). It is then split into words, numbers (one digit
each) and runs of other symbols, with English contractions ('s, 't, 're, 've, 'm, 'll, 'd) split
off; each piece's UTF-8 bytes become printable stand-in characters, the last marked as the end of
a word (``</w>``), and merged pair by pair in the order of the vocabulary's merge list.
A text's ids are ``[49406 (start), ..., 49407 (end)]`` padded with zeros to 77.
"""

from __future__ import annotations

import html
import os
import re
import unicodedata
from collections.abc import Sequence

import torch

from .vocabulary import read_merges, vocabulary_bytes

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
START_ID = 49406
END_ID = 49407
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
WORD_END = "</w>"
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_WHITESPACE = re.compile(r"\s+")


def byte_symbols() -> dict[int, str]:
    """Byte -> a printable character standing for it.

    Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; the others (controls, space, soft hyphen) get characters from 256 up, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return symbols


def clean_text(text: str) -> str:
    """CLIP's cleaning, less ftfy: unescape HTML twice, collapse whitespace, strip, lower-case."""
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def split_words(text: str) -> list[str]:
    """Pre-tokenization: the special tokens, contractions, letter runs (Unicode letters), single
    digits (Unicode numbers) and runs of other non-space characters, in text order."""
    pieces: list[str] = []
    position = 0
    while position < len(text):
        character = text[position]
        if character.isspace():
            position += 1
            continue
        end = _piece_end(text, position)
        pieces.append(text[position:end])
        position = end
    return pieces


def _kind(character: str) -> str:
    category = unicodedata.category(character)
    if category.startswith("L"):
        return "letter"
    if category.startswith("N"):
        return "number"
    return "space" if character.isspace() else "other"


def _piece_end(text: str, start: int) -> int:
    """Where the piece starting at ``start`` (not a space) ends, by the first rule that fits."""
    for special in (START_TOKEN, END_TOKEN):
        if text.startswith(special, start):
            return start + len(special)
    lowered = text[start : start + 3].lower()
    for contraction in _CONTRACTIONS:
        if lowered.startswith(contraction):
            return start + len(contraction)
    kind = _kind(text[start])
    if kind == "number":
        return start + 1
    end = start + 1
    while end < len(text) and _kind(text[end]) == kind:
        end += 1
    return end


class ClipTokenizer:
    """CLIP's BPE tokenizer.

    Args:
        vocabulary: CLIP's ``bpe_simple_vocab_16e6.txt.gz``, or a wheel/zip holding it; default:
            found or downloaded as :func:`fastsam3d_core.text.vocabulary.vocabulary_bytes` says.
        download: whether the vocabulary may be downloaded when no copy is found.

    Raises:
        VocabularyError: no vocabulary, or a file that is not CLIP's.
    """

    def __init__(self, vocabulary: str | os.PathLike | None = None, download: bool = True) -> None:
        merges = read_merges(vocabulary_bytes(vocabulary, download=download))
        symbols = list(byte_symbols().values())
        tokens = symbols + [symbol + WORD_END for symbol in symbols]
        tokens += ["".join(pair) for pair in merges] + [START_TOKEN, END_TOKEN]
        self.encoder = {token: index for index, token in enumerate(tokens)}
        self.decoder = dict(enumerate(tokens))
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_symbols = byte_symbols()
        self._cache = {START_TOKEN: [START_TOKEN], END_TOKEN: [END_TOKEN]}
        assert len(self.encoder) == VOCAB_SIZE, len(self.encoder)

    def bpe(self, piece: str) -> list[str]:
        """The vocabulary tokens of one piece (already mapped to byte symbols)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        parts = [*piece[:-1], piece[-1] + WORD_END]
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda pair: self.merge_ranks.get(pair, len(self.merge_ranks)))
            if best not in self.merge_ranks:
                break
            parts = _merge_pair(parts, best)
        self._cache[piece] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the start and end tokens."""
        ids = []
        for piece in split_words(clean_text(text)):
            if piece not in (START_TOKEN, END_TOKEN):
                piece = "".join(self.byte_symbols[byte] for byte in piece.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(piece))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids: the start token skipped, up to the end token (then padding);
        word ends become spaces."""
        to_byte = {symbol: byte for byte, symbol in self.byte_symbols.items()}
        raw = bytearray()
        for index in ids:
            if int(index) == START_ID:
                continue
            if int(index) == END_ID:
                break
            token = self.decoder[int(index)]
            word_end = token.endswith(WORD_END)
            symbols = token[: -len(WORD_END)] if word_end else token
            raw.extend(to_byte[symbol] for symbol in symbols)
            if word_end:
                raw.extend(b" ")
        return raw.decode("utf-8", errors="replace").strip()

    def tokenize(
        self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH
    ) -> torch.Tensor:
        """Token ids of each text: start, the text's tokens, end, zeros.

        A text longer than ``context_length`` is cut, keeping the end token last (as OpenCLIP
        does), so the encoder still reads its feature at the end token.

        Returns:
            int64 tensor (N, context_length).
        """
        if isinstance(texts, str):
            texts = [texts]
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [START_ID, *self.encode(text), END_ID]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = END_ID
            result[row, : len(ids)] = torch.tensor(ids)
        return result

    __call__ = tokenize


def _merge_pair(parts: list[str], pair: tuple[str, str]) -> list[str]:
    """``parts`` with every left-to-right occurrence of ``pair`` joined into one symbol."""
    merged: list[str] = []
    index = 0
    while index < len(parts):
        if index + 1 < len(parts) and (parts[index], parts[index + 1]) == pair:
            merged.append(parts[index] + parts[index + 1])
            index += 2
        else:
            merged.append(parts[index])
            index += 1
    return merged
