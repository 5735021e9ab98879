"""The neural cache (format 2.8, SPEC 9.13): its tables are SPEC's formulas read literally, the same on both device
paths and for any rows; chunks and groups with it decode the same in any batch, lockstep and with limits; its ring
holds the latest keys; payloads that break its rules are refused; pack writes it by default and 2.7 on request."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive.codecs import CodecError, neural
from lzarchive.codecs.base import Joined
from lzarchive.codecs.lm import ADAPTIVE_BIAS, ADAPTIVE_CACHE, ADAPTIVE_MATCH, LmCodec
from lzarchive.codecs.neural import KnownKeys, NeuralCache
from lzarchive.engine import architectures
from lzarchive.engine.kernels import QMAX
from lzarchive.engine.ops import CompiledOps, TorchOps
from lzarchive.format import constants as C
from lzarchive.format.wire import read_varint, varint

from .test_lm_bias import letters
from .test_lm_bias_group import a_file, stored
from .test_lm_match import log_text
from .test_lm_streams import stream_fields
from .conftest import pack_each_way, reader_of, round_trips_every_way, run_cli
from .tiny import tiny_model, unsure_model

pytestmark = pytest.mark.usefixtures("private_model_cache")
T = 1 << 32
LOG2E = float.fromhex("0x1.71547652b82fep+0")


def cache_codec(streams: bool = True, **options) -> LmCodec:
    """Format 2.8's codec: groups of 3 as chunks of streams (with streams), the match model, the neural cache."""
    return LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                   bias_group=3, group_match=True, streams_field=streams, cache_field=True, **options)


def both_ops() -> tuple[TorchOps, TorchOps]:
    tables = architectures.engine(tiny_model(), "cpu").ops.tables
    return TorchOps(torch.device("cpu"), tables), CompiledOps(torch.device("cpu"), tables)


