"""Codec layer: the text forms of an lm chunk (formats 2.9 and 2.10, SPEC.md 9.14). Text stored as UTF-16 is coded as
its UTF-8 form, the bytes the model learned from (asyoulik.txt's opening as UTF-16LE: 2.3 x the bytes, 6 x the time),
and text with CR LF line ends as the same text with LF (1.3-1.9 % smaller: the model learned those too), and turned
back after decoding."""

from __future__ import annotations

import codecs

BYTES, UTF16LE, UTF16BE = 0, 1, 2  # the payload's text field: what its tokens make
CRLF = 4  # a bit of the text field (the lm_crlf flag): each LF of what the tokens make stands for CR LF
ENCODINGS = {UTF16LE: "utf-16-le", UTF16BE: "utf-16-be"}


def coded_form(chunk: bytes, crlf: bool = False) -> tuple[int, bytes]:
    """The form the reference writer codes a chunk in, and the bytes it tokenizes: UTF-16 (little-endian tried first)
    without an unpaired surrogate whose UTF-8 form is shorter, as that form; anything else as it is. Only a character
    below U+0080 is shorter in UTF-8 than in UTF-16, and its UTF-16 holds a zero byte: bytes without one (ASCII or
    UTF-8 text) are never shorter read as UTF-16, so they stay bytes. Then, with `crlf`, what holds a line break and
    every LF of it after a CR, with each CR LF as LF."""
    form, text = _encoding(chunk)
    if crlf and text.count(b"\n") == text.count(b"\r\n") > 0:
        return form | CRLF, text.replace(b"\r\n", b"\n")
    return form, text


def _encoding(chunk: bytes) -> tuple[int, bytes]:
    if len(chunk) % 2 == 0:
        for form, encoding in ENCODINGS.items():
            try:
                utf8 = chunk.decode(encoding).encode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(utf8) < len(chunk):
                return form, utf8
    return BYTES, chunk


def chunk_bytes(form: int, coded: bytes, final: bool = True) -> bytes:
    """The chunk's bytes from the bytes its tokens make (all of them, or with final False its first ones: a character
    they end inside of is left out); UnicodeDecodeError where a UTF-16 form's are not well-formed UTF-8 (a surrogate,
    an overlong or truncated sequence, past U+10FFFF)."""
    if form & CRLF:
        coded = coded.replace(b"\n", b"\r\n")
    if form & ~CRLF == BYTES:
        return coded
    return codecs.getincrementaldecoder("utf-8")().decode(coded, final).encode(ENCODINGS[form & ~CRLF])


def coded_limit(form: int, limit: int) -> int:
    """Bytes of what the tokens make that hold at least `limit` bytes of the chunk. Each coded byte makes one byte or
    more (an LF of the CRLF form makes two). In a UTF-16 form, once the character they end inside of is left out: a
    character of 3 UTF-8 bytes is 2 in UTF-16, and none has fewer UTF-16 bytes per UTF-8 byte."""
    return limit if form & ~CRLF == BYTES else 3 * limit // 2 + 3
