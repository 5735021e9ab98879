"""The text forms of lm chunks (SPEC.md 9.14): UTF-16 text coded as its UTF-8 form (format 2.9), CR LF line ends as
LF (2.10) and windows-1252 text as its UTF-8 form (2.11). Which chunks the writer converts, round trips of every form
alone, in batches, in lockstep, with limits and as a bias group's streams, payloads whose tokens make no UTF-8 or the
wrong text, the header's flags, the line cuts that keep UTF-16 chunks whole, and the CLI's formats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.archive.writer import ArchiveWriter
from lzarchive.codecs import CodecError, StoreCodec
from lzarchive.codecs.base import JOINED
from lzarchive.codecs.lm import LmCodec, _runs_in_one_form
from lzarchive.codecs.text import (BYTES, CRLF, ENCODINGS, UTF16BE, UTF16LE, WINDOWS_1252, WINDOWS_1252_HIGH, chunk_bytes,
                                   coded_form, coded_limit, legacy_text)
from lzarchive.errors import EXIT_INTEGRITY, ChunkCorrupt, CorruptArchive
from lzarchive.format import constants as C
from lzarchive.format.records import Header
from lzarchive.format.wire import read_varint, varint

from .adversarial.craft import craft2
from .conftest import entries_and_chunks, pack_each_way, round_trips_every_way, run_cli
from .tiny import greedy_text, tiny_model, unsure_model

pytestmark = pytest.mark.usefixtures("private_model_cache")

# text the tiny models' tables know (their tokens are bytes and a few English pieces), with what UTF-16 adds
SAMPLE = "the thing\n" + "naïve café — ünïcødé 🌍\r\n" + "the ending thing\n" * 3
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)


def utf16_codec(crlf: bool = False) -> LmCodec:
    """The codec with the text field alone (and its CRLF bit): a payload is model, W, O, text, N, then the range
    coder's bytes."""
    return LmCodec(tiny_model(), window=32, overlap=8, utf16_field=True, crlf_field=crlf)


def crlf_codec() -> LmCodec:
    return utf16_codec(crlf=True)


def text_field(payload: bytes) -> int:
    return read_varint(payload, 3)[0]


@settings(max_examples=200, deadline=None)
@given(text=texts, form=st.sampled_from(list(ENCODINGS)))
def test_utf16_text_whose_utf8_is_shorter_is_converted_and_converts_back(text, form):
    chunk = text.encode(ENCODINGS[form])
    chosen, coded = coded_form(chunk)
    assert chunk_bytes(chosen, coded) == chunk
    if len(text.encode()) < len(chunk):  # little-endian is tried first: a chunk shorter read both ways takes form 1
        assert chosen == form or chosen == UTF16LE
    if chosen == form:
        assert coded == text.encode()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=80) | st.text(max_size=60).map(str.encode))
def test_bytes_that_are_not_shorter_utf16_stay_bytes(data):
    """Only a character below U+0080 is shorter in UTF-8 than in UTF-16, and its UTF-16 holds a zero byte: bytes
    without one (ASCII and UTF-8 text) stay bytes, and so do odd lengths."""
    chosen, coded = coded_form(data)
    assert chunk_bytes(chosen, coded) == data
    if chosen == BYTES:
        assert coded == data
    if 0 not in data or len(data) % 2:
        assert chosen == BYTES


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_with_an_unpaired_surrogate_stays_bytes(encoding):
    text = SAMPLE.encode(encoding)
    assert coded_form(text)[0] != BYTES
    for lone in ("\ud800", "\udfff"):
        chunk = text + lone.encode(encoding, "surrogatepass") + text
        assert coded_form(chunk) == (BYTES, chunk)


@settings(max_examples=200, deadline=None)
@given(text=texts, form=st.sampled_from(list(ENCODINGS)), data=st.data())
def test_the_utf8_a_limit_asks_for_holds_the_limits_bytes_of_utf16(text, form, data):
    chunk, utf8 = text.encode(ENCODINGS[form]), text.encode()
    limit = data.draw(st.integers(1, len(chunk)), label="limit")
    for cut in range(min(len(utf8), coded_limit(form, limit)), len(utf8) + 1):  # a stop at the limit or after it
        prefix = chunk_bytes(form, utf8[:cut], final=cut == len(utf8))
        assert chunk.startswith(prefix) and len(prefix) >= min(limit, len(chunk))


