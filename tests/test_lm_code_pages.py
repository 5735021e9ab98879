"""Text in the Cyrillic and Greek 8-bit code pages coded as the UTF-8 form of its characters (format 2.12, SPEC.md
9.14): windows-1251, KOI8-R, IBM866 and ISO-8859-7. Their tables, the form the writer chooses, round trips of each
form alone, in batches, in lockstep and with limits, payloads the reader refuses, and the CLI's formats. (With the
tiny models, whose tokens are bytes, a code page's form makes as many tokens as its UTF-8 bytes.)"""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.codecs import CodecError
from lzarchive.codecs.lm import OTHER_CODE_PAGES, LmCodec
from lzarchive.codecs.text import (BYTES, CRLF, IBM866, ISO_8859_7, KOI8_R, WINDOWS_1251, WINDOWS_1252, chunk_bytes,
                                   coded_limit, preferred_reading, read_as)
from lzarchive.format import constants as C
from lzarchive.format.wire import read_varint

from .conftest import pack_each_way, round_trips_every_way, run_cli
from .tiny import tiny_model

pytestmark = pytest.mark.usefixtures("private_model_cache")

PYTHON_CODECS = {WINDOWS_1251: "cp1251", KOI8_R: "koi8_r", IBM866: "cp866", ISO_8859_7: "iso8859_7"}
# bytes Python's codecs leave undefined, and what SPEC 9.14 makes of them: windows-1251's 0x98 is U+0098 as in
# WHATWG's index; the three bytes ISO-8859-7 leaves undefined (WHATWG's too) are Latin-1's code points
COMPLETED = {WINDOWS_1251: {0x98}, KOI8_R: set(), IBM866: set(), ISO_8859_7: {0xAE, 0xD2, 0xFF}}
# one DOS Cyrillic capital a line, each a byte that windows-1252 reads as a sign of three UTF-8 bytes: 3 tokens a line
# in IBM866's form (the letter's two bytes and LF) and in ISO-8859-7's (a C1 control of two), 4 in windows-1252's
DOS_CAPITALS = "".join(f"{letter}\r\n" for letter in "АВДЕЖЗЙЛСТУФХЦЧЩЫ" * 3).encode("cp866")


def pages_codec(pages: bool = True) -> LmCodec:
    return LmCodec(tiny_model(), window=32, overlap=8, utf16_field=True, crlf_field=True, windows_1252_field=True,
                   code_pages_field=pages)


def text_field(payload: bytes) -> int:
    return read_varint(payload, 3)[0]


@pytest.mark.parametrize("page", OTHER_CODE_PAGES)
def test_each_code_page_maps_every_byte_one_to_one_as_python_and_whatwg_have_it(page):
    every = bytes(range(256))
    text = read_as(every, page).decode()
    assert len(text) == len(set(text)) == 256 and text[:0x80] == every[:0x80].decode()
    for byte, character in zip(every, text):
        try:
            assert character == bytes([byte]).decode(PYTHON_CODECS[page])
        except UnicodeDecodeError:
            assert byte in COMPLETED[page] and ord(character) == byte
    assert chunk_bytes(page, text.encode()) == every
    assert {b for b in every if ord(text[b]) == b and b >= 0x80} >= COMPLETED[page]


def test_the_writer_reads_8_bit_text_as_windows_1252_unless_another_page_makes_a_tenth_fewer_tokens():
    assert preferred_reading({WINDOWS_1252: 100, WINDOWS_1251: 91, KOI8_R: 95}) == WINDOWS_1252
    assert preferred_reading({WINDOWS_1252: 100, WINDOWS_1251: 90, KOI8_R: 80, IBM866: 80}) == KOI8_R  # first of equals
    assert preferred_reading({WINDOWS_1252: 100}) == WINDOWS_1252


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), page=st.sampled_from(OTHER_CODE_PAGES), dos=st.booleans())
def test_any_bytes_come_back_from_each_code_pages_form(data, page, dos):
    if dos:  # CR LF line ends only: the form's CRLF bit
        data = data.replace(b"\r", b"").replace(b"\n", b"\r\n") + b"\r\n"
    form = page | (CRLF if dos else 0)
    assert chunk_bytes(form, read_as(data, form)) == data


@settings(max_examples=200, deadline=None)
@given(chunk=st.binary(min_size=1, max_size=60), page=st.sampled_from(OTHER_CODE_PAGES), data=st.data())
def test_what_a_limit_asks_for_holds_the_limits_bytes_in_each_code_page(chunk, page, data):
    coded = read_as(chunk, page)
    limit = data.draw(st.integers(1, len(chunk)), label="limit")
    for cut in range(min(len(coded), coded_limit(page, limit)), len(coded) + 1):
        prefix = chunk_bytes(page, coded[:cut], final=cut == len(coded))
        assert chunk.startswith(prefix) and len(prefix) >= min(limit, len(chunk))


