"""Codec layer: the text forms of an lm chunk (formats 2.9 to 2.12, SPEC.md 9.14). Text stored as UTF-16 is coded as
its UTF-8 form, the bytes the model learned from (asyoulik.txt's opening as UTF-16LE: 2.3 x the bytes, 6 x the time),
text in a legacy 8-bit code page as the UTF-8 form of its characters too (windows-1252: French, German, Spanish and
Swedish texts 16-23 % smaller; Cyrillic and Greek code pages: Russian and Greek texts 20-50 % smaller), and text with
CR LF line ends as the same text with LF (1.3-1.9 % smaller: the model learned those too), and turned back after
decoding."""

from __future__ import annotations

import codecs
import re

BYTES, UTF16LE, UTF16BE, WINDOWS_1252 = 0, 1, 2, 3  # the payload's text field: what its tokens make
CRLF = 4  # a bit of the text field (the lm_crlf flag): each LF of what the tokens make stands for CR LF
WINDOWS_1251, KOI8_R, IBM866, ISO_8859_7 = 8, 9, 10, 11  # the other code pages (the lm_code_pages flag, 2.12)
ENCODINGS = {UTF16LE: "utf-16-le", UTF16BE: "utf-16-be"}
# windows-1252 as the WHATWG Encoding Standard defines it, a map of every byte (SPEC.md 9.14): Latin-1's code points
# but for 0x80-0x9F, where Windows put typographic characters (these code points, five of them C1 controls as in
# Latin-1). Total and one to one, so any bytes have this form and come back from it.
WINDOWS_1252_HIGH = (0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
                     0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                     0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178)
# bytes 0x80-0xFF of the others, WHATWG's tables made total the same way: windows-1251's 0x98 is U+0098 (WHATWG's
# own choice), and the three bytes ISO-8859-7 leaves undefined (0xAE, 0xD2, 0xFF) stand for Latin-1's code points
WINDOWS_1251_HIGH = (
    0x0402, 0x0403, 0x201A, 0x0453, 0x201E, 0x2026, 0x2020, 0x2021, 0x20AC, 0x2030, 0x0409, 0x2039,
    0x040A, 0x040C, 0x040B, 0x040F, 0x0452, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x0098, 0x2122, 0x0459, 0x203A, 0x045A, 0x045C, 0x045B, 0x045F, 0x00A0, 0x040E, 0x045E, 0x0408,
    0x00A4, 0x0490, 0x00A6, 0x00A7, 0x0401, 0x00A9, 0x0404, 0x00AB, 0x00AC, 0x00AD, 0x00AE, 0x0407,
    0x00B0, 0x00B1, 0x0406, 0x0456, 0x0491, 0x00B5, 0x00B6, 0x00B7, 0x0451, 0x2116, 0x0454, 0x00BB,
    0x0458, 0x0405, 0x0455, 0x0457,
    *range(0x0410, 0x0450),  # А-я
)
KOI8_R_HIGH = (
    0x2500, 0x2502, 0x250C, 0x2510, 0x2514, 0x2518, 0x251C, 0x2524, 0x252C, 0x2534, 0x253C, 0x2580,
    0x2584, 0x2588, 0x258C, 0x2590, 0x2591, 0x2592, 0x2593, 0x2320, 0x25A0, 0x2219, 0x221A, 0x2248,
    0x2264, 0x2265, 0x00A0, 0x2321, 0x00B0, 0x00B2, 0x00B7, 0x00F7, 0x2550, 0x2551, 0x2552, 0x0451,
    0x2553, 0x2554, 0x2555, 0x2556, 0x2557, 0x2558, 0x2559, 0x255A, 0x255B, 0x255C, 0x255D, 0x255E,
    0x255F, 0x2560, 0x2561, 0x0401, 0x2562, 0x2563, 0x2564, 0x2565, 0x2566, 0x2567, 0x2568, 0x2569,
    0x256A, 0x256B, 0x256C, 0x00A9, 0x044E, 0x0430, 0x0431, 0x0446, 0x0434, 0x0435, 0x0444, 0x0433,
    0x0445, 0x0438, 0x0439, 0x043A, 0x043B, 0x043C, 0x043D, 0x043E, 0x043F, 0x044F, 0x0440, 0x0441,
    0x0442, 0x0443, 0x0436, 0x0432, 0x044C, 0x044B, 0x0437, 0x0448, 0x044D, 0x0449, 0x0447, 0x044A,
    0x042E, 0x0410, 0x0411, 0x0426, 0x0414, 0x0415, 0x0424, 0x0413, 0x0425, 0x0418, 0x0419, 0x041A,
    0x041B, 0x041C, 0x041D, 0x041E, 0x041F, 0x042F, 0x0420, 0x0421, 0x0422, 0x0423, 0x0416, 0x0412,
    0x042C, 0x042B, 0x0417, 0x0428, 0x042D, 0x0429, 0x0427, 0x042A,
)
IBM866_HIGH = (
    *range(0x0410, 0x0440),  # А-п
    0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556, 0x2555, 0x2563, 0x2551, 0x2557,
    0x255D, 0x255C, 0x255B, 0x2510, 0x2514, 0x2534, 0x252C, 0x251C, 0x2500, 0x253C, 0x255E, 0x255F,
    0x255A, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256C, 0x2567, 0x2568, 0x2564, 0x2565, 0x2559,
    0x2558, 0x2552, 0x2553, 0x256B, 0x256A, 0x2518, 0x250C, 0x2588, 0x2584, 0x258C, 0x2590, 0x2580,
    *range(0x0440, 0x0450),  # р-я
    0x0401, 0x0451, 0x0404, 0x0454, 0x0407, 0x0457, 0x040E, 0x045E, 0x00B0, 0x2219, 0x00B7, 0x221A,
    0x2116, 0x00A4, 0x25A0, 0x00A0,
)
ISO_8859_7_HIGH = (
    *range(0x80, 0xA0),  # C1 controls
    0x00A0, 0x2018, 0x2019, 0x00A3, 0x20AC, 0x20AF, 0x00A6, 0x00A7, 0x00A8, 0x00A9, 0x037A, 0x00AB,
    0x00AC, 0x00AD, 0x00AE, 0x2015, 0x00B0, 0x00B1, 0x00B2, 0x00B3, 0x0384, 0x0385, 0x0386, 0x00B7,
    0x0388, 0x0389, 0x038A, 0x00BB, 0x038C, 0x00BD, 0x038E, 0x038F,
    *range(0x0390, 0x03A2), 0x00D2, *range(0x03A3, 0x03CF), 0x00FF,  # ΐ-ώ, but for D2 and FF
)
CODE_PAGES = {WINDOWS_1252: (*WINDOWS_1252_HIGH, *range(0xA0, 0x100)), WINDOWS_1251: WINDOWS_1251_HIGH,
              KOI8_R: KOI8_R_HIGH, IBM866: IBM866_HIGH, ISO_8859_7: ISO_8859_7_HIGH}  # each ASCII below 0x80