@pytest.mark.parametrize("ill_formed", [b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"caf\xc3", b"\xff"])
def test_a_text_form_refuses_bytes_that_are_not_well_formed_utf8(ill_formed):
    for form in ENCODINGS:
        with pytest.raises(UnicodeDecodeError):
            chunk_bytes(form, b"ok " + ill_formed)
    assert chunk_bytes(BYTES, ill_formed) == ill_formed


@settings(max_examples=20, deadline=None)
@given(chunks=st.lists(st.tuples(texts, st.sampled_from([*ENCODINGS, BYTES])).map(
    lambda t: t[0].encode(ENCODINGS.get(t[1], "utf-8"))).filter(lambda c: not {0, 255} & set(coded_form(c)[1])),
    min_size=1, max_size=4), data=st.data())
def test_every_form_round_trips_alone_in_batches_in_lockstep_and_with_limits(chunks, data):
    """(Without bytes 0 and 255 in what the tokens make: the tiny model has no token for them, and the codec declines
    chunks of many escapes.)"""
    payloads = round_trips_every_way(utf16_codec, chunks, data)
    assert [text_field(p) for p in payloads] == [coded_form(c)[0] for c in chunks]


def test_utf16_chunks_code_as_their_utf8_form_does():
    """The same text costs the same bytes in either UTF-16 as in UTF-8 (only the text field differs); coded as they
    are, its UTF-16 bytes are half zeros, which the tiny model has no token for: too many escapes, the codec
    declines."""
    text = SAMPLE * 2
    [plain] = utf16_codec().encode_batch([text.encode()])
    coded = {form: utf16_codec().encode_batch([text.encode(name)])[0] for form, name in ENCODINGS.items()}
    for form, payload in coded.items():
        assert text_field(payload) == form and payload[4:] == plain[4:] and text_field(plain) == BYTES
    assert LmCodec(tiny_model(), window=32, overlap=8).encode_batch([text.encode("utf-16-le")]) == [None]


def test_a_bias_groups_streams_each_convert_and_a_run_splits_where_the_form_changes():
    """A UTF-16LE file in three chunks, then UTF-8 in the same run: one chunk of the three streams in form 1 (each
    converted on its own), the rest apart; read whole, from any stream and with limits."""
    codec = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                    bias_group=4, group_match=True, streams_field=True, utf16_field=True)
    text = (SAMPLE * 3).encode("utf-16-le")
    chunks = [text[:100], text[100:200], text[200:300], SAMPLE.encode()[:90]]
    payloads = codec.encode_batch(chunks, 0, [0, 1, 2, 3])
    parsed = [codec._parse(p, None) for p in payloads[:1]]
    assert parsed[0].text == UTF16LE and len(parsed[0].streams) == 3 and payloads[1:3] == [JOINED] * 2
    assert codec._parse(payloads[3], None).text == BYTES
    whole = b"".join(chunks[:3])
    assert codec.decode_batch([payloads[0], payloads[3]], [300, 90], None, [0, 3]) == [whole, chunks[3]]
    for limit in (1, 150, 299):
        [prefix] = codec.decode_batch([payloads[0]], [300], [limit], [0])
        assert len(prefix) >= limit and whole.startswith(prefix)


def test_a_payload_whose_tokens_make_no_utf8_or_another_length_is_refused():
    """A form 0 payload of bytes that are not UTF-8 relabelled form 1 fails as damage naming the byte; one of ASCII
    relabelled gives twice the bytes, which the chunk's size and check refuse; a form past 2 is refused at once."""
    codec = utf16_codec()
    [bad] = codec.encode_batch([b"the caf\xc3 the thing"])
    [ascii_text] = codec.encode_batch([b"the thing the thing"])
    assert text_field(bad) == text_field(ascii_text) == BYTES
    relabel = lambda payload, form: payload[:3] + bytes([form]) + payload[4:]  # noqa: E731
    [refused] = codec.decode_batch([relabel(bad, UTF16LE)], [20])
    assert isinstance(refused, CodecError) and "no UTF-8 text (text form 1)" in str(refused)
    assert "at byte 7" in str(refused)
    [doubled] = codec.decode_batch([relabel(ascii_text, UTF16BE)], [19])
    assert doubled == "the thing the thing".encode("utf-16-be")  # 38 bytes for a chunk of 19: the archive refuses it
    [unknown] = codec.decode_batch([relabel(ascii_text, 3)], [19])
    assert isinstance(unknown, CodecError) and "text form 3 (0: bytes, 1: UTF-16LE, 2: UTF-16BE)" in str(unknown)


