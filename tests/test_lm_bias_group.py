"""Bias groups (format 2.5, SPEC 9.10): chunks of one file sharing one bias head, and (format 2.6, SPEC 9.11) guessing
repeats from each other's tokens. A group decodes the same in any batch, alone (its other chunks read from the
archive), in any lockstep grouping and with limits; the torch operations give the compiled loops' payloads; groups
follow the writer's runs (cut every bias_group chunks from a run's first, and where the codec declines a chunk) and
take the shared head only where it is smaller; the writer never ends a batch inside a group, nor do a reader's
batches or Ray's parts; a payload that breaks a rule of 9.10, or a damaged chunk of its group, is refused naming the
chunk; the group's match finder guesses as SPEC 9.11 says; pack writes 2.7 by default (a group as one chunk of
streams, SPEC 9.12: test_lm_streams), 2.6, 2.5 and 2.4 on request."""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.archive.writer import ArchiveWriter
from lzarchive.codecs import Codec, CodecError
from lzarchive.codecs.base import Joined
from lzarchive.codecs.distributed import _balanced, _runs
from lzarchive.codecs.lm import ADAPTIVE_BIAS, ADAPTIVE_CACHE, LmCodec
from lzarchive.codecs.match import CANDIDATES, MAX_MATCH, group_guesses, guesses
from lzarchive.engine.ops import TorchOps
from lzarchive.errors import EXIT_INTEGRITY, EXIT_USAGE
from lzarchive.format import constants as C
from lzarchive.format.records import Header
from lzarchive.format.wire import read_varint, varint

from .adversarial.craft import craft2, file_row
from .conftest import pack_each_way, reader_of, run_cli
from .test_lm_bias import letters
from .test_lm_match import log_text
from .tiny import greedy_text, unsure_model

pytestmark = pytest.mark.usefixtures("private_model_cache")

FLAGS = C.INCOMPAT_LM_MATCH | C.INCOMPAT_LM_BIAS | C.INCOMPAT_LM_BIAS_GROUP | C.INCOMPAT_LM_GROUP_MATCH  # format 2.6


def group_codec(bias_group: int = 4, group_match: bool = True, **options) -> LmCodec:
    """Format 2.6's codec (2.5's without group_match)."""
    return LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                   bias_group=bias_group, group_match=group_match, **options)


def fields(payload: bytes) -> tuple[int, int, int | None]:
    """(adaptive, G, F) of a payload written by group_codec: model, window, overlap, then the adaptive field."""
    adaptive, pos = read_varint(payload, 3)
    if not adaptive & ADAPTIVE_BIAS:
        return adaptive, 0, None
    size, pos = read_varint(payload, pos)
    return adaptive, size, read_varint(payload, pos)[0] if size else None


def with_fields(payload: bytes, size: int, first: int | None = None, window: int | None = None) -> bytes:
    """The payload with its bias group field (and window) replaced."""
    adaptive, pos = read_varint(payload, 3)
    old, pos = read_varint(payload, pos)
    if old:
        pos = read_varint(payload, pos)[1]
    head = payload[:1] + (varint(window) if window else payload[1:2]) + payload[2:3] + varint(adaptive)
    return head + varint(size) + (varint(first) if size else b"") + payload[pos:]


def stored(chunks: list[bytes], payloads: list) -> tuple[list[bytes], list[bytes]]:
    """What a writer stores: each payload, with the plaintexts of the chunks joined to it (format 2.7's streams)."""
    plaintexts, kept = [], []
    for chunk, payload in zip(chunks, payloads):
        if isinstance(payload, Joined):
            plaintexts[-1] += chunk
        else:
            plaintexts.append(chunk)
            kept.append(payload)
    return plaintexts, kept


def a_file(chunks: int, size: int = 160, seed: int = 1) -> list[bytes]:
    text = letters(chunks * size, seed, "xyz")
    return [text[i : i + size] for i in range(0, len(text), size)]