CODE_PAGE_NAMES = {WINDOWS_1252: "windows-1252", WINDOWS_1251: "windows-1251", KOI8_R: "KOI8-R", IBM866: "IBM866",
                   ISO_8859_7: "ISO-8859-7"}
_CHARACTERS = {page: "".join(map(chr, [*range(0x80), *high])) for page, high in CODE_PAGES.items()}
_ENCODINGS = {page: codecs.charmap_build(characters) for page, characters in _CHARACTERS.items()}
# the writer reads 8-bit text through another code page than windows-1252 where that makes at most this share of its
# tokens: right for Russian and Greek text (21 % and 17 % fewer tokens, or more), and no Latin text's own code page
# loses to a Cyrillic or Greek reading that way (Vim's tutors: Italian read as windows-1251 makes 0.4 % fewer)
CODE_PAGE_SHARE = 0.9
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
        form, text = WINDOWS_1252, read_as(chunk, WINDOWS_1252)
    if crlf and text.count(b"\n") == text.count(b"\r\n") > 0:
        return form | CRLF, text.replace(b"\r\n", b"\n")
    return form, text


def read_as(chunk: bytes, form: int) -> bytes:
    """The bytes a chunk's tokens make in a code page's form: the UTF-8 form of its characters in that code page,
    with CRLF in the form each CR LF as LF."""
    text = codecs.charmap_decode(chunk, "strict", _CHARACTERS[form & ~CRLF])[0].encode("utf-8")
    return text.replace(b"\r\n", b"\n") if form & CRLF else text


def preferred_reading(tokens: dict[int, int]) -> int:
    """The code page (a key of tokens: the token counts of a chunk's forms, windows-1252's among them) whose form the
    writer codes 8-bit text in: windows-1252 unless another makes at most CODE_PAGE_SHARE of its tokens (then the one
    of those with the fewest, the first of equals)."""
    others = [(count, page) for page, count in tokens.items() if count <= CODE_PAGE_SHARE * tokens[WINDOWS_1252]]
    return min(others)[1] if others else WINDOWS_1252


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
    if form & ~CRLF in CODE_PAGES:
        return codecs.charmap_encode(text, "strict", _ENCODINGS[form & ~CRLF])[0]
    return text.encode(ENCODINGS[form & ~CRLF])


def coded_limit(form: int, limit: int) -> int:
    """Bytes of what the tokens make that hold at least `limit` bytes of the chunk. Each coded byte makes one byte or
    more (an LF of the CRLF form makes two). In a UTF-16 form, once the character they end inside of is left out: a
    character of 3 UTF-8 bytes is 2 in UTF-16, and none has fewer UTF-16 bytes per UTF-8 byte. In the windows-1252
    form of a code page each character, of 1 to 3 UTF-8 bytes, is one byte."""
    if form & ~CRLF == BYTES:
        return limit
    return 3 * limit if form & ~CRLF in CODE_PAGES else 3 * limit // 2 + 3