def test_an_archive_whose_chunk_converts_to_other_bytes_is_damaged(unsure_path, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_bytes(SAMPLE.encode("utf-16-le"))
    archive = tmp_path / "a.lza"
    api.pack([str(source)], str(archive), codec="lm", model=str(unsure_path), chunk_size=4096)
    data = archive.read_bytes()
    with api.open_archive(str(archive)) as reader:
        assert [chunk.codec for chunk in reader.index.chunks] == [C.CodecId.LM]
        payload = reader.read_stored(0)[1]
        parsed = reader.codec(C.CodecId.LM)._parse(payload, None)
    field = len(payload) - len(parsed.data) - len(varint(parsed.count)) - 1  # the text field, then N
    assert parsed.text == UTF16LE and payload[field] == UTF16LE
    at = data.index(payload) + field
    archive.write_bytes(data[:at] + bytes([UTF16BE]) + data[at + 1:])  # the payload's own check is not a plaintext's
    result = run_cli("verify", str(archive), "--full")
    assert result.exit_code == EXIT_INTEGRITY and "a.txt" in result.stderr


def test_line_cuts_keep_every_chunk_of_utf16_text_whole(tmp_path):
    """With line cuts, a UTF-16LE file after a file of odd length, and a UTF-16BE one: every chunk of theirs starts at
    an even offset of its file and reads as UTF-16 (the chunk that opens with the odd file's bytes excepted)."""
    lines = "".join(f"line {i}: naïve café\n" for i in range(300))
    files = {"a-odd.txt": b"odd" * 7, "b-le.txt": lines.encode("utf-16-le"), "c-be.txt": lines.encode("utf-16-be")}
    with open(tmp_path / "t.lza", "wb") as out:
        writer = ArchiveWriter(out, [StoreCodec()], chunk_size=1024, line_cuts=True)
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            with open(tmp_path / name, "rb") as stream:
                writer.add_file(name, stream, mode=0o644, mtime_ns=0, size=len(data))
        writer.finish()
    with api.open_archive(str(tmp_path / "t.lza")) as reader:
        entries = {e.path: e for e in reader.entries}
    for name, encoding, line_end in (("b-le.txt", "utf-16-le", b"\n\0"), ("c-be.txt", "utf-16-be", b"\0\n")):
        refs, offset = entries[name].chunks, 0
        assert len(refs) > 5 and (name != "b-le.txt" or refs[0].offset == 21)  # after a-odd.txt's 21 bytes
        for ref in refs:
            piece = files[name][offset : offset + ref.length]
            assert ref.length % 2 == 0 and piece.decode(encoding), (name, offset)
            assert ref is refs[-1] or piece.endswith(line_end), "a cut after a line, not inside a character"
            offset += ref.length


def test_pack_writes_utf16_forms_by_default_and_not_at_2_8(unsure_path, tmp_path):
    source = tmp_path / "notes"
    source.mkdir()
    (source / "le.txt").write_bytes(("\ufeff" + SAMPLE * 8).encode("utf-16-le"))
    (source / "be.txt").write_bytes((SAMPLE * 8).encode("utf-16-be"))
    (source / "plain.txt").write_bytes((SAMPLE * 8).encode())
    packed = pack_each_way(source, tmp_path, unsure_path, {"default": [], "2.8": ["--format", "2.8"]},
                           "--chunk-size", "2048")
    assert {name: (minor, flags & C.INCOMPAT_LM_UTF16) for name, (minor, flags, _) in packed.items()} == \
        {"default": (12, C.INCOMPAT_LM_UTF16), "2.8": (8, 0)}
    assert packed["default"][2] < 0.8 * packed["2.8"][2]
    archive = str(tmp_path / "default.lza")
    with api.open_archive(archive) as reader:
        codec = reader.codec(C.CodecId.LM)
        forms = [codec._parse(reader.read_stored(i)[1], None).text for i, chunk in enumerate(reader.index.chunks)
                 if chunk.codec == C.CodecId.LM]
    assert sorted(set(forms)) == [BYTES, UTF16LE, UTF16BE]
    whole = (source / "le.txt").read_bytes()
    assert run_cli("cat", archive, "notes/le.txt", "--range", "2001:2103").stdout == whole[2001:2103]
    assert run_cli("verify", archive, "--full", "-q").exit_code == 0


# ------------------------------------------------------------------------------------------------ CR LF as LF (2.10)

# lines of text with every kind of line end, in UTF-8 or either UTF-16
crlf_lines = st.lists(st.tuples(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=8),
                                st.sampled_from(["\r\n", "\r\n", "\n", "\r", "\r\r\n", ""])), max_size=12)


