"""Codec layer: the text forms of an lm chunk (format 2.9, SPEC.md 9.14). Text stored as UTF-16 is coded as its UTF-8
form, the bytes the model learned from (asyoulik.txt's opening as UTF-16LE: 2.3 x the bytes, 6 x the time), and
turned back after decoding."""

from __future__ import annotations

import codecs

BYTES, UTF16LE, UTF16BE = 0, 1, 2  # the payload's text field
ENCODINGS = {UTF16LE: "utf-16-le", UTF16BE: "utf-16-be"}


def coded_form(chunk: bytes) -> tuple[int, bytes]:
    """The form the reference writer codes a chunk in, and the bytes it tokenizes: UTF-16 (little-endian tried first)
    without an unpaired surrogate whose UTF-8 form is shorter, as that form; anything else as it is. Only a character
    below U+0080 is shorter in UTF-8 than in UTF-16, and its UTF-16 holds a zero byte: bytes without one (ASCII or
    UTF-8 text) are never shorter read as UTF-16, so they stay bytes."""
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
    they end inside of is left out); UnicodeDecodeError where a text form's are not well-formed UTF-8 (a surrogate, an
    overlong or truncated sequence, past U+10FFFF)."""
    if form == BYTES:
        return coded
    return codecs.getincrementaldecoder("utf-8")().decode(coded, final).encode(ENCODINGS[form])


def utf8_limit(limit: int) -> int:
    """Bytes of a text form's UTF-8 that hold at least `limit` bytes of its UTF-16 once the character they end inside
    of is left out: a character of 3 UTF-8 bytes is 2 in UTF-16, and none has fewer UTF-16 bytes per UTF-8 byte."""
    return 3 * limit // 2 + 3