@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_a_group_decodes_the_same_in_any_batch_alone_in_any_lockstep_and_with_limits(data):
    """The shared head's state at each step is every chunk's updates summed: the encoder's tables (positions in
    order, chunks as rows) equal the decoder's however the chunks are batched; a chunk asked alone decodes its
    group (read from the archive) as far as it needs. The same with each chunk's own match model (2.5) or the
    group's (2.6)."""
    length = data.draw(st.integers(2, 6), label="file chunks")
    chunks = a_file(length, data.draw(st.integers(60, 200), label="chunk size")) + [log_text(4, 3), letters(90, 9)]
    runs = list(range(length)) + [0, 0]
    group_match = data.draw(st.booleans(), label="the group's match model")
    payloads = group_codec(3, group_match).encode_batch(chunks, 0, runs)
    assert [fields(p)[1:] for p in payloads[:length]] == [(min(3, length - 3 * (i // 3)), 3 * (i // 3))
                                                          if length - 3 * (i // 3) > 1 else (0, None)
                                                          for i in range(length)]
    sizes, read_chunk, decoder = [len(c) for c in chunks], reader_of(payloads), group_codec(group_match=group_match)
    everything = list(range(len(chunks)))
    assert decoder.decode_batch(payloads, sizes, None, everything, read_chunk) == chunks
    for k in everything:
        assert decoder.decode_batch([payloads[k]], [sizes[k]], None, [k], read_chunk) == [chunks[k]]
    some = data.draw(st.permutations(everything), label="order")[: data.draw(st.integers(1, len(chunks)), label="some")]
    decoder.batch_chunks = data.draw(st.integers(1, 3), label="lockstep")
    assert decoder.decode_batch([payloads[k] for k in some], [sizes[k] for k in some], None, some,
                                read_chunk) == [chunks[k] for k in some]
    limits = [data.draw(st.integers(1, sizes[k]), label=f"limit {k}") for k in some]
    for k, limit, prefix in zip(some, limits, decoder.decode_batch([payloads[k] for k in some], [sizes[k] for k in some],
                                                                   limits, some, read_chunk)):
        assert limit <= len(prefix) and chunks[k].startswith(prefix)


def spec_guesses(chunks: list[list[int]]) -> list[list[tuple[int, int] | None]]:
    """SPEC 9.11's guess read literally: every occurrence (m, j), 2 <= j < min(i, N_m), of chunk k's last two tokens,
    latest (larger j, then larger m) first; the first 256; the longest match, the first among equals."""
    found: list[list[tuple[int, int] | None]] = []
    for k, tokens in enumerate(chunks):
        found.append([])
        for i in range(len(tokens)):
            occurrences = sorted(((j, m) for m, other in enumerate(chunks) for j in range(2, min(i, len(other)))
                                  if i >= 2 and other[j - 2 : j] == tokens[i - 2 : i]), reverse=True)[:CANDIDATES]
            best = None
            for j, m in occurrences:
                n = max(n for n in range(2, min(MAX_MATCH, j) + 1) if chunks[m][j - n : j] == tokens[i - n : i])
                if best is None or n > best[1]:
                    best = (chunks[m][j], n)
            found[k].append(best)
    return found


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(st.lists(st.integers(0, 2), max_size=40), min_size=1, max_size=4))
def test_the_group_match_model_guesses_as_spec_9_11_says(chunks):
    """A group's match finder: what each chunk's guess sees before step i is every chunk's tokens before step i; a
    group of one guesses as a chunk's own match model (SPEC 9.8)."""
    assert group_guesses(chunks) == spec_guesses(chunks)
    assert [group_guesses([tokens])[0] for tokens in chunks] == [guesses(tokens) for tokens in chunks]


def test_the_group_match_model_takes_the_latest_256_occurrences():
    draw = random.Random(3)
    chunks = [[draw.randrange(2) for _ in range(600)] for _ in range(3)]  # each pair of tokens recurs ~450 times
    assert group_guesses(chunks) == spec_guesses(chunks)


def test_groups_follow_runs_cut_every_bias_group_chunks_and_at_declined_chunks():
    """Groups of 4 counted from each run's first chunk (a batch may start inside a run); a chunk the codec declines
    (bytes it would escape) ends a group; a file that fits in one chunk is in none; the shared head is smaller."""
    chunks = a_file(8, 120) + [letters(120, 5)]
    chunks[5] = b"\xff" * 120  # declined: all escapes
    runs = [1, 2, 3, 4, 5, 6, 7, 8, 0]  # a run that began a chunk before this batch
    payloads = group_codec(4).encode_batch(chunks, 10, runs)
    assert payloads[5] is None
    # places 1-3 | 4-7, less 6: 4-5 and 7 alone | 8 alone | another run
    assert [fields(p)[1:] for i, p in enumerate(payloads) if i != 5] == [(3, 10)] * 3 + [(2, 13)] * 2 + [(0, None)] * 3
    assert all(fields(p)[0] & ADAPTIVE_BIAS for p in payloads if p is not None)
    alone = group_codec(4).encode_batch(chunks, 10)  # no runs: every chunk its own head
    assert all(fields(p)[1] == 0 for p in alone if p is not None)
    assert sum(len(p) for p in payloads[:5]) < sum(len(p) for p in alone[:5])
    decoder = group_codec()
    every = payloads[:5] + [b"\0"] + payloads[6:]
    assert decoder.decode_batch(payloads[:5], [120] * 5, None, [10, 11, 12, 13, 14],
                                lambda c: (C.CodecId.LM, every[c - 10])) == chunks[:5]


def test_a_group_takes_the_shared_head_only_where_it_is_smaller():
    """Text the model already knows gains little from a shared head: the group's chunks are coded as without a bias
    head (not with heads of their own, which the writer does not try for a group's chunks)."""
    chunks = [greedy_text(unsure_model(), 40, seed_token=3 + i) for i in range(3)]
    payloads = group_codec().encode_batch(chunks, 0, [0, 1, 2])
    assert all(fields(p)[1] == 0 for p in payloads)
    assert payloads == LmCodec(unsure_model(), window=32, overlap=8, match_field=True).encode_batch(chunks)


def test_the_torch_operations_code_and_decode_the_same_groups(monkeypatch):
    """Rows named more than once add their updates, in torch's index_add_ as in the compiled loop over columns."""
    bias = torch.randint(-2**40, 2**40, (3, 1000), dtype=torch.int64)
    freq = torch.randint(1, 2**20, (5, 1000), dtype=torch.int64)
    rows, symbols = np.array([2, 0, 2, 2, 1]), np.array([7, 7, 999, 7, 0])
    ours = bias.clone()
    group_codec().engine.ops.update_bias(ours, rows, freq, symbols, 858_993_459, 32)
    expected = bias.clone()
    for row, f, symbol in zip(rows, freq, symbols):
        expected[row] -= (f * 858_993_459) >> 32
        expected[row, symbol] += 858_993_459
    assert torch.equal(ours, expected)
    theirs = bias.clone()
    TorchOps.update_bias(None, theirs, rows, freq, symbols, 858_993_459, 32)
    assert torch.equal(theirs, expected)
    chunks = a_file(4, 150, 3)
    payloads = group_codec().encode_batch(chunks, 0, [0, 1, 2, 3])
    assert all(fields(p)[1] == 4 for p in payloads)
    monkeypatch.setenv("LZA_KERNELS", "torch")
    codec = group_codec()
    assert type(codec.engine.ops) is TorchOps
    assert codec.encode_batch(chunks, 0, [0, 1, 2, 3]) == payloads
    assert codec.decode_batch(payloads[1:2], [150], None, [1], reader_of(payloads)) == chunks[1:2]


def test_a_payload_breaking_a_group_rule_is_refused_naming_the_chunk():
    chunks = a_file(3, 150, 4) + [letters(150, 6)]
    payloads = group_codec().encode_batch(chunks, 0, [0, 1, 2, 0])
    assert [fields(p)[1:] for p in payloads] == [(3, 0)] * 3 + [(0, None)]
    decoder, sizes = group_codec(), [len(c) for c in chunks]

    def refused(payload: bytes, others: list[bytes] | None = None, chunk: int = 1) -> str:
        archive = list(payloads) if others is None else others
        archive[chunk] = payload
        [result] = decoder.decode_batch([payload], [sizes[chunk]], None, [chunk], reader_of(archive))
        assert isinstance(result, CodecError)
        return str(result)

    assert "a bias group of 1 chunks (2 .. 16" in refused(with_fields(payloads[1], 1, 0))
    assert "a bias group of 17 chunks" in refused(with_fields(payloads[1], 17, 0))
    assert "chunks 2 .. 4, does not hold it" in refused(with_fields(payloads[1], 3, 2))
    assert "chunk 0 does not name the same group" in refused(with_fields(payloads[1], 4, 0))
    short = [with_fields(p, 4, 0) for p in payloads[:3]]  # a group of 4 in an archive of 3 chunks
    assert "chunk 3: there is no chunk 3" in refused(short[1], short)
    assert "chunk 2 has another window" in refused(payloads[1], [*payloads[:2], with_fields(payloads[2], 3, 0, 31),
                                                                 payloads[3]])
    assert "chunk 0: a bias group of 17" in refused(payloads[1], [with_fields(payloads[0], 17, 0), *payloads[1:]])
    [result] = decoder.decode_batch([payloads[1]], [sizes[1]], None, [1], None)
    assert "no archive to read it from" in str(result)
    [result] = decoder.decode_batch([payloads[1]], [sizes[1]])
    assert "without its archive" in str(result)
    primed = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                     primer_field=True)
    both = payloads[1][:3] + varint(1) + varint(4) + payloads[1][3:]  # a primer field naming chunk 0
    [result] = primed.decode_batch([both], [sizes[1]], None, [1], reader_of(payloads))
    assert "both a primer and a bias group" in str(result)
    [result] = group_codec().decode_batch([payloads[1]], [sizes[1]], None, [1], lambda c: (C.CodecId.ZSTD, b""))
    assert "chunk 0: it is not an lm chunk" in str(result)
    # a damaged range coder stream in chunk 0: chunks that still need tokens after it fail, naming it
    head = len(payloads[0]) - len(decoder._parse(payloads[0], None).data)
    broken = [payloads[0][:head], *payloads[1:]]  # its range coder's bytes gone: it reads past their end
    results = decoder.decode_batch(broken, sizes, None, [0, 1, 2, 3], reader_of(broken))
    assert all(isinstance(r, CodecError) for r in results[:3]) and results[3] == chunks[3]
    assert "chunk 0, which shares its bias head, cannot be decoded" in str(results[1])


def test_a_group_chunk_declaring_more_tokens_than_its_size_costs_its_helpers_nothing():
    """SPEC 9.10 checks the token count of a group's other chunks against their sizes only where they are decoded
    themselves: chunk 0 read alone, with chunk 2 declaring 2^26 tokens, decodes exactly and holds nothing sized by
    that count (the window restarts are walked, not listed up to it: 2^64 tokens took all memory); chunk 2 read
    itself is refused."""
    import tracemalloc

    chunks = a_file(3, 150, 4)
    payloads = group_codec().encode_batch(chunks, 0, [0, 1, 2])
    assert [fields(p)[1:] for p in payloads] == [(3, 0)] * 3
    pos = 0
    for _ in range(6):  # model, window, overlap, adaptive, G, F: then the token count
        pos = read_varint(payloads[2], pos)[1]
    inflated = [*payloads[:2], payloads[2][:pos] + varint(1 << 26) + payloads[2][read_varint(payloads[2], pos)[1] :]]
    decoder = group_codec()
    tracemalloc.start()
    try:
        assert decoder.decode_batch(inflated[:1], [150], None, [0], reader_of(inflated)) == chunks[:1]
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()
    [refused] = decoder.decode_batch(inflated[2:], [150], None, [2], reader_of(inflated))
    assert f"{1 << 26} tokens for 150 bytes" in str(refused)


def test_a_damaged_chunk_of_a_group_is_named_by_the_others(unsure_path, tmp_path):
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    chunks = a_file(3, 200, 7)
    codec = group_codec()
    payloads = codec.encode_batch(chunks, 0, [0, 1, 2])
    small = letters(100, 8)
    [alone] = codec.encode_batch([small])
    header = Header(models=(codec.model_ref,), minor=6, incompat_flags=FLAGS).to_wire()
    rows = [file_row("long.txt", b"".join(chunks)), file_row("small.txt", small)]
    archive = tmp_path / "a.lza"
    flipped = payloads[2][:-3] + bytes([payloads[2][-3] ^ 0x10]) + payloads[2][-2:]
    archive.write_bytes(craft2(rows, [(C.CodecId.LM, c, p) for c, p in zip(chunks + [small],
                                                                             [*payloads[:2], flipped, alone])],
                               header=header))
    result = run_cli("cat", str(archive), "small.txt")
    assert result.stdout == small, result.stderr
    result = run_cli("verify", str(archive), "--full")
    assert result.exit_code == EXIT_INTEGRITY and "long.txt" in result.stderr
    assert "it is decoded with chunks 0, 1: damage there shows here too" in result.stderr
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "out"))
    assert result.exit_code == EXIT_INTEGRITY and "long.txt: not extracted: chunk 0 is damaged" in result.stderr  # the group shows it first
    assert os.listdir(tmp_path / "out") == ["small.txt"] and (tmp_path / "out" / "small.txt").read_bytes() == small
    stored = craft2(rows, [(C.CodecId.LM, c, p) for c, p in zip(chunks + [small], [*payloads, alone])], header=header)
    at = stored.index(payloads[2]) + 5
    archive.write_bytes(stored[:at] + bytes([stored[at] ^ 1]) + stored[at + 1 :])  # chunk 2's stored check fails
    result = run_cli("cat", str(archive), "long.txt")
    assert result.exit_code == EXIT_INTEGRITY and "chunk 2 is damaged" in result.stderr