@settings(max_examples=300, deadline=None)
@given(lines=crlf_lines, encoding=st.sampled_from(["utf-8", *ENCODINGS.values()]))
def test_text_whose_line_breaks_are_all_cr_lf_is_coded_with_lf_and_converts_back(lines, encoding):
    chunk = "".join(text + end for text, end in lines).encode(encoding)
    plain_form, text = coded_form(chunk)
    form, coded = coded_form(chunk, crlf=True)
    assert chunk_bytes(form, coded) == chunk and form & ~CRLF == plain_form
    assert bool(form & CRLF) == (text.count(b"\n") == text.count(b"\r\n") > 0)
    if form & CRLF:
        assert coded.count(b"\n") == text.count(b"\n") and len(coded) == len(text) - text.count(b"\n")
    else:
        assert coded == text


@settings(max_examples=200, deadline=None)
@given(lines=crlf_lines, form=st.sampled_from([BYTES, *ENCODINGS]), data=st.data())
def test_what_a_limit_asks_for_holds_the_limits_bytes_with_cr_lf_too(lines, form, data):
    text = "".join(text + end.replace("\r", "").replace("\n", "\r\n") for text, end in lines) + "\r\n"
    chunk = text.encode(ENCODINGS.get(form, "utf-8"))
    coded = text.replace("\r\n", "\n").encode()
    limit = data.draw(st.integers(1, len(chunk)), label="limit")
    for cut in range(min(len(coded), coded_limit(form | CRLF, limit)), len(coded) + 1):
        prefix = chunk_bytes(form | CRLF, coded[:cut], final=cut == len(coded))
        assert chunk.startswith(prefix) and len(prefix) >= min(limit, len(chunk))


@settings(max_examples=20, deadline=None)
@given(chunks=st.lists(st.tuples(crlf_lines, st.sampled_from([*ENCODINGS, BYTES])).map(
    lambda t: "".join(a + b for a, b in t[0]).encode(ENCODINGS.get(t[1], "utf-8"))).filter(
    lambda c: c and not {0, 255} & set(coded_form(c, crlf=True)[1])), min_size=1, max_size=4), data=st.data())
def test_cr_lf_forms_round_trip_alone_in_batches_in_lockstep_and_with_limits(chunks, data):
    payloads = round_trips_every_way(crlf_codec, chunks, data)
    assert [text_field(p) for p in payloads] == [coded_form(c, crlf=True)[0] for c in chunks]


def test_cr_lf_text_codes_as_its_lf_form_does_and_needs_the_flag_to_be_read():
    """Text with CR LF costs what the same text with LF costs (only the text field differs). A payload whose field
    sets the CRLF bit is damage to a codec without the lm_crlf flag, and so is a bit past it to one with the flag;
    the codec without the text field cannot take the flag."""
    text = SAMPLE.replace("\r\n", "\n") * 2
    [plain] = crlf_codec().encode_batch([text.encode()])
    for encoding, form in (("utf-8", BYTES), *((name, form) for form, name in ENCODINGS.items())):
        [payload] = crlf_codec().encode_batch([text.replace("\n", "\r\n").encode(encoding)])
        assert text_field(payload) == form | CRLF and payload[4:] == plain[4:] and text_field(plain) == BYTES
    [crlf] = crlf_codec().encode_batch([b"the thing\r\nthe thing\r\n"])
    assert text_field(crlf) == CRLF and crlf_codec().decode_batch([crlf], [22]) == [b"the thing\r\nthe thing\r\n"]
    [refused] = utf16_codec().decode_batch([crlf], [22])
    assert isinstance(refused, CodecError) and "text form 4 (0: bytes, 1: UTF-16LE, 2: UTF-16BE)" in str(refused)
    [unknown] = crlf_codec().decode_batch([crlf[:3] + bytes([CRLF | 3]) + crlf[4:]], [22])
    assert isinstance(unknown, CodecError) and "text form 7 (0: bytes, 1: UTF-16LE, 2: UTF-16BE, each + 4 with CR LF " \
        "as LF)" in str(unknown)
    with pytest.raises(ValueError, match="need format 2.9's text field"):
        LmCodec(tiny_model(), window=32, overlap=8, crlf_field=True)


