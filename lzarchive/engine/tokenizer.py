"""Engine layer: token ids ↔ bytes. Decoding needs only the token → bytes table; encoding may use a BPE tokenizer,
and every encoding is checked to reproduce its bytes exactly (the lm codec falls back where it does not)."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes_from_strings(tokens: list[str], control: set[int]) -> list[bytes]:
    """Token strings of a byte-level (GPT-2 style) or SentencePiece (▁, <0xAB>) vocabulary → raw bytes."""
    alphabet = byte_level_alphabet()
    out = []
    for i, token in enumerate(tokens):
        if i in control:
            out.append(token.encode("utf-8"))
        elif all(ch in alphabet for ch in token):
            out.append(bytes(alphabet[ch] for ch in token))
        elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            out.append(bytes([int(token[3:5], 16)]))
        else:
            out.append(token.replace("▁", " ").encode("utf-8"))
    return out


class TokenTable:
    """The token → bytes table, flattened into one byte string and offsets (how the compiled model stores it)."""

    def __init__(self, data: bytes, offsets: np.ndarray) -> None:
        self.data = data
        self.offsets = offsets
        self._pieces = [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
        self.byte_tokens = self._single_byte_tokens()

    @classmethod
    def from_list(cls, pieces: list[bytes]) -> TokenTable:
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in pieces])
        return cls(b"".join(pieces), offsets)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"tokenizer.bytes": torch.frombuffer(bytearray(self.data), dtype=torch.uint8).clone(),
                "tokenizer.offsets": torch.from_numpy(self.offsets.copy())}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TokenTable:
        return cls(tensors["tokenizer.bytes"].numpy().tobytes(), tensors["tokenizer.offsets"].numpy())

    def __len__(self) -> int:
        return len(self._pieces)

    def piece(self, token: int) -> bytes:
        return self._pieces[token]

    def decode(self, tokens) -> bytes:
        return b"".join(self._pieces[t] for t in tokens)

    def _single_byte_tokens(self) -> dict[int, int]:
        tokens: dict[int, int] = {}
        for token, piece in enumerate(self._pieces):
            if len(piece) == 1 and piece[0] not in tokens:
                tokens[piece[0]] = token
        return tokens


class TokenizerError(ValueError):
    """A model's tokenizer that cannot be read."""


class Encoder:
    """Bytes → token ids: a BPE tokenizer on the valid UTF-8 runs, single-byte tokens for other bytes, and the escape
    token followed by the raw byte for bytes that have no token of their own (a control character the vocabulary
    lacks is cut out of its run and escaped, rather than dropped by the tokenizer).

    Returns (tokens, escaped) with escaped[i] the byte that follows escape token i, or None when the tokenizer's ids
    do not reproduce the bytes exactly (normalization, added prefixes): the caller then codes the chunk another way.
    """

    def __init__(self, table: TokenTable, tokenizer_json: str | None, escape_token: int) -> None:
        self.table = table
        self.escape_token = escape_token
        self.tokenizer = None
        if tokenizer_json:
            from tokenizers import Tokenizer

            try:
                self.tokenizer = Tokenizer.from_str(tokenizer_json)
            except Exception as exc:  # the library raises bare Exceptions
                raise TokenizerError(f"its tokenizer cannot be read ({exc})") from None
        self._untokenizable = _characters_with_bytes(set(range(256)) - table.byte_tokens.keys())

    def encode(self, data: bytes) -> tuple[list[int], dict[int, int]] | None:
        tokens: list[int] = []
        escaped: dict[int, int] = {}
        for piece in self._pieces(data):
            if isinstance(piece, str):
                tokens.extend(self.tokenizer.encode(piece, add_special_tokens=False).ids)
                continue
            for byte in piece:
                token = self.table.byte_tokens.get(byte)
                if token is None:
                    escaped[len(tokens)] = byte
                    token = self.escape_token
                tokens.append(token)
        natural_escape = tokens.count(self.escape_token) != len(escaped)
        beyond = max(tokens, default=0) >= len(self.table)  # an added token the table lacks (a pad token, say)
        return None if natural_escape or beyond or self.decode(tokens, escaped) != data else (tokens, escaped)

    def _pieces(self, data: bytes):
        """Text for the tokenizer (str) and bytes to code one by one, in order, in one pass over the data."""
        for run in _utf8_runs(data):
            if isinstance(run, bytes) or self.tokenizer is None:
                yield run if isinstance(run, bytes) else run.encode("utf-8")
            elif self._untokenizable is None:
                yield run
            else:
                start = 0
                for match in self._untokenizable.finditer(run):
                    if match.start() > start:
                        yield run[start : match.start()]
                    yield match.group().encode("utf-8")
                    start = match.end()
                if start < len(run):
                    yield run[start:]

    def decode(self, tokens: list[int], escaped: dict[int, int]) -> bytes:
        return b"".join(bytes([escaped[i]]) if i in escaped else self.table.piece(t) for i, t in enumerate(tokens))


_INVALID = re.compile("[\udc80-\udcff]+")  # what surrogateescape makes of bytes that are not valid UTF-8


def _utf8_runs(data: bytes):
    """Maximal valid UTF-8 runs (as str) and the bytes between them (as bytes), in one pass."""
    text = data.decode("utf-8", "surrogateescape")
    start = 0
    for match in _INVALID.finditer(text):
        if match.start() > start:
            yield text[start : match.start()]
        yield match.group().encode("utf-8", "surrogateescape")
        start = match.end()
    if start < len(text):
        yield text[start:]


def _characters_with_bytes(missing: set[int]) -> re.Pattern | None:
    """A pattern for the characters whose UTF-8 form starts with (or is) one of these bytes: ASCII characters and
    the code point ranges of multi-byte lead bytes. Continuation bytes (0x80-0xBF) a vocabulary lacks are not
    covered; such encodings fail the exactness check and the chunk goes to another codec."""
    ranges = []
    for byte in sorted(missing):
        if byte < 0x80:
            ranges.append((byte, byte))
        elif 0xC2 <= byte <= 0xDF:
            ranges.append(((byte & 0x1F) << 6, ((byte & 0x1F) << 6) + 0x3F))
        elif 0xE0 <= byte <= 0xEF:
            ranges.append((max((byte & 0x0F) << 12, 0x800), ((byte & 0x0F) << 12) + 0xFFF))
        elif 0xF0 <= byte <= 0xF4:
            ranges.append((max((byte & 0x07) << 18, 0x10000), min(((byte & 0x07) << 18) + 0x3FFFF, 0x10FFFF)))
    if not ranges:
        return None
    return re.compile("[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges) + "]+")


def bpe_tokenizer_json(tokens: list[str], merges: list[str], byte_level: bool) -> str:
    """A tokenizers-library BPE over a GGUF vocabulary (llama.cpp 'smollm'-style pre-tokenization for byte-level)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=not byte_level))
    if byte_level:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    return json.dumps(json.loads(tokenizer.to_str()), sort_keys=True)
