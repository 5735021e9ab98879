"""A bias group as one chunk of streams (format 2.7, SPEC 9.12): the streams code what the chunks of a 2.6 group
coded, byte for byte; a chunk of streams decodes the same in any batch, in any lockstep and with limits; the writer
stores a group as one chunk and places files in it; groups end before a chunk would pass its raw size limit; a
payload that breaks a rule of 9.12, or a damaged stream, is refused naming the stream. (Pack writes 2.7 by default:
test_lm_bias_group.)"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.archive.writer import ArchiveWriter, choose_payloads
from lzarchive.codecs import Codec, CodecError
from lzarchive.codecs.base import Joined
from lzarchive.codecs.lm import LmCodec
from lzarchive.format import constants as C
from lzarchive.format.wire import read_varint, varint

from .test_lm_bias import letters
from .test_lm_bias_group import a_file, fields, group_codec, stored
from .test_lm_match import log_text
from .tiny import tiny_model, unsure_model

pytestmark = pytest.mark.usefixtures("private_model_cache")


def streams_codec(bias_group: int = 4, group_match: bool = True) -> LmCodec:
    """Format 2.7's codec."""
    return group_codec(bias_group, group_match, streams_field=True)


def stream_fields(payload: bytes) -> tuple[int, list[int], list[int], int]:
    """(adaptive, token counts, lengths, where the streams' bytes start) of a payload of streams_codec (no span)."""
    adaptive, pos = read_varint(payload, 3)
    size, pos = read_varint(payload, pos)
    values = []
    for _ in range(2 * size - 1):
        value, pos = read_varint(payload, pos)
        values.append(value)
    return adaptive, values[:size], values[size:], pos


@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_a_chunk_of_streams_decodes_the_same_in_any_batch_in_any_lockstep_and_with_limits(data):
    """A file's run in groups of 3 becomes chunks of 3 streams (a last group of one: a chunk of its own); with chunks of
    other files, in any order and lockstep, and with limits: the chunks' exact bytes, or at least a limit's prefix."""
    length = data.draw(st.integers(2, 6), label="file chunks")
    chunks = a_file(length, data.draw(st.integers(60, 200), label="chunk size")) + [log_text(4, 3), letters(90, 9)]
    group_match = data.draw(st.booleans(), label="the group's match model")
    payloads = streams_codec(3, group_match).encode_batch(chunks, 0, list(range(length)) + [0, 0])
    groups = [min(3, length - start) for start in range(0, length, 3)]
    assert [isinstance(p, Joined) for p in payloads[:length]] == [i % 3 > 0 for i in range(length)]
    plaintexts, kept = stored(chunks, payloads)
    assert [len(stream_fields(p)[1]) for p, size in zip(kept, groups) if size > 1] == [s for s in groups if s > 1]
    sizes, decoder = [len(c) for c in plaintexts], streams_codec(group_match=group_match)
    everything = list(range(len(kept)))
    assert decoder.decode_batch(kept, sizes, None, everything) == plaintexts
    some = data.draw(st.permutations(everything), label="order")[: data.draw(st.integers(1, len(kept)), label="some")]
    decoder.batch_chunks = data.draw(st.integers(1, 3), label="lockstep")
    assert decoder.decode_batch([kept[k] for k in some], [sizes[k] for k in some]) == [plaintexts[k] for k in some]
    limits = [data.draw(st.integers(1, sizes[k]), label=f"limit {k}") for k in some]
    for k, limit, prefix in zip(some, limits, decoder.decode_batch([kept[k] for k in some], [sizes[k] for k in some],
                                                                   limits)):
        assert limit <= len(prefix) and plaintexts[k].startswith(prefix)