def spec_table(q: list[int], keys: list[tuple[list[int], int]], freq: list[int], weight: int) -> tuple[list[int], int]:
    """SPEC 9.13's table read literally, in Python's integers and binary64 floats (IEEE, correctly rounded): the
    mixed table f' and the bucket, for the row q and the cache's (key, token) pairs."""
    exp_table = architectures.engine(tiny_model(), "cpu").ops.tables.exp2_frac.tolist()
    q = spec_key(q)
    length = math.sqrt(max(1, sum(x * x for x in q)))
    cos = [sum(a * b for a, b in zip(q, k)) / (length * math.sqrt(max(1, sum(x * x for x in k)))) for k, _ in keys]
    z = [60.0 * c for c in cos]
    e = []
    for value in z:
        k = math.floor(min((value - max(z)) * (-LOG2E * 4096), 31 * 4096))
        e.append(exp_table[k % 4096] >> (k // 4096 + 10) if k // 4096 + 10 < 31 else 0)
    vocab = len(freq)
    c = [(2**20 * sum(w for w, (_, y) in zip(e, keys) if y == v)) // sum(e) for v in range(vocab)]
    bucket = min(9, max(0, math.floor(10.0 * max(cos))))
    Q = weight >> 16
    G = ((T - vocab) * Q) >> 16
    mixed = [1 + (((f - 1) * (2**16 - Q)) >> 16) + ((cv * G) >> 20) for f, cv in zip(freq, c)]
    top = max(range(vocab), key=lambda v: (mixed[v], -v))
    mixed[top] += T - sum(mixed)
    return mixed, bucket


def spec_key(q: list[int]) -> list[int]:
    m = max(abs(x) for x in q) or 1
    return [round(127 * x / m) for x in q]  # one rounded division, then ties to even


def a_table(vocab: int, seed: int) -> list[int]:
    draw = np.random.default_rng(seed)
    weights = draw.integers(0, 1 << 20, vocab)
    freq = 1 + (weights * (T - vocab)) // weights.sum()
    freq[int(np.argmax(freq))] += T - int(freq.sum())
    return freq.tolist()


def row(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("case", ["extreme", "ties", "zeros"])
def test_the_cache_table_is_spec_9_13_read_literally_on_both_paths(case):
    """Rows at ±QMAX, a zero row and key (length 1 by SPEC's max), equal keys (tied cosines, split weights) and
    tokens named by several keys: both device paths give SPEC's integers."""
    draw = np.random.default_rng(7)
    dims, vocab = 24, 50
    rows = draw.integers(-QMAX, QMAX + 1, (3, dims))
    if case == "extreme":
        rows[0], rows[1] = QMAX, -QMAX
    if case == "zeros":
        rows[2] = 0
    sources = draw.integers(-QMAX, QMAX + 1, (11, dims))
    if case == "ties":
        sources[3] = sources[5] = sources[8] = rows[0]
    if case == "zeros":
        sources[4] = 0
    tokens = draw.integers(0, vocab, 11)
    tokens[:4] = 7
    freq = torch.tensor([a_table(vocab, seed) for seed in range(3)])
    weights = [0, 1 << 31, (1 << 32) - 1]
    results = []
    for ops in both_ops():
        cache = NeuralCache(dims, torch.device("cpu"))
        cache.add(*ops.cache_keys(row(sources)), tokens.tolist())
        cache.commit()
        keys = cache.keys[: cache.held].tolist()
        assert keys == [spec_key(source) for source in sources.tolist()]
        for b in range(neural.CACHE_BUCKETS):
            cache.weights[b] = weights[b % 3]
        mixed, _, buckets = cache.tables(ops, *ops.cache_keys(row(rows)), freq, 32)
        # the writer's side, which knows the keys before: one chunk whose 11 first positions are the sources'
        known = KnownKeys(ops, [row(np.concatenate([sources, rows[:1]]))], [[*tokens.tolist(), 0]])
        known.weights = list(cache.weights)
        assert torch.equal(known.tables_at(ops, 11, freq[:1], 32)[0], mixed[:1])
        results.append((mixed, buckets))
        for i in range(3):
            expected, bucket = spec_table(rows[i].tolist(), list(zip(keys, tokens.tolist())), freq[i].tolist(),
                                          cache.weights[buckets[i]])
            assert mixed[i].tolist() == expected and buckets[i] == bucket
            assert min(expected) >= 1 and sum(expected) == T
    assert torch.equal(results[0][0], results[1][0]) and list(results[0][1]) == list(results[1][1])


def test_the_keys_are_rounded_as_spec_says():
    ops = both_ops()[0]
    keys, lengths = ops.cache_keys(row([[QMAX, -QMAX, 1, 0], [0, 0, 0, 0], [2, 1, -1, 3]]))
    assert keys.tolist() == [[127, -127, 0, 0], [0, 0, 0, 0], [85, 42, -42, 127]]  # 127 / 3 * 2 = 84.67, ties to even
    assert lengths.tolist() == [math.sqrt(2 * 127**2), 1.0, math.sqrt(85**2 + 42**2 * 2 + 127**2)]


def test_the_ring_holds_the_latest_keys(monkeypatch):
    """Past CACHE_KEYS the oldest keys go: the table is that of a cache holding only the latest."""
    monkeypatch.setattr(neural, "CACHE_KEYS", 16)
    ops, draw = both_ops()[0], np.random.default_rng(3)
    rows = row(draw.integers(-QMAX, QMAX + 1, (40, 8)))
    tokens = draw.integers(0, 30, 40).tolist()
    ring, latest = NeuralCache(8, torch.device("cpu")), NeuralCache(8, torch.device("cpu"))
    for lo in range(0, 40, 3):
        ring.add(*ops.cache_keys(rows[lo : lo + 3]), tokens[lo : lo + 3])
        ring.commit()
    latest.add(*ops.cache_keys(rows[-16:]), tokens[-16:])
    latest.commit()
    assert (ring.count, ring.held, len(ring.keys)) == (40, 16, 16)
    query, freq = row(draw.integers(-QMAX, QMAX + 1, (2, 8))), torch.tensor([a_table(30, 1), a_table(30, 2)])
    keys = ops.cache_keys(query)
    for a, b in zip(ring.tables(ops, *keys, freq, 32), latest.tables(ops, *keys, freq, 32)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    known = KnownKeys(ops, [torch.cat([rows, query[:1]])], [tokens + [0]])  # the writer's: the keys before position 40
    assert torch.equal(known.tables_at(ops, 40, freq[:1], 32)[0], ring.tables(ops, *keys, freq, 32)[0][:1])


def test_the_weight_steps_after_the_step_by_the_clipped_gradient():
    cache = NeuralCache(4, torch.device("cpu"))
    cache.learn(3, model=T // 4, cache=1 << 19, mixed=T // 8, total_bits=32)  # (2^31 - 2^30) 2^16 / 2^29 = 2^17
    cache.learn(3, model=T // 2, cache=0, mixed=1, total_bits=32)  # clipped to -2^20
    assert cache.weights[3] == 0  # until commit
    cache.commit()
    assert cache.weights[3] == 0  # (2^17 - 2^20) << 7 < 0: clipped to 0 after the step's sum
    cache.learn(3, model=1, cache=1 << 20, mixed=1, total_bits=32)
    cache.commit()
    assert cache.weights[3] == 1 << 27


@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_chunks_and_groups_with_the_cache_decode_the_same_in_any_batch_lockstep_and_with_limits(data):
    """The encoder's tables (positions in order, one cache per chunk or group) equal the decoder's however the chunks
    are batched, stepped together and cut short; a group's chunk asked alone decodes its group."""
    length = data.draw(st.integers(2, 5), label="file chunks")
    streams = data.draw(st.booleans(), label="streams")
    chunks = a_file(length, data.draw(st.integers(60, 200), label="chunk size")) + [log_text(4, 3), letters(90, 9)]
    payloads = cache_codec(streams).encode_batch(chunks, 0, list(range(length)) + [0, 0])
    plaintexts, kept = stored(chunks, payloads) if streams else (chunks, payloads)
    assert any(read_varint(p, 3)[0] & ADAPTIVE_CACHE for p in kept)
    sizes, decoder = [len(c) for c in plaintexts], cache_codec(streams)
    everything = list(range(len(kept)))
    read = lambda chunk: (C.CodecId.LM, kept[chunk])  # noqa: E731
    assert decoder.decode_batch(kept, sizes, None, everything, read) == plaintexts
    some = data.draw(st.permutations(everything), label="order")[: data.draw(st.integers(1, len(kept)), label="some")]
    decoder.batch_chunks = data.draw(st.integers(1, 3), label="lockstep")
    assert decoder.decode_batch([kept[k] for k in some], [sizes[k] for k in some], None, some, read) == [
        plaintexts[k] for k in some]
    limits = [data.draw(st.integers(1, sizes[k]), label=f"limit {k}") for k in some]
    for k, limit, prefix in zip(some, limits, decoder.decode_batch([kept[k] for k in some], [sizes[k] for k in some],
                                                                   limits, some, read)):
        assert limit <= len(prefix) and plaintexts[k].startswith(prefix)


def own_cache_codec(**options) -> LmCodec:
    """Chunks with caches of their own (no groups)."""
    return LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, cache_field=True, **options)


@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_chunks_with_caches_of_their_own_round_trip_every_way(data):
    """Each chunk's cache belongs to it: the same tables in lockstep with any others, alone and with limits."""
    chunks = [letters(data.draw(st.integers(40, 300), label=f"letters {i}"), i) for i in range(data.draw(st.integers(1, 3)))]
    chunks += [log_text(data.draw(st.integers(2, 6), label="lines"), 3) + b"\xff.", b"q"]
    assert any(read_varint(p, 3)[0] & ADAPTIVE_CACHE for p in round_trips_every_way(own_cache_codec, chunks, data))


def test_with_a_primer_the_primer_chunk_keeps_its_cache():
    """The primer chunk's cache learns from its primer tokens, coded in their own window, before the rest; the chunks
    after it start empty."""
    chunks = [letters(300, 1), letters(200, 2), letters(150, 3, "xyz")]
    codec = own_cache_codec(primer_field=True, primer_tokens=20)
    payloads = codec.encode_batch(chunks)
    assert codec.primer.chunk == 0 and all(p[5] & ADAPTIVE_CACHE for p in payloads)  # after the primer's two fields
    read_chunk, decoder = reader_of(payloads), own_cache_codec(primer_field=True)
    assert decoder.decode_batch(payloads, [len(c) for c in chunks], None, [0, 1, 2], read_chunk) == chunks
    assert decoder.decode_batch(payloads[2:], [len(chunks[2])], None, [2], read_chunk) == chunks[2:]
    assert decoder.decode_batch(payloads[:1], [len(chunks[0])], [40], [0], read_chunk)[0] == chunks[0][:40]


def test_the_cache_makes_repeated_text_smaller_and_torch_ops_code_the_same(monkeypatch):
    """Letters the model cannot predict, whose repeats the cache finds: smaller than 2.7's payloads; the torch
    operations (LZA_KERNELS=torch) write and read the same bytes."""
    chunks = a_file(3, 200, 5) + [letters(300, 6)]
    runs = [0, 1, 2, 0]
    with_cache = cache_codec().encode_batch(chunks, 0, runs)
    without = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                      bias_group=3, group_match=True, streams_field=True).encode_batch(chunks, 0, runs)
    size = lambda payloads: sum(len(p) for p in payloads if not isinstance(p, Joined))  # noqa: E731
    assert size(with_cache) < size(without)
    monkeypatch.setenv("LZA_KERNELS", "torch")
    assert cache_codec().encode_batch(chunks, 0, runs) == with_cache
    plaintexts, kept = stored(chunks, with_cache)
    assert cache_codec().decode_batch(kept, [len(c) for c in plaintexts]) == plaintexts


def test_the_cache_bit_needs_its_flag_and_the_bias_head_and_a_group_agrees_on_it():
    chunks = a_file(3, 150, 4)
    [payload, *_] = cache_codec().encode_batch(chunks, 0, [0, 1, 2])
    adaptive, _, _, _ = stream_fields(payload)
    assert adaptive == ADAPTIVE_MATCH | ADAPTIVE_BIAS | ADAPTIVE_CACHE
    size = sum(map(len, chunks))
    older = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, group_field=True,
                    group_match=True, streams_field=True)
    [result] = older.decode_batch([payload], [size])
    assert "adaptive model 7 is not one this archive's flags allow" in str(result)
    alone = LmCodec(unsure_model(), window=32, overlap=8, match_field=True, bias_field=True, cache_field=True)
    [own] = alone.encode_batch([chunks[0]])
    assert read_varint(own, 3)[0] & ADAPTIVE_CACHE
    without_head = own[:3] + varint(ADAPTIVE_CACHE | ADAPTIVE_MATCH) + own[4:]
    [result] = alone.decode_batch([without_head], [len(chunks[0])])
    assert isinstance(result, CodecError) and "the neural cache (4) without the bias head (2)" in str(result)
    # a group of chunks (2.5's layout) whose chunks disagree on the cache: refused, naming the chunk
    apart = cache_codec(streams=False)
    grouped = apart.encode_batch(chunks, 0, [0, 1, 2])
    flipped = [p[:3] + varint(read_varint(p, 3)[0] ^ ADAPTIVE_CACHE) + p[4:] if i == 1 else p
               for i, p in enumerate(grouped)]
    [result] = apart.decode_batch([flipped[0]], [len(chunks[0])], None, [0], lambda chunk: (C.CodecId.LM, flipped[chunk]))
    assert isinstance(result, CodecError) and "chunk 1" in str(result) and "neural cache" in str(result)


def test_a_group_of_chunks_apart_never_mixes_the_cache_bit():
    """Without streams a group's chunks code without the cache (a chunk alone may take it): all of a group agree."""
    chunks = a_file(3, 150, 4) + [letters(300, 6)]
    payloads = cache_codec(streams=False).encode_batch(chunks, 0, [0, 1, 2, 0])
    bits = [read_varint(p, 3)[0] for p in payloads]
    assert all(b & ADAPTIVE_BIAS and not b & ADAPTIVE_CACHE for b in bits[:3])


def test_pack_writes_the_cache_by_default_and_2_7_on_request(unsure_path, tmp_path):
    source = tmp_path / "notes"
    source.mkdir()
    (source / "xy.txt").write_bytes(letters(600, 10))
    packed = pack_each_way(source, tmp_path, unsure_path, {"default": [], "no-cache": ["--no-cache", "--format", "2.8"],
                                                           "2.7": ["--format", "2.7"], "2.8": ["--format", "2.8"]})
    written = {name: (minor, flags & C.INCOMPAT_LM_CACHE) for name, (minor, flags, _) in packed.items()}
    assert written == {"default": (12, C.INCOMPAT_LM_CACHE), "no-cache": (7, 0), "2.7": (7, 0),
                       "2.8": (8, C.INCOMPAT_LM_CACHE)}
    assert packed["default"][2] < packed["2.7"][2]
    assert b"--no-cache" in run_cli("pack", "--help").stdout