@pytest.mark.parametrize("flags", [C.INCOMPAT_LM_CRLF, C.INCOMPAT_LM_WINDOWS_1252, C.INCOMPAT_LM_UTF16,
                                   C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF])
def test_a_header_without_lm_utf16_under_lm_crlf_is_refused_and_either_flag_alone_reads_exactly(flags, tiny_path,
                                                                                                tmp_path):
    """A CR LF chunk and a plain one, crafted under each set of the two flags: lm_crlf alone is refused at the header,
    and so is lm_windows1252 alone; lm_utf16 alone reads the plain chunk and refuses the other as damage; both read
    both."""
    from lzarchive.engine import registry

    registry.import_compiled(tiny_path)
    text = greedy_text(tiny_model(), 90, seed_token=2 + ord("t"))  # what the tiny model codes in fewer bytes
    files = {"crlf.txt": text + b"\r\n", "lf.txt": text + b"\n"}
    payloads = crlf_codec().encode_batch(list(files.values()))
    assert [text_field(p) for p in payloads] == [CRLF, BYTES]
    archive = tmp_path / "a.lza"
    header = Header(models=(crlf_codec().model_ref,), minor=10, incompat_flags=flags).to_wire()
    archive.write_bytes(craft2(*entries_and_chunks(files, payloads), header=header))
    if not flags & C.INCOMPAT_LM_UTF16:
        with pytest.raises(CorruptArchive, match="lm_crlf or lm_windows1252 without lm_utf16"):
            api.verify(str(archive))
        return
    read = {}
    for name in files:
        try:
            read[name] = b"".join(api.cat(str(archive), name))
        except ChunkCorrupt as exc:
            assert "text form 4" in str(exc) and name == "crlf.txt"
    assert read == (files if flags & C.INCOMPAT_LM_CRLF else {"lf.txt": files["lf.txt"]})