FIELD_VALUES = [0, 1, 2, 3, 4, 6, 7, 16, 17, 31, 33, 1 << 20, (1 << 64) - 1]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_group_archive_with_fields_or_bytes_changed_is_refused_or_read_exactly(unsure_path, data):
    """Two groups of 3 chunks (or, format 2.7, two chunks of 3 streams; 2.8, with the neural cache) and a small
    file's chunk, sealed with right checksums around payloads whose fields (any value) or range coder bytes were
    changed, or under other header flags: extract, cat and verify either refuse with an integrity or
    unsupported-feature error or give the files' exact bytes; no other exception, no wrong byte on disk."""
    import tempfile

    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    with tempfile.TemporaryDirectory() as tmp:
        minor = data.draw(st.sampled_from([6, 7, 8]), label="format 2.x")
        streams, cache = minor >= 7, minor == 8
        chunks, good = two_groups(streams, cache)
        files = {"a.txt": chunks[0], "long.txt": b"".join(chunks[1:])}
        flags = FLAGS | (C.INCOMPAT_LM_STREAMS if streams else 0) | (C.INCOMPAT_LM_CACHE if cache else 0)
        payloads, changed = list(good), set()
        for change in range(data.draw(st.integers(1, 2), label="changes")):
            k = data.draw(st.sampled_from(sorted(set(range(len(chunks))) - changed)), label="chunk")
            changed.add(k)
            adaptive, size, _ = fields(payloads[k])
            values, pos = [], 0
            # model, W, O, adaptive, [G, [F]], N; or with streams, G, the G counts and G - 1 lengths
            for _ in range(4 + (adaptive & ADAPTIVE_BIAS > 0) + (2 * size - 1 if streams and size else (size > 0) + 1)):
                value, pos = read_varint(payloads[k], pos)
                values.append(value)
            body = payloads[k][pos:]
            kind = data.draw(st.sampled_from(["field", "byte", "cut", "flag"]), label=f"change {change}")
            if kind == "field":
                values[data.draw(st.integers(0, len(values) - 1), label="field")] = data.draw(
                    st.sampled_from(FIELD_VALUES), label="value")
            elif kind == "byte" and body:
                at = data.draw(st.integers(0, len(body) - 1), label="byte")
                body = body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255), label="xor")]) + body[at + 1 :]
            elif kind == "cut":
                body = body[: data.draw(st.integers(0, len(body)), label="kept")]
            else:
                flags ^= 1 << data.draw(st.integers(0, 7), label="flag bit")
            payloads[k] = b"".join(map(varint, values)) + body
        archive = Path(tmp) / "changed.lza"
        two_groups_archive(archive, payloads, flags, streams, cache)
        refused_or_read_exactly(archive, files, Path(tmp) / "out")


