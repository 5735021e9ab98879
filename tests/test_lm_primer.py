"""The lm codec's primer (format 2.1, SPEC 9.7) with the tiny model: chunks whose windows start from the first tokens of
an earlier lm chunk round-trip alone, together and in any lockstep grouping; the writer keeps the primer's chunk with
the lm codec; payloads that name an impossible primer, and archives whose primer chunk is damaged, are refused with
the chunk and the reason, and nothing is written for the files that depend on it."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.archive.writer import choose_payloads
from lzarchive.codecs import Codec, CodecError, ZstdCodec
from lzarchive.codecs.lm import LmCodec
from lzarchive.errors import EXIT_INTEGRITY, EXIT_USAGE
from lzarchive.format import constants as C
from lzarchive.format.wire import varint

from .conftest import reader_of, run_cli
from .tiny import greedy_text, tiny_model

pytestmark = pytest.mark.usefixtures("private_model_cache")


def primed_codec(primer: int = 24, **options) -> LmCodec:
    return LmCodec(tiny_model(), window=32, overlap=8, primer_field=True, primer_tokens=primer, **options)


def texts(count: int, size: int = 70) -> list[bytes]:
    return [greedy_text(tiny_model(), size + 9 * i, seed_token=2 + ord("a") + i) + b"\xff." for i in range(count)]


@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_primed_chunks_round_trip_alone_together_and_in_any_grouping(data):
    """Tables are equal whether a chunk decodes alone, among others or in groups of any size, and whether its windows'
    prefix was computed once and copied or the chunk comes from a batch split across encode calls."""
    chunks = texts(data.draw(st.integers(2, 5), label="chunks"))
    codec = primed_codec(data.draw(st.integers(1, 40), label="primer"))
    split = data.draw(st.integers(1, len(chunks)), label="first encode call")
    payloads = codec.encode_batch(chunks[:split]) + codec.encode_batch(chunks[split:], first_chunk=split)
    assert codec.primer is not None and codec.primer.chunk == 0 and codec.keeps(0, payloads[0]) and not codec.keeps(1, payloads[1])
    assert all(p is not None for p in payloads)
    sizes, read = [len(c) for c in chunks], reader_of(payloads)
    decoder = primed_codec(0)
    assert decoder.decode_batch(payloads, sizes, None, list(range(len(chunks))), read) == chunks
    for i in range(len(chunks)):
        assert decoder.decode_batch([payloads[i]], [sizes[i]], None, [i], read) == [chunks[i]]
    decoder.batch_chunks = data.draw(st.integers(1, 3), label="lockstep")
    assert decoder.decode_batch(payloads, sizes, None, list(range(len(chunks))), read) == chunks
    limits = [data.draw(st.integers(1, size), label=f"limit {i}") for i, size in enumerate(sizes)]
    for chunk, limit, prefix in zip(chunks, limits, decoder.decode_batch(payloads, sizes, limits, list(range(len(chunks))), read)):
        assert limit <= len(prefix) and chunk.startswith(prefix)


def test_a_new_archive_chooses_its_own_primer():
    codec = primed_codec()
    first = codec.encode_batch(texts(2))
    second_texts = texts(3, size=90)
    second = codec.encode_batch(second_texts)  # numbered from 0 again: another archive
    assert codec.primer.chunk == 0 and list(codec.primer.tokens) == codec.encoder.encode(second_texts[0])[0][:24]
    assert primed_codec(0).decode_batch(second, [len(c) for c in second_texts], None, [0, 1, 2], reader_of(second)) == second_texts
    assert first != second[:2]


def test_the_primer_source_is_the_first_chunk_the_lm_codec_can_keep():
    """Binary chunks (declined) and chunks whose lm payload would be larger than the chunk are passed over."""
    codec = primed_codec()
    chunks = [b"\xff\x00" * 50, b"\x01", *texts(2)]  # declined (all escapes); accepted but 1 byte (its payload is longer)
    payloads = codec.encode_batch(chunks, first_chunk=7)
    assert payloads[0] is None and len(payloads[1]) > 1
    assert codec.primer.chunk == 9 and codec.keeps(9, payloads[2])


class Padded(Codec):
    """Payloads longer than zstd's on repetitive text, and other payloads depend on chunk 0's (as an lm primer's do)."""

    codec_id, name = C.CodecId.LM, "lm"

    def encode_batch(self, chunks, first_chunk=0, runs=None):
        return [bytes(c[:8]) * 4 for c in chunks]

    def keeps(self, chunk, payload):
        return chunk == 0

    def decode_batch(self, payloads, raw_sizes, limits=None, chunks=None, read_chunk=None):
        raise NotImplementedError


@pytest.mark.parametrize("order", [1, -1])
def test_the_writer_keeps_a_chunk_that_other_payloads_depend_on_with_their_codec(order):
    repetitive = b"the " * 60  # zstd: 20 bytes, Padded: 32
    best = choose_payloads([repetitive, repetitive], [ZstdCodec(), Padded()][::order], first_chunk=0)
    assert [codec for codec, _ in best] == [C.CodecId.LM, C.CodecId.ZSTD]


def header_of(payload: bytes) -> tuple[list[int], bytes]:
    """The varints before the range coder's bytes of a primed payload: model, W, O, primer chunk + 1, P, N."""
    from lzarchive.format.wire import read_varint
    fields, pos = [], 0
    for _ in range(6):
        value, pos = read_varint(payload, pos)
        fields.append(value)
    return fields, payload[pos:]


def with_fields(fields: list[int], rest: bytes) -> bytes:
    return b"".join(map(varint, fields)) + rest


@pytest.mark.parametrize("chunk, field, value, reason", [
    (1, 3, 3, "after this chunk"),  # chunk 1 names chunk 2
    (1, 4, 0, "does not fit"),  # a primer of 0 tokens
    (1, 4, 512, "does not fit"),  # 512 + W 32 > the tiny model's 512 positions
    (1, 4, 20, "does not hold a primer of 20 tokens"),  # chunk 0 holds one of 24
    (0, 4, 400, "fewer than the primer's"),  # chunk 0 claims more primer tokens than it holds
])
def test_impossible_primers_are_refused(chunk, field, value, reason):
    chunks = texts(3)
    payloads = primed_codec().encode_batch(chunks)
    assert [header_of(p)[0][3:5] for p in payloads] == [[1, 24]] * 3  # chunk 0 names itself: it holds the primer
    fields, rest = header_of(payloads[chunk])
    fields[field] = value
    damaged = list(payloads)
    damaged[chunk] = with_fields(fields, rest)
    results = primed_codec(0).decode_batch(damaged, [len(c) for c in chunks], None, [0, 1, 2], reader_of(damaged))
    assert isinstance(results[chunk], CodecError) and reason in str(results[chunk])
    assert results[2] == chunks[2] if chunk == 1 else isinstance(results[2], CodecError)


def test_a_primer_in_a_chunk_that_names_another_or_of_another_codec_is_refused():
    chunks = texts(3)
    payloads = primed_codec().encode_batch(chunks)
    fields, rest = header_of(payloads[2])
    chained = with_fields(fields[:3] + [2] + fields[4:], rest)  # chunk 1 names chunk 0, not itself
    decoder = primed_codec(0)
    result = decoder.decode_batch([chained], [len(chunks[2])], None, [2], reader_of(payloads))[0]
    assert isinstance(result, CodecError) and "does not hold a primer" in str(result)
    result = decoder.decode_batch([payloads[2]], [len(chunks[2])], None, [2], lambda c: (C.CodecId.ZSTD, b""))[0]
    assert isinstance(result, CodecError) and "not an lm chunk" in str(result)
    result = decoder.decode_batch([payloads[2]], [len(chunks[2])])[0]
    assert isinstance(result, CodecError) and "without its archive" in str(result)


def test_without_the_primer_field_payloads_read_as_format_2_0():
    """Payloads of formats 1 and 2.0 have no primer field: a 2.1 reader of them would misread N."""
    chunks = texts(2)
    old = LmCodec(tiny_model(), window=32, overlap=8).encode_batch(chunks)
    assert LmCodec(tiny_model(), window=32, overlap=8).decode_batch(old, [len(c) for c in chunks]) == chunks
    with pytest.raises(ValueError, match="primer"):
        LmCodec(tiny_model(), window=32, overlap=8, primer_tokens=8)


def test_a_primer_longer_than_the_positions_leave_is_a_usage_error(tiny_path, tmp_path):
    """A primer and a window share the model's positions (512 for the tiny model): a longer primer was cut to fit
    without a word; now the bound is named, before anything is written."""
    (tmp_path / "t.txt").write_bytes(texts(1)[0])
    for primer, window, usable in ((481, ["--window", "32"], 480), (10_000, ["--window", "500"], 12),
                                   (10_000, [], 510)):  # the default window is what the primer leaves
        result = run_cli("pack", str(tmp_path / "t.txt"), "-o", str(tmp_path / "p.lza"), "--codec", "lm", "--model",
                         tiny_path, *window, "--primer", str(primer))
        assert result.exit_code == EXIT_USAGE and not (tmp_path / "p.lza").exists()
        assert f"lm primer {primer}: choose 0 .. {usable} tokens" in result.stderr
    assert run_cli("pack", str(tmp_path / "t.txt"), "-o", str(tmp_path / "p.lza"), "--codec", "lm", "--model", tiny_path,
                   "--window", "32", "--primer", "480", "-q").exit_code == 0


@pytest.fixture
def primed_archive(tiny_path, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i, text in enumerate(texts(4, size=120)):
        (src / f"part{i}.txt").write_bytes(text)
    archive = tmp_path / "primed.lza"
    api.pack([str(src)], str(archive), codec="lm", model=tiny_path, chunk_size=128, window=32, primer=20, match=False,
             span=0, bias=False, format_version="2.8")
    return src, archive


def test_pack_writes_2_1_with_a_primer_and_reads_back(primed_archive, tmp_path):
    src, archive = primed_archive
    assert api.info(str(archive)).version == "2.1"
    with api.open_archive(str(archive)) as reader:
        lm_chunks = [i for i, c in enumerate(reader.index.chunks) if c.codec == C.CodecId.LM]
        primed = [i for i in lm_chunks if header_of(reader.read_stored(i)[1])[0][3:5] == [lm_chunks[0] + 1, 20]]
    assert len(lm_chunks) >= 3 and primed == lm_chunks
    api.extract(str(archive), str(tmp_path / "out"))
    for path in sorted(src.iterdir()):
        assert (tmp_path / "out" / "src" / path.name).read_bytes() == path.read_bytes()
        assert b"".join(api.cat(str(archive), f"src/{path.name}")) == path.read_bytes()


def test_damage_to_the_primer_chunk_is_reported_for_every_chunk_that_needs_it(primed_archive, tmp_path):
    """verify names the damaged chunk and each chunk whose primer it holds; extract writes none of their files."""
    _, archive = primed_archive
    with api.open_archive(str(archive)) as reader:
        first = reader.index.chunks[0]
        flip_at = first.offset + first.header_size + first.stored_size - 1
        dependent = [i for i, c in enumerate(reader.index.chunks) if i and c.codec == C.CodecId.LM]
    data = bytearray(archive.read_bytes())
    data[flip_at] ^= 0x20
    archive.write_bytes(bytes(data))
    result = run_cli("verify", str(archive))
    assert result.exit_code == EXIT_INTEGRITY and "its primer" in result.stdout.decode() + result.stderr
    report = api.verify(str(archive), full=True)
    reasons = {p.chunk: p.reason for p in report.problems}
    assert "stored-bytes checksum" in reasons[0]
    assert all("its primer, the first 20 tokens of chunk 0, cannot be read" in reasons[i] for i in dependent)
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))
    assert result.exit_code == EXIT_INTEGRITY
    assert not os.path.exists(tmp_path / "out" / "src" / "part3.txt")


def test_the_primer_needs_format_2_1(tiny_path, tmp_path):
    (tmp_path / "a.txt").write_bytes(texts(1)[0])
    for version in ("1", "2.0"):
        result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(tmp_path / f"{version}.lza"), "--model", tiny_path,
                         "--format", version, "--primer", "8")
        assert result.exit_code == EXIT_USAGE and "primer" in result.stderr
        result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(tmp_path / f"{version}.lza"), "--model", tiny_path,
                         "--format", version)
        assert result.exit_code == 0 and api.info(str(tmp_path / f"{version}.lza")).version == ("1.1" if version == "1" else "2.0")
    result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(tmp_path / "x.lza"), "--format", "3")
    assert result.exit_code == EXIT_USAGE and "2.1" in result.stderr