@pytest.mark.parametrize("match", [False, True])
def test_each_stream_holds_the_range_coder_bytes_of_its_chunk_in_a_2_6_group(match):
    """SPEC 9.12 codes stream s as 9.10 codes chunk F + s: with the same adaptive models, the bytes are the same."""
    chunks = a_file(4, 150, 12)
    options = dict(window=32, overlap=8, match_field=match, bias_field=True, group_field=True, bias_group=4,
                   group_match=match)
    grouped = LmCodec(unsure_model(), **options).encode_batch(chunks, 0, [0, 1, 2, 3])
    [payload, *joined] = LmCodec(unsure_model(), **options, streams_field=True).encode_batch(chunks, 0, [0, 1, 2, 3])
    assert all(isinstance(p, Joined) for p in joined)
    adaptive, counts, lengths, start = stream_fields(payload)
    assert {fields(p)[:2] for p in grouped} == {(adaptive, 4)}  # every chunk of the group chose what the streams did
    bodies = [LmCodec(unsure_model(), **options)._parse(p, None) for p in grouped]
    assert counts == [body.count for body in bodies]
    assert lengths == [len(body.data) for body in bodies[:-1]]
    assert payload[start:] == b"".join(body.data for body in bodies)


def test_a_chunk_of_streams_breaking_a_rule_is_refused_naming_the_stream():
    chunks = a_file(3, 150, 4)
    [payload, *_] = streams_codec().encode_batch(chunks, 0, [0, 1, 2])
    adaptive, counts, lengths, start = stream_fields(payload)
    size = sum(map(len, chunks))
    decoder = streams_codec()

    def refused(*fields_and_body: bytes, raw_size: int = size) -> str:
        [result] = decoder.decode_batch([b"".join(fields_and_body)], [raw_size])
        assert isinstance(result, CodecError)
        return str(result)

    head, body = payload[:4], payload[start:]
    streams = b"".join(map(varint, counts + lengths))
    assert decoder.decode_batch([head + varint(3) + streams + body], [size]) == [b"".join(chunks)]
    assert "a bias group of 1 streams (2 .. 16" in refused(head, varint(1), varint(counts[0]), body)
    assert "a bias group of 17 streams" in refused(head, varint(17), streams, body)
    assert "stream 1 of the chunk holds no tokens" in refused(head, varint(3), b"".join(
        map(varint, [counts[0], 0, counts[2]] + lengths)), body)
    assert "past the payload's end" in refused(head, varint(3), b"".join(
        map(varint, counts + [lengths[0], len(body)])), body)
    assert f"{sum(counts)} tokens for {sum(counts) - 1} bytes" in refused(head, varint(3), streams, body,
                                                                          raw_size=sum(counts) - 1)
    assert "truncated or oversized varint" in refused(head, varint(3), varint(counts[0]))
    primed = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                     primer_field=True, streams_field=True)
    [result] = primed.decode_batch([payload[:3] + varint(1) + varint(4) + payload[3:]], [size], None, [1],
                                   lambda chunk: (C.CodecId.LM, payload))
    assert "both a primer and a bias group" in str(result)
    # stream 1's bytes cut short: it reads past their end; stream 0, which needs the head it updates, fails too
    cut = head + varint(3) + b"".join(map(varint, counts + [lengths[0], 1])) + body[: lengths[0] + 1] + \
        body[lengths[0] + lengths[1] :]
    message = refused(cut)
    assert message.startswith("lm: stream 0 of the chunk: stream 1, which shares its bias head, cannot be decoded")


def test_groups_as_streams_end_before_a_chunk_would_pass_its_raw_size_limit():
    codec = streams_codec(4)
    big = C.MAX_CHUNK_RAW // 3
    # chunks 0-3 and 4-5 of the run: groups of 4 at most, the first ending after 3 (its fourth, alone, is no group)
    assert codec._bias_groups(range(6), range(6), [big] * 6, [0] * 6) == [[0, 1, 2], [4, 5]]
    assert codec._bias_groups(range(6), range(6), [big + 1] * 6, [0] * 6) == [[0, 1], [2, 3], [4, 5]]
    # 2.6: no limit
    assert group_codec(4)._bias_groups(range(6), range(6), [big + 1] * 6, [0] * 6) == [[0, 1, 2, 3], [4, 5]]