@pytest.mark.parametrize("minor", [6, 7, 8])
def test_a_group_archive_under_each_other_header_flag_is_refused_or_read_exactly(minor, unsure_path, tmp_path):
    """Each of the eight flags set or cleared in turn, every chunk as written (the draws above found lm_cache without
    lm_bias failing with a usage error)."""
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    streams, cache = minor >= 7, minor == 8
    flags = FLAGS | (C.INCOMPAT_LM_STREAMS if streams else 0) | (C.INCOMPAT_LM_CACHE if cache else 0)
    chunks = two_groups(streams, cache)[0]
    files = {"a.txt": chunks[0], "long.txt": b"".join(chunks[1:])}
    for bit in range(8):
        archive = tmp_path / f"flag{bit}.lza"
        two_groups_archive(archive, None, flags ^ 1 << bit, streams, cache)
        refused_or_read_exactly(archive, files, tmp_path / f"out{bit}")


def refused_or_read_exactly(archive: Path, files: dict[str, bytes], out: Path) -> None:
    """extract, cat and verify either refuse with an integrity or unsupported-feature error or give the files' exact
    bytes; no other exception, no wrong byte on disk."""
    from lzarchive.errors import IntegrityError, UnsupportedFeature

    refusals = (IntegrityError, UnsupportedFeature)
    try:
        api.extract(str(archive), str(out))
    except refusals as exc:
        assert str(exc)
    for path in out.rglob("*"):
        assert path.is_dir() or path.read_bytes() == files[path.name], path.name
    read = {}
    for name in files:
        try:
            read[name] = b"".join(api.cat(str(archive), name))
        except refusals as exc:
            assert str(exc)
    assert all(read[name] == files[name] for name in read)
    try:
        report = api.verify(str(archive), full=True)
    except refusals as exc:
        assert str(exc) and len(read) < len(files)
    else:
        assert report.ok == (len(read) == len(files)) and all(problem.reason for problem in report.problems)