def test_pack_writes_cr_lf_forms_by_default_and_not_at_2_9(unsure_path, tmp_path):
    """At the default chunk size (8 KiB here, its line cuts ending each chunk of CR LF text after a whole line end): a
    file whose first 10,000 bytes end their lines in CR LF and the rest in LF (its run of two chunks splits where
    the form changes), CR LF text in UTF-8 and in UTF-16LE, and LF text, each in a chunk of its own."""
    source = tmp_path / "notes"
    source.mkdir()
    lf = SAMPLE.replace("\r\n", "\n") * 50
    crlf = lf.replace("\n", "\r\n")
    (source / "a-mixed.txt").write_bytes((crlf * 2 + lf).encode())
    (source / "dos.txt").write_bytes(crlf.encode())
    (source / "le.txt").write_bytes(("\ufeff" + crlf[: len(crlf) * 4 // 5]).encode("utf-16-le"))
    (source / "unix.txt").write_bytes(lf.encode())
    packed = pack_each_way(source, tmp_path, unsure_path, {"default": [], "2.9": ["--format", "2.9"]})
    assert {name: (minor, flags & (C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF)) for name, (minor, flags, _) in
            packed.items()} == {"default": (12, C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF), "2.9": (9, C.INCOMPAT_LM_UTF16)}
    forms = {}
    for name in packed:
        with api.open_archive(str(tmp_path / f"{name}.lza")) as reader:
            codec = reader.codec(C.CodecId.LM)
            forms[name] = [codec._parse(reader.read_stored(i)[1], None).text for i in range(len(reader.index.chunks))]
    assert forms == {"default": [CRLF, BYTES, CRLF, UTF16LE | CRLF, BYTES], "2.9": [BYTES, BYTES, UTF16LE, BYTES]}  # 2.9: a-mixed.txt one chunk of two streams
    archive = str(tmp_path / "default.lza")
    for name in ("a-mixed.txt", "dos.txt", "le.txt"):
        whole = (source / name).read_bytes()
        assert run_cli("cat", archive, f"notes/{name}", "--range", "1001:1203").stdout == whole[1001:1203]
    assert run_cli("verify", archive, "--full", "-q").exit_code == 0


# ------------------------------------------------------------------------------------- windows-1252 as UTF-8 (2.11)

FRENCH = "Le cœur a ses raisons que la raison ne connaît point ; on le sait en mille choses. « Déjà vu », dit-il — ça "\
         "coûte 5 € ™.\n"
# lines of a DOS file that the tiny models code in no more tokens than its bytes (SPEC 9.6: N <= raw_size): their
# tokens are bytes, so each UTF-8 form's byte more (é) is paid for by a CR less
DOS_LINES = "the café thing\r\nthe naïve thing\r\nthe thing\r\nthe façade thing\r\n"


def windows_codec(crlf: bool = True) -> LmCodec:
    return LmCodec(tiny_model(), window=32, overlap=8, utf16_field=True, crlf_field=crlf, windows_1252_field=True)


def windows_1252(text: str) -> bytes:
    """text in the code page as SPEC 9.14 tables it (Python's cp1252 lacks the five bytes that stay C1 controls)."""
    table = {0x80 + i: code for i, code in enumerate(WINDOWS_1252_HIGH)}
    back = {chr(code): bytes([byte]) for byte, code in table.items()} | {chr(b): bytes([b]) for b in range(256)
                                                                         if b not in table}
    return b"".join(back[c] for c in text)


def test_the_code_page_maps_every_byte_one_to_one_as_whatwg_and_python_have_it():
    """Python's cp1252 where it defines a byte, the C1 control of the byte's value for the five it leaves undefined
    (as WHATWG's index does), Latin-1 elsewhere: 256 characters, each back to its byte."""
    for byte, code in zip(range(0x80, 0xA0), WINDOWS_1252_HIGH):
        try:
            assert chr(code) == bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:
            assert code == byte and byte in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
    text = "".join(map(chr, [*range(0x80), *WINDOWS_1252_HIGH, *range(0xA0, 0x100)]))
    every = bytes(range(256))
    assert len(set(text)) == 256 and chunk_bytes(WINDOWS_1252, text.encode()) == every
    assert coded_form(every, windows_1252=True) == (BYTES, every)  # control bytes: not text
    printable = every[0x20:0x7F] + every[0x80:]
    assert coded_form(printable, windows_1252=True) == (WINDOWS_1252, (text[0x20:0x7F] + text[0x80:]).encode())
    assert FRENCH.encode("cp1252") == windows_1252(FRENCH)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=80).map(lambda t: t.encode("cp1252", "replace")))
def test_any_bytes_come_back_from_the_form_the_writer_chooses(data):
    form, coded = coded_form(data, crlf=True, windows_1252=True)
    assert chunk_bytes(form, coded) == data
    assert (form & ~CRLF == WINDOWS_1252) == legacy_text(data) and (form & ~CRLF != BYTES or coded == data
                                                                       or form & CRLF)


def test_legacy_text_is_8_bit_text_and_not_utf8_binary_or_ascii():
    latin = FRENCH.encode("cp1252") * 4
    utf8 = FRENCH.encode() * 4
    assert legacy_text(latin) and coded_form(latin, windows_1252=True) == (WINDOWS_1252, FRENCH.encode() * 4)
    assert coded_form(latin) == (BYTES, latin)  # only where the flag allows
    assert not legacy_text(utf8) and not legacy_text(b"plain ASCII text\n" * 20)
    assert not legacy_text(utf8[:-1] + b"\xe9")  # a stray byte in UTF-8 text
    assert not legacy_text(utf8[: utf8.index("€".encode()) + 1])  # UTF-8 cut inside a character
    assert not legacy_text(latin * 3 + b"\x00" * 3) and legacy_text(latin * 3 + b"\x1a")  # a DOS end of file mark
    assert legacy_text("Это текст на русском языке.\n".encode("cp1251") * 3)  # another code page: UTF-8 all the same
    binary = bytes((i * 167 + 13) % 256 for i in range(4000))
    assert not legacy_text(binary) and coded_form(binary, windows_1252=True)[0] == BYTES


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from("ab é\n\r€™œ—\x81\xff"), min_size=1, max_size=60), crlf=st.booleans(),
       data=st.data())