def test_the_writer_stores_a_group_as_one_chunk_and_places_files_in_it(unsure_path, tmp_path):
    """small.txt and the start of long.txt, then long.txt's next 3 chunks: one group (4 chunks of 150 bytes) in one
    chunk, then a group of 2, then other.txt alone. The writer's file slices are those a reader finds (files tile the
    chunks), and every file and range reads back."""
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    files = {"small.txt": letters(60, 1), "long.txt": letters(770, 2), "other.txt": letters(100, 3)}
    archive = tmp_path / "a.lza"
    codec = streams_codec(4)
    flags = C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_BIAS | C.INCOMPAT_LM_BIAS_GROUP | C.INCOMPAT_LM_GROUP_MATCH
    with open(archive, "wb") as out:
        writer = ArchiveWriter(out, [codec], chunk_size=150, batch_chunks=3, models=[codec.model_ref], minor=7,
                               incompat_flags=flags | C.INCOMPAT_LM_STREAMS)
        for name, data in files.items():
            writer.add_file(name, io.BytesIO(data), mode=0o644, mtime_ns=0, size=len(data))
        stats = writer.finish()
    assert stats.chunks == 3 and stats.per_codec["lm"].chunks == 3
    with api.open_archive(str(archive)) as reader:
        assert [c.raw_size for c in reader.index.chunks] == [600, 230, 100]
        assert [e.chunks for e in reader.entries] == [e.chunks for e in writer.entries]
        payloads = [reader.read_stored(i)[1] for i in range(3)]
    assert [len(stream_fields(p)[1]) for p in payloads[:2]] == [4, 2]
    for name, data in files.items():
        assert b"".join(api.cat(str(archive), name)) == data
    assert b"".join(api.cat(str(archive), "long.txt", start=400, end=700)) == files["long.txt"][400:700]
    assert api.verify(str(archive), full=True).ok


@pytest.mark.parametrize("version", ["2", "2.6"])
def test_a_group_coded_larger_than_its_plaintext_is_stored(tiny_path, tmp_path, version):
    """Bytes of 16 values, which the tiny model codes in more bytes than they hold, in a run of 9 chunks: the shared
    head beat heads of their own, so 2.5 and 2.6 wrote the group's payloads, larger than their chunks, in an archive
    that no reader accepts. A group now takes the shared head only where it is no larger than its plaintext (and
    smaller than its chunks stored); the writer refuses to write a payload larger than its plaintext."""
    import random

    from lzarchive.format.records import ChunkHeader

    rng = random.Random(16)
    (tmp_path / "src").mkdir()
    data = bytes(rng.randrange(16) + 120 for _ in range(4000))
    (tmp_path / "src" / "r.bin").write_bytes(data)
    archive = str(tmp_path / "a.lza")
    api.pack([str(tmp_path / "src")], archive, codec="auto", model=tiny_path, chunk_size=450, format_version=version)
    with api.open_archive(archive) as reader:
        assert all(chunk.stored_size <= chunk.raw_size for chunk in reader.index.chunks)
    assert b"".join(api.cat(archive, "src/r.bin")) == data
    with pytest.raises(ValueError, match="larger than its plaintext"):
        ChunkHeader.seal(C.CodecId.LM, b"ab", b"abc")


def write(path, codecs, data: bytes, chunk_size: int, streams: bool = True):
    """An archive of one file a.txt, written at format 2.7 (2.6 without streams) by these codecs."""
    models = [c.model_ref for c in codecs if c.codec_id == C.CodecId.LM]
    flags = C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_BIAS | C.INCOMPAT_LM_BIAS_GROUP | C.INCOMPAT_LM_GROUP_MATCH
    with open(path, "wb") as out:
        writer = ArchiveWriter(out, codecs, chunk_size=chunk_size, batch_chunks=8, models=models,
                               minor=7 if streams else 6, incompat_flags=flags | (C.INCOMPAT_LM_STREAMS if streams else 0))
        writer.add_file("a.txt", io.BytesIO(data), mode=0o644, mtime_ns=0, size=len(data))
        return writer.finish()


class Echo(Codec):
    """A codec whose payloads are as long as their chunks (or one byte shorter where the chunk starts with b"s")."""

    def __init__(self, codec_id: C.CodecId) -> None:
        self.codec_id, self.name = codec_id, codec_id.name.lower()

    def encode_batch(self, chunks, first_chunk=0, runs=None):
        return [bytes(c[1:] if c.startswith(b"s") else c) for c in chunks]

    def decode_batch(self, payloads, raw_sizes, limits=None, chunks=None, read_chunk=None):
        raise AssertionError