@functools.cache
def two_groups(streams: bool = False, cache: bool = False) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """a.txt in chunk 0, then long.txt in chunks 1-6, two bias groups of 3 (its model: the unsure one), or with
    streams (format 2.7) in chunks 1 and 2, each the streams of a group, and with the cache (2.8) the groups' neural
    caches: the chunks' plaintexts and payloads."""
    small, long = letters(100, 8), a_file(6, 160, 5)
    chunks = [small, *long]
    payloads = group_codec(3, streams_field=streams, cache_field=cache).encode_batch(chunks, 0, [0, *range(6)])
    if streams:
        chunks, payloads = stored(chunks, payloads)
    assert [fields(p)[1] for p in payloads] == [0] + [3] * (2 if streams else 6)
    assert all(bool(fields(p)[0] & ADAPTIVE_CACHE) == cache for p in payloads[1:])
    return tuple(chunks), tuple(payloads)  # shared by every caller: not to be changed


def two_groups_archive(path, payloads: list[bytes] | None = None, flags: int = FLAGS, streams: bool = False,
                       cache: bool = False) -> list[bytes]:
    """Writes the archive of two_groups (its payloads, or these in their place, under these header flags); returns
    the chunks' plaintexts."""
    chunks, good = two_groups(streams, cache)
    minor = 8 if cache else 7 if streams else 6
    header = Header(models=(group_codec().model_ref,), minor=minor, incompat_flags=flags).to_wire()
    rows = [file_row("a.txt", chunks[0]), file_row("long.txt", b"".join(chunks[1:]))]
    path.write_bytes(craft2(rows, [(C.CodecId.LM, c, p) for c, p in zip(chunks, payloads or good)], header=header))
    return list(chunks)