def test_what_a_limit_asks_for_holds_the_limits_windows_1252_bytes(text, crlf, data):
    if crlf:
        text = text.replace("\r", "").replace("\n", "\r\n") + "\r\n"
    chunk = windows_1252(text)
    form = WINDOWS_1252 | (CRLF if crlf else 0)
    coded = text.replace("\r\n", "\n").encode() if crlf else text.encode()
    limit = data.draw(st.integers(1, len(chunk)), label="limit")
    for cut in range(min(len(coded), coded_limit(form, limit)), len(coded) + 1):
        prefix = chunk_bytes(form, coded[:cut], final=cut == len(coded))
        assert chunk.startswith(prefix) and len(prefix) >= min(limit, len(chunk))


@pytest.mark.parametrize("foreign", ["\x80", "\x9f", "ā", "日", "🌍"])
def test_the_form_refuses_characters_no_byte_stands_for_and_utf8_that_is_not_well_formed(foreign):
    with pytest.raises(UnicodeEncodeError):
        chunk_bytes(WINDOWS_1252, f"café {foreign}".encode())
    with pytest.raises(UnicodeDecodeError):
        chunk_bytes(WINDOWS_1252, b"caf\xe9 ")


@settings(max_examples=20, deadline=None)
@given(chunks=st.lists(st.lists(st.sampled_from(["the ", "thing ", "é", "—", "€", "\r\n", "\n", "naïve "]),
                                min_size=1, max_size=30).map(lambda parts: windows_1252("".join(parts))),
                       min_size=1, max_size=4), data=st.data())
def test_windows_1252_forms_round_trip_alone_in_batches_in_lockstep_and_with_limits(chunks, data):
    """(In the form the writer chooses, where it makes no more tokens than the chunk has bytes, SPEC 9.6's bound: the
    tiny model's tokens of "é" are its two UTF-8 bytes.)"""
    payloads = round_trips_every_way(windows_codec, chunks, data)
    encoder = windows_codec().encoder
    fits = [len(encoder.encode(coded_form(c, True, True)[1])[0]) <= len(c) for c in chunks]
    assert [text_field(p) for p in payloads] == [coded_form(c, True, fit)[0] for c, fit in zip(chunks, fits)]
    assert WINDOWS_1252 not in [coded_form(c, True)[0] for c in chunks]


def test_windows_1252_text_codes_as_its_utf8_form_does_and_needs_the_flag_to_be_read():
    """The same text costs the same in windows-1252 with CR LF as in UTF-8 with LF (only the text field differs);
    without CR LF its UTF-8 form makes more of the tiny model's tokens than it has bytes, and it stays bytes. A form 3
    payload is damage to a codec without the lm_windows1252 flag; one whose tokens make a character no byte stands for
    is damage naming it; the codec without the text field cannot take the flag."""
    text = DOS_LINES * 2
    dos_chunk, unix_chunk = text.encode("cp1252"), text.replace("\r\n", "\n").encode("cp1252")
    [plain] = windows_codec().encode_batch([text.replace("\r\n", "\n").encode()])
    dos, unix = windows_codec().encode_batch([dos_chunk, unix_chunk])
    assert (text_field(plain), text_field(dos), text_field(unix)) == (BYTES, WINDOWS_1252 | CRLF, BYTES)
    assert coded_form(unix_chunk, True, True)[0] == WINDOWS_1252  # the form the writer would choose, but for N
    assert dos[4:] == plain[4:]
    assert windows_codec().decode_batch([dos, unix], [len(dos_chunk), len(unix_chunk)]) == [dos_chunk, unix_chunk]
    ascii_text = b"the thing the thing\n"
    [ascii_payload] = windows_codec().encode_batch([ascii_text])
    latin = ascii_payload[:3] + bytes([WINDOWS_1252]) + ascii_payload[4:]
    assert windows_codec().decode_batch([latin], [len(ascii_text)]) == [ascii_text]
    [refused] = crlf_codec().decode_batch([latin], [len(ascii_text)])
    assert isinstance(refused, CodecError) and "text form 3 (0: bytes, 1: UTF-16LE, 2: UTF-16BE, each" in str(refused)
    [foreign] = windows_codec().decode_batch([plain[:3] + bytes([WINDOWS_1252]) + windows_codec().encode_batch(
        ["the ā thing".encode()])[0][4:]], [12])
    assert isinstance(foreign, CodecError) and "U+0101, which no windows-1252 byte stands for" in str(foreign)
    [unknown] = windows_codec().decode_batch([latin[:3] + bytes([8]) + latin[4:]], [len(ascii_text)])
    assert isinstance(unknown, CodecError) and "3: windows-1252, each + 4 with CR LF as LF" in str(unknown)
    with pytest.raises(ValueError, match="needs format 2.9's text field"):
        LmCodec(tiny_model(), window=32, overlap=8, windows_1252_field=True)