def test_on_a_tie_a_chunk_stays_stored_else_goes_to_the_codec_listed_first():
    chunks = [b"abc", b"short"]
    assert choose_payloads(chunks, [Echo(C.CodecId.ZSTD)]) == [(C.CodecId.STORE, b"abc"), (C.CodecId.ZSTD, b"hort")]
    assert choose_payloads(chunks, [Echo(C.CodecId.LM), Echo(C.CodecId.ZSTD)])[1] == (C.CodecId.LM, b"hort")
    assert choose_payloads(chunks, [Echo(C.CodecId.ZSTD), Echo(C.CodecId.LM)])[1] == (C.CodecId.ZSTD, b"hort")


def test_the_model_contends_with_zstd_only_where_zstd_leaves_more_than_a_64th():
    codec = streams_codec()
    assert codec.contends(b"x" * 128, 3) and not codec.contends(b"x" * 128, 2)  # 2 * 64 = 128: at most 2 to save


@pytest.mark.parametrize("codecs", ["auto", "lm"])
def test_auto_offers_the_model_no_chunk_that_zstd_codes_to_a_64th(codecs, unsure_path, tmp_path):
    """A file of letters with zeros in the middle, in chunks of 2,048 bytes: zstd codes the zeros in about 15 bytes,
    so with zstd beside it the model (a token per byte there: hours for megabytes of zeros with the default model) is
    offered the letters only, in two batches around the zeros; asked alone, it is offered every chunk. Every byte
    reads back."""
    from lzarchive.codecs.zstd import ZstdCodec
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    data = letters(4096, 5) + bytes(2048) + letters(4096, 6)
    codec = streams_codec(4)
    offered: list[list[bytes]] = []
    encode_batch = codec.encode_batch
    codec.encode_batch = lambda chunks, *args: offered.append(list(chunks)) or encode_batch(chunks, *args)
    archive = tmp_path / "a.lza"
    write(archive, [codec, ZstdCodec()] if codecs == "auto" else [codec], data, 2048)
    parts = [data[i : i + 2048] for i in range(0, len(data), 2048)]
    if codecs == "auto":
        assert offered == [parts[:2], parts[3:]]
        with api.open_archive(str(archive)) as reader:
            assert any(c.codec == C.CodecId.ZSTD and c.raw_size == 2048 and c.stored_size <= 2048 // 64
                       for c in reader.index.chunks)  # the zeros
    else:
        assert offered == [parts]
    assert b"".join(api.cat(str(archive), "a.txt")) == data
    assert b"".join(api.cat(str(archive), "a.txt", start=4000, end=6200)) == data[4000:6200]
    assert api.verify(str(archive), full=True).ok


@pytest.mark.parametrize("streams", [True, False])
def test_a_bias_group_is_kept_only_where_smaller_than_what_zstd_codes_its_chunks_in(streams, tiny_path, unsure_path,
                                                                                   tmp_path):
    """Two letters at random in two chunks of one file: zstd codes them in fewer bytes than the unsure model's group,
    so auto stores them with zstd (the group, whose chunks are kept together since they depend on each other, was kept
    whatever zstd made: an archive larger than zstd's alone). A run of the letter the tiny model expects: its group
    is smaller, and stays. Format 2.7 (a chunk of streams) and 2.6 (a group of chunks)."""
    from lzarchive.codecs.zstd import ZstdCodec
    from lzarchive.engine import registry

    for path in (tiny_path, unsure_path):
        registry.import_compiled(path)
    for model, data, chunk_size, winner in ((unsure_model(), letters(4096, 5), 2048, "zstd"),
                                            (tiny_model(), b"u" * 900, 450, "lm")):
        def grouping():
            return LmCodec(model, window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                           bias_group=4, group_match=True, streams_field=streams)

        alone = {"zstd": write(tmp_path / "zstd.lza", [ZstdCodec()], data, chunk_size).per_codec["zstd"],
                 "lm": write(tmp_path / "lm.lza", [grouping()], data, chunk_size, streams).per_codec["lm"]}
        loser = "lm" if winner == "zstd" else "zstd"
        assert alone[winner].stored_bytes < alone[loser].stored_bytes
        auto = write(tmp_path / "auto.lza", [grouping(), ZstdCodec()], data, chunk_size, streams)
        assert list(auto.per_codec) == [winner] and auto.per_codec[winner] == alone[winner]
        assert b"".join(api.cat(str(tmp_path / "auto.lza"), "a.txt")) == data