def test_a_reader_batch_never_ends_inside_a_group(unsure_path, tmp_path):
    """Batches of a few chunks over a small file's chunk and a file in two groups of 3: each batch ends before a
    group it would cut, so no chunk is decoded twice (once as another's helper, read with read_chunk); a group
    larger than the batch is still read right, its other chunks as helpers."""
    from lzarchive.archive.reader import ChunkSource
    from lzarchive.engine import registry

    registry.import_compiled(unsure_path)
    archive = tmp_path / "a.lza"
    chunks = two_groups_archive(archive)
    for batch, batches, helpers in ((3, [[0], [1, 2, 3], [4, 5, 6]], []),
                                    (2, [[0], [1, 2], [3], [4, 5], [6]], [1, 2, 3, 4, 5, 6])):
        with api.open_archive(str(archive)) as reader:
            decoded, read = [], []
            decode_chunks, read_for_codec = reader.decode_chunks, reader._read_for_codec
            reader.decode_chunks = lambda wanted, prefix: decoded.append(list(wanted)) or decode_chunks(wanted, prefix)
            reader._read_for_codec = lambda chunk: read.append(chunk) or read_for_codec(chunk)
            source = ChunkSource(reader, range(len(chunks)), batch)
            assert [source.get(i) for i in range(len(chunks))] == chunks
        assert decoded == batches and sorted(set(read)) == helpers