def test_a_files_ascii_chunks_take_its_windows_1252_form_so_its_bias_group_holds():
    """A run of five chunks of a DOS file, Latin-1 but the first two and the fourth (pure ASCII), then a file of
    ASCII alone: the run's ASCII chunks take form 7 (their tokens are the same), the lone file keeps its form 4, and a
    chunk of LF ASCII does not join CR LF text. The codec codes the run as one chunk of five streams."""
    ascii_text, latin = b"the thing the thing\r\n" * 5, (DOS_LINES * 2).encode("cp1252")
    chunks = [ascii_text, ascii_text, latin, ascii_text, latin, ascii_text]
    runs = [0, 1, 2, 3, 4, 0]
    forms = [coded_form(c, True, True) for c in chunks]
    dos = WINDOWS_1252 | CRLF
    assert [f for f, _ in forms] == [CRLF, CRLF, dos, CRLF, dos, CRLF]
    assert [f for f, _ in _runs_in_one_form(forms, runs)] == [dos] * 5 + [CRLF]
    unix = [coded_form(c, True, True) for c in (b"the thing\n", latin)]
    assert [f for f, _ in _runs_in_one_form(unix, [0, 1])] == [BYTES, dos]
    codec = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                    bias_group=8, group_match=True, streams_field=True, utf16_field=True, crlf_field=True,
                    windows_1252_field=True)
    payloads = codec.encode_batch(chunks, 0, runs)
    parsed = codec._parse(payloads[0], None)
    assert parsed.text == dos and len(parsed.streams) == 5 and payloads[1:5] == [JOINED] * 4
    assert codec.decode_batch([payloads[0], payloads[5]], [sum(map(len, chunks[:5])), len(chunks[5])], None, [0, 5]) \
        == [b"".join(chunks[:5]), chunks[5]]


def test_pack_writes_windows_1252_forms_by_default_and_not_at_2_10(unsure_path, tmp_path):
    """Latin-1 text with CR LF, the same with LF, and in UTF-8: the first in form 7 by default, form 4 at 2.10; the
    second stays bytes (with the tiny models its UTF-8 form makes more tokens than it has bytes)."""
    source = tmp_path / "notes"
    source.mkdir()
    (source / "a-dos.txt").write_bytes((DOS_LINES * 140).encode("cp1252"))
    (source / "b-latin.txt").write_bytes((DOS_LINES * 140).replace("\r\n", "\n").encode("cp1252"))
    (source / "c-utf8.txt").write_bytes((DOS_LINES * 140).replace("\r\n", "\n").encode())
    packed = pack_each_way(source, tmp_path, unsure_path, {"default": [], "2.10": ["--format", "2.10"]})
    flags = C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF | C.INCOMPAT_LM_WINDOWS_1252
    assert {name: (minor, flag & flags) for name, (minor, flag, _) in packed.items()} == \
        {"default": (12, flags), "2.10": (10, C.INCOMPAT_LM_UTF16 | C.INCOMPAT_LM_CRLF)}
    forms = {}
    for name in packed:
        with api.open_archive(str(tmp_path / f"{name}.lza")) as reader:
            codec = reader.codec(C.CodecId.LM)
            forms[name] = [codec._parse(reader.read_stored(i)[1], None).text for i in range(len(reader.index.chunks))]
    assert forms == {"default": [WINDOWS_1252 | CRLF, BYTES], "2.10": [CRLF, BYTES]}  # a-dos.txt, then the others
    archive = str(tmp_path / "default.lza")
    for name in ("a-dos.txt", "b-latin.txt"):
        whole = (source / name).read_bytes()
        assert run_cli("cat", archive, f"notes/{name}", "--range", "101:1203").stdout == whole[101:1203]
    assert run_cli("verify", archive, "--full", "-q").exit_code == 0
