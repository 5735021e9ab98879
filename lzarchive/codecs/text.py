"""Codec layer: the text forms of an lm chunk (formats 2.9 to 2.11, SPEC.md 9.14). Text stored as UTF-16 is coded as
its UTF-8 form, the bytes the model learned from (asyoulik.txt's opening as UTF-16LE: 2.3 x the bytes, 6 x the time),
text in the legacy 8-bit code page of Western Windows and Latin-1 as its UTF-8 form too (French, German, Spanish and
Swedish texts 16-23 % smaller), and text with CR LF line ends as the same text with LF (1.3-1.9 % smaller: the model
learned those too), and turned back after decoding."""

from __future__ import annotations

import codecs
import re

BYTES, UTF16LE, UTF16BE, WINDOWS_1252 = 0, 1, 2, 3  # the payload's text field: what its tokens make
CRLF = 4  # a bit of the text field (the lm_crlf flag): each LF of what the tokens make stands for CR LF
ENCODINGS = {UTF16LE: "utf-16-le", UTF16BE: "utf-16-be"}
# windows-1252 as the WHATWG Encoding Standard defines it, a map of every byte (SPEC.md 9.14): Latin-1's code points
# but for 0x80-0x9F, where Windows put typographic characters (these code points, five of them C1 controls as in
# Latin-1). Total and one to one, so any bytes have this form and come back from it.
WINDOWS_1252_HIGH = (0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
                     0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                     0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178)
_WINDOWS_1252_CHARACTERS = "".join(map(chr, [*range(0x80), *WINDOWS_1252_HIGH, *range(0xA0, 0x100)]))
_WINDOWS_1252_ENCODING = codecs.charmap_build(_WINDOWS_1252_CHARACTERS)
# a well-formed UTF-8 sequence of two bytes or more (Unicode's table 3-7)
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
                            rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
                            rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}")
_HIGH = bytes(range(0x80, 0x100))
_CONTROLS = bytes([*range(0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])  # all but TAB, LF, VT, FF, CR, ESC
CONTROLS_PER_MILLE = 1  # text has few control bytes or none; binary data one in eight


def coded_form(chunk: bytes, crlf: bool = False, windows_1252: bool = False) -> tuple[int, bytes]:
    """The form the reference writer codes a chunk in, and the bytes it tokenizes: UTF-16 (little-endian tried first)
    without an unpaired surrogate whose UTF-8 form is shorter, as that form; with `windows_1252`, legacy 8-bit text
    (legacy_text) as its UTF-8 form; anything else as it is. Only a character below U+0080 is shorter in UTF-8 than in
    UTF-16, and its UTF-16 holds a zero byte: bytes without one (ASCII or UTF-8 text) are never shorter read as
    UTF-16, so they stay bytes. Then, with `crlf`, what holds a line break and every LF of it after a CR, with each
    CR LF as LF."""
    form, text = _encoding(chunk)
    if form == BYTES and windows_1252 and legacy_text(chunk):
        form, text = WINDOWS_1252, codecs.charmap_decode(chunk, "strict", _WINDOWS_1252_CHARACTERS)[0].encode("utf-8")
    if crlf and text.count(b"\n") == text.count(b"\r\n") > 0:
        return form | CRLF, text.replace(b"\r\n", b"\n")
    return form, text


def legacy_text(chunk: bytes) -> bool:
    """Whether a chunk looks like text in an 8-bit code page: more of its bytes above 0x7F lie outside well-formed UTF-8
    sequences than inside (a UTF-8 chunk cut inside a character has a few outside), and control bytes other than
    TAB, LF, VT, FF, CR and ESC make at most CONTROLS_PER_MILLE per 1,000 of its bytes. Binary data fails the second:
    in the UTF-8 form its bytes would get past the tokenizer's escapes (MAX_TEXT_FRACTION_ESCAPED) and be coded by the
    model only to lose to zstd or store."""
    high = len(chunk) - len(chunk.translate(None, _HIGH))
    inside = sum(map(len, _UTF8_SEQUENCE.findall(chunk))) if high else 0
    controls = len(chunk) - len(chunk.translate(None, _CONTROLS))
    return high - inside > inside and 1000 * controls <= CONTROLS_PER_MILLE * len(chunk)


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
    they end inside of is left out); UnicodeError where a UTF-16 or windows-1252 form's are not well-formed UTF-8 (a
    surrogate, an overlong or truncated sequence, past U+10FFFF), or a windows-1252 form's hold a character that its
    bytes do not map to."""
    if form & CRLF:
        coded = coded.replace(b"\n", b"\r\n")
    if form & ~CRLF == BYTES:
        return coded
    text = codecs.getincrementaldecoder("utf-8")().decode(coded, final)
    if form & ~CRLF == WINDOWS_1252:
        return codecs.charmap_encode(text, "strict", _WINDOWS_1252_ENCODING)[0]
    return text.encode(ENCODINGS[form & ~CRLF])


def coded_limit(form: int, limit: int) -> int:
    """Bytes of what the tokens make that hold at least `limit` bytes of the chunk. Each coded byte makes one byte or
    more (an LF of the CRLF form makes two). In a UTF-16 form, once the character they end inside of is left out: a
    character of 3 UTF-8 bytes is 2 in UTF-16, and none has fewer UTF-16 bytes per UTF-8 byte. In the windows-1252
    form each character, of 1 to 3 UTF-8 bytes, is one byte."""
    if form & ~CRLF == BYTES:
        return limit
    return 3 * limit if form & ~CRLF == WINDOWS_1252 else 3 * limit // 2 + 3