class Recorder(Codec):
    """Records each batch the writer codes: its first chunk and its runs."""

    codec_id, name, bias_group = C.CodecId.ZSTD, "zstd", 4

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []

    def encode_batch(self, chunks, first_chunk=0, runs=None):
        if chunks:
            self.batches.append((first_chunk, list(runs)))
        return [None] * len(chunks)

    def decode_batch(self, payloads, raw_sizes, limits=None, chunks=None, read_chunk=None):
        raise AssertionError


def test_the_writer_numbers_runs_and_never_ends_a_batch_inside_a_group(tmp_path):
    """Runs number the chunks of a file that goes on from chunk to chunk; a file that fits in a chunk starts none;
    batches of 2 end only where the next chunk starts a group of 4."""
    import io

    recorder = Recorder()
    with open(tmp_path / "a.lza", "wb") as out:
        writer = ArchiveWriter(out, [recorder], chunk_size=10, batch_chunks=2)
        for name, size in (("small", 4), ("long", 95), ("other", 6), ("tail", 25)):
            writer.add_file(name, io.BytesIO(b"x" * size), mode=0o644, mtime_ns=0, size=size)
        writer.finish()
    runs = [place for _, batch in recorder.batches for place in batch]
    # small and long's start, long's 9 chunks after (its last 9 bytes alone: other fits in no chunk with them), then
    # other and tail's start, tail's 3 chunks after
    assert runs == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3]
    assert [first for first, _ in recorder.batches] == [0, 4, 8, 10]
    assert [len(batch) for _, batch in recorder.batches] == [4, 4, 2, 4]


def test_a_file_that_fits_in_a_chunk_continues_no_run_and_joins_none(tmp_path):
    """A file that fits in a chunk and ends exactly at its end goes on into no chunk (not even cut at a line break
    there), and one after a longer file starts a chunk of its own instead of sharing that file's last: run 0 both,
    so reading either decodes only its own chunk."""
    import io

    def written(files, **options):
        recorder = Recorder()
        with open(tmp_path / "a.lza", "wb") as out:
            writer = ArchiveWriter(out, [recorder], batch_chunks=2, **options)
            entries = [writer.add_file(name, io.BytesIO(data), mode=0o644, mtime_ns=0, size=len(data))
                       for name, data in files]
            writer.finish()
        runs = [place for _, batch in recorder.batches for place in batch]
        return runs, [[(ref.chunk, ref.offset, ref.length) for ref in entry.chunks] for entry in entries]

    # exact in chunks 0-1, after and long's start in 2, long's last 7 bytes alone in 3 (small would fit there), small
    files = [("exact", b"x" * 20), ("after", b"x" * 4), ("long", b"x" * 13), ("small", b"x" * 3)]
    assert written(files, chunk_size=10) == ([0, 1, 0, 1, 0], [[(0, 0, 10), (1, 0, 10)], [(2, 0, 4)],
                                                              [(2, 4, 6), (3, 0, 7)], [(4, 0, 3)]])
    # line cuts: "b" fills the chunk to its end, with a line break in its final eighth
    files = [("a", b"x" * 30), ("b", b"xxxxxx\nxxx"), ("c", b"x" * 3)]
    assert written(files, chunk_size=40, line_cuts=True) == ([0, 0], [[(0, 0, 30)], [(0, 30, 10)], [(1, 0, 3)]])


def test_ray_parts_end_where_groups_end_and_keep_a_group_on_one_worker():
    assert _runs(10, [1, 1]) == [(0, 5), (5, 10)]
    assert _runs(10, [1, 1], [0, 4, 8]) == [(0, 8), (8, 10)]
    assert _runs(10, [1, 1, 1], [0, 8]) == [(0, 8), (8, 8), (8, 10)]
    # decoding: the largest first, each to the least loaded; chunks 1 and 2 one group (Codec.mates)
    assert _balanced([5, 1, 3, 2, 4, 5], [1, 1]) == [[0, 1, 4], [2, 3, 5]]
    assert _balanced([5, 1, 3, 2, 4, 5], [1, 1], [0, (1, 2), (1, 2), 3, 4, 5]) == [[0, 1, 2, 3], [4, 5]]