def test_the_codec_codes_8_bit_text_in_the_code_page_whose_form_makes_the_fewest_tokens():
    """IBM866 and ISO-8859-7 tie on the DOS capitals (the first of equals wins); without the flag (2.11) the same
    chunk stays bytes (windows-1252's form makes more tokens than it has bytes); the chunk decodes either way."""
    [dos] = pages_codec().encode_batch([DOS_CAPITALS])
    [latin] = pages_codec(pages=False).encode_batch([DOS_CAPITALS])
    assert (text_field(dos), text_field(latin)) == (IBM866 | CRLF, BYTES | CRLF)
    assert pages_codec().decode_batch([dos, latin], [len(DOS_CAPITALS)] * 2) == [DOS_CAPITALS] * 2
    # windows-1251's capitals read as windows-1252 are Latin-1 letters of two bytes as well: a tie keeps windows-1252
    capitals = "".join(f"{letter}\r\n" for letter in "АБВГДЕЖЗ").encode("cp1251")
    assert text_field(pages_codec().encode_batch([capitals])[0]) == WINDOWS_1252 | CRLF


# lines of ASCII with at most one byte above 0x7F each, CR LF: most chunks make no more tokens than bytes in any form
high_bytes = st.sampled_from([b"", b"\x80", b"\x98", b"\xae", b"\xb0", b"\xc4", b"\xe9", b"\xfe"])  # not 0xFF: as bytes, an escape
dos_lines = st.lists(st.tuples(st.sampled_from(["the ", "thing ", "", "a b "]), high_bytes).map(
    lambda t: t[0].encode() + t[1] + b"\r\n"), min_size=1, max_size=12).map(b"".join)


@settings(max_examples=20, deadline=None)
@given(page=st.sampled_from(OTHER_CODE_PAGES), chunks=st.lists(dos_lines, min_size=1, max_size=4), data=st.data())
def test_each_code_pages_form_round_trips_alone_in_batches_in_lockstep_and_with_limits(page, chunks, data):
    """The writer made to choose `page` for every 8-bit chunk: it codes it so where its form makes no more tokens than
    the chunk has bytes (SPEC 9.6), else as bytes."""
    with mock.patch("lzarchive.codecs.lm.preferred_reading", lambda tokens: page):
        payloads = round_trips_every_way(pages_codec, chunks, data)
    for payload, chunk in zip(payloads, chunks):
        fits = len(read_as(chunk, page | CRLF)) <= len(chunk)
        assert text_field(payload) == (page | CRLF if fits and not chunk.isascii() else CRLF)


def test_code_page_forms_need_the_flag_and_characters_their_page_has():
    """Forms 8-11 (12-15 with CR LF) are damage to a codec without lm_code_pages (2.11), which names the forms it
    knows; one whose tokens make a character its page lacks is damage naming both; form 16 is unknown; the codec
    without windows-1252's form cannot take the flag."""
    [payload] = pages_codec().encode_batch([DOS_CAPITALS])
    [refused] = pages_codec(pages=False).decode_batch([payload], [len(DOS_CAPITALS)])
    assert isinstance(refused, CodecError) and f"text form {IBM866 | CRLF} (0: bytes" in str(refused)
    assert "3: windows-1252, each + 4" in str(refused)
    [ascii_payload] = pages_codec().encode_batch([b"the thing \xe9\r\n" * 3])
    assert text_field(ascii_payload) == WINDOWS_1252 | CRLF  # é: two bytes in either form
    koi8 = ascii_payload[:3] + bytes([KOI8_R | CRLF]) + ascii_payload[4:]
    [foreign] = pages_codec().decode_batch([koi8], [len(b"the thing \xe9\r\n" * 3)])
    assert isinstance(foreign, CodecError) and "U+00E9, which no KOI8-R byte stands for (text form 13)" in str(foreign)
    [unknown] = pages_codec().decode_batch([ascii_payload[:3] + bytes([16]) + ascii_payload[4:]], [3])
    assert isinstance(unknown, CodecError)
    assert "8: windows-1251, 9: KOI8-R, 10: IBM866, 11: ISO-8859-7, each + 4 with CR LF as LF" in str(unknown)
    with pytest.raises(ValueError, match="need format 2.11's windows-1252 form"):
        LmCodec(tiny_model(), window=32, overlap=8, utf16_field=True, code_pages_field=True)


def test_pack_writes_code_page_forms_by_default_and_not_at_2_11(unsure_path, tmp_path):
    """The DOS capitals in IBM866's form by default, as bytes at 2.11; `cat` ranges and `verify --full`."""
    source = tmp_path / "notes"
    source.mkdir()
    (source / "capitals.txt").write_bytes(DOS_CAPITALS * 8)
    packed = pack_each_way(source, tmp_path, unsure_path, {"default": [], "2.11": ["--format", "2.11"]})
    flags = C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF | C.INCOMPAT_LM_WINDOWS_1252
    assert {name: (minor, flag & (flags | C.INCOMPAT_LM_CODE_PAGES)) for name, (minor, flag, _) in packed.items()} == \
        {"default": (12, flags | C.INCOMPAT_LM_CODE_PAGES), "2.11": (11, flags)}
    forms = {}
    for name in packed:
        with api.open_archive(str(tmp_path / f"{name}.lza")) as reader:
            codec = reader.codec(C.CodecId.LM)
            forms[name] = {codec._parse(reader.read_stored(i)[1], None).text for i in range(len(reader.index.chunks))}
    assert forms == {"default": {IBM866 | CRLF}, "2.11": {BYTES | CRLF}}
    archive = str(tmp_path / "default.lza")
    whole = (source / "capitals.txt").read_bytes()
    assert run_cli("cat", archive, "notes/capitals.txt", "--range", "101:1103").stdout == whole[101:1103]
    assert run_cli("verify", archive, "--full", "-q").exit_code == 0