def test_pack_writes_2_7_with_bias_groups_and_2_6_2_5_and_2_4_on_request(unsure_path, tmp_path):
    """Without the neural cache (2.8: test_lm_cache), as 2.7 and older wrote."""
    source = tmp_path / "notes"
    source.mkdir()
    (source / "xy.txt").write_bytes(letters(2400, 10))
    (source / "short.txt").write_bytes(letters(300, 11))
    packed = pack_each_way(source, tmp_path, unsure_path, {
        "2.7": ["--format", "2.7"], "2.6": ["--format", "2.6"], "2.5": ["--format", "2.5"],
        "one": ["--bias-group", "1", "--no-cache", "--format", "2.8"], "2.4": ["--format", "2.4"],
        "primer": ["--primer", "8", "--window", "256", "--no-cache", "--format", "2.8"]}, "--chunk-size", "600")
    written = {name: (minor, flags & ~C.INCOMPAT_LM_SPAN) for name, (minor, flags, _) in packed.items()}
    sizes = {name: size for name, (_, _, size) in packed.items()}
    for name in packed:
        assert run_cli("cat", str(tmp_path / f"{name}.lza"), "notes/xy.txt", "--range", "1000:1300").stdout == \
            (source / "xy.txt").read_bytes()[1000:1300]
    parsed = {}
    for name in ("2.7", "2.6"):
        with api.open_archive(str(tmp_path / f"{name}.lza")) as reader:
            codec = reader.codec(C.CodecId.LM)
            parsed[name] = [codec._parse(reader.read_stored(i)[1], None) for i in range(len(reader.index.chunks))]
    older = FLAGS & ~C.INCOMPAT_LM_GROUP_MATCH, FLAGS & ~C.INCOMPAT_LM_GROUP_MATCH & ~C.INCOMPAT_LM_BIAS_GROUP  # 2.5, 2.4
    assert written == {"2.7": (7, FLAGS | C.INCOMPAT_LM_STREAMS), "2.6": (6, FLAGS), "2.5": (5, older[0]), "one": (4, older[1]), "2.4": (4, older[1]),
                       "primer": (4, C.INCOMPAT_LM_PRIMER | older[1])}
    # walked in name order: short.txt, then xy.txt from the same chunk on, in chunks of 600 bytes: one run, one group;
    # in 2.7 one chunk of its 5 streams, which saves a chunk header, an index row and a payload header for each after
    # the first (less their streams' two varints)
    assert [(p.group_first, p.group_size) for p in parsed["2.6"]] == [(0, 5)] * 5
    [streams] = parsed["2.7"]
    assert streams.bias and [count for count, _ in streams.streams] == [p.count for p in parsed["2.6"]]
    assert sizes["2.7"] < sizes["2.6"] - 4 * 30 and sizes["2.6"] < sizes["one"]
    result = run_cli("pack", str(source), "-o", str(tmp_path / "x.lza"), "--model", unsure_path, "--bias-group", "17")
    assert result.exit_code == EXIT_USAGE
    assert b"--bias-group" in run_cli("pack", "--help").stdout


def test_bias_groups_asked_for_where_none_can_be_written_are_refused(unsure_path, tmp_path):
    """An explicit --bias-group above 1 is never dropped in silence: with a primer, --no-bias, an older format or a
    codec without the model, pack refuses and says why, writing nothing; where it is not asked for, those write
    archives without groups (test above)."""
    (tmp_path / "a.txt").write_bytes(letters(300, 12))
    for args, reason in ((["--primer", "8"], "--primer"), (["--no-bias"], "--no-bias"), (["--format", "2.4"], "2.5"),
                         (["--format", "1"], "2.5"), (["--codec", "zstd"], "zstd")):
        archive = tmp_path / "x.lza"
        result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(archive), "--model", unsure_path, "--bias-group",
                         "4", *args)
        assert result.exit_code == EXIT_USAGE and reason in result.stderr, (args, result.stderr)
        assert not archive.exists()
    for args in (["--primer", "8"], ["--format", "2.4"], ["--bias-group", "1", "--primer", "8"]):
        result = run_cli("pack", str(tmp_path / "a.txt"), "-o", str(tmp_path / "y.lza"), "--model", unsure_path,
                         "-q", "-f", *args)
        assert result.exit_code == 0, (args, result.stderr)
