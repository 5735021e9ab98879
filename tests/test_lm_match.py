"""The lm codec's match model (format 2.2, SPEC 9.8) with the tiny model: the mixed tables are valid and the same
whether searched (decoder) or taken for one interval (encoder); guesses follow the spec's definition; chunks round-trip
alone, together, in any lockstep grouping, with limits and with a primer; each chunk takes the match model only where
it is smaller; the archive says so in its header; unknown adaptive models and damaged payloads are refused."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive import api
from lzarchive.codecs import CodecError
from lzarchive.codecs.lm import LmCodec
from lzarchive.codecs.match import WEIGHT_BITS, MatchModel, MatchWeights, guesses, mix_factors, mix_interval, own_finder
from lzarchive.engine.ops import TorchOps
from lzarchive.errors import EXIT_INTEGRITY
from lzarchive.format import constants as C
from lzarchive.format.records import Header
from lzarchive.rangecoder import TOTAL_BITS

from .adversarial.craft import craft2
from .conftest import entries_and_chunks, reader_of, round_trips_every_way, run_cli
from .tiny import greedy_text, tiny_model, tiny_ops

pytestmark = pytest.mark.usefixtures("private_model_cache")


def log_text(lines: int, seed: int) -> bytes:
    """Machine-written lines that repeat beyond the tiny model's 32-position window."""
    names = ("libfoo", "zlib1g", "python3-apt", "tzdata", "openssl")
    return b"".join(f"2026-11-{seed % 28 + 1:02d} 10:{(seed + i) % 60:02d} status installed {names[(seed * i) % 5]}:"
                    f"amd64 1.{i % 3}\n".encode() for i in range(lines))


def match_codec(**options) -> LmCodec:
    return LmCodec(tiny_model(), window=32, overlap=8, match_field=True, **options)


@st.composite
def frequency_rows(draw):
    vocab = draw(st.integers(2, 300))
    weights = np.array(draw(st.lists(st.integers(0, 1 << 20), min_size=vocab, max_size=vocab)), dtype=np.int64)
    spare = (1 << TOTAL_BITS) - vocab
    freq = 1 + weights * spare // max(1, int(weights.sum()))
    freq[int(np.argmax(freq))] += (1 << TOTAL_BITS) - int(freq.sum())
    return freq, draw(st.integers(0, vocab - 1)), draw(st.integers(0, (1 << WEIGHT_BITS) - 1))


def mixed_table(freq: np.ndarray, guess: int, weight: int) -> np.ndarray:
    """SPEC 9.8's mixed table, the whole row at once in numpy: the reference for the encoder's intervals and the
    decoder's search."""
    vocab, keep = len(freq), (1 << WEIGHT_BITS) - weight
    spare = (1 << TOTAL_BITS) - vocab
    given = spare - ((spare * keep) >> WEIGHT_BITS)
    v = np.arange(vocab + 1, dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(freq)])
    return np.diff(v + (((cumulative - v) * keep) >> WEIGHT_BITS) + (v > guess) * given)


@settings(max_examples=200, deadline=None)
@given(frequency_rows())
def test_a_mixed_table_is_a_valid_table_and_each_interval_matches_it(row):
    """The encoder's interval of a token (mix_interval) and the decoder's search (find_symbols, compiled and in torch
    operations, neither writing the mixed row) agree with the mixed table, at both ends of every interval tried."""
    freq, guess, weight = row
    mixed = mixed_table(freq, guess, weight)
    assert mixed.sum() == 1 << TOTAL_BITS and mixed.min() >= 1
    assert mixed[guess] >= freq[guess] if weight else np.array_equal(mixed, freq)
    starts = np.concatenate([[0], np.cumsum(freq)[:-1]])
    mixed_starts = np.concatenate([[0], np.cumsum(mixed)[:-1]])
    tokens = sorted({0, guess, len(freq) - 1, (guess + 1) % len(freq), max(0, guess - 1)})
    keep, given = mix_factors(weight, len(freq), TOTAL_BITS)
    for token in tokens:
        assert mix_interval(int(starts[token]), int(freq[token]), token, guess, weight, len(freq), TOTAL_BITS) == \
            (int(mixed_starts[token]), int(mixed[token]))
    rows = 2 * len(tokens)  # each interval's first and last target
    for mixing, ops in itertools.product((True, False), tiny_ops()):  # with the guess mixed in, and without (keep 2^16)
        table, table_starts = (mixed, mixed_starts) if mixing else (freq, starts)
        search = np.array([t for token in tokens for t in (table_starts[token], table_starts[token] + table[token] - 1)])
        found = ops.find_symbols(torch.from_numpy(np.tile(freq, (rows, 1))), search, np.full(rows, guess),
                                 np.full(rows, keep if mixing else 1 << 16), np.full(rows, given if mixing else 0),
                                 WEIGHT_BITS)
        expected = np.repeat(tokens, 2)
        assert np.array_equal(found[0], expected)
        assert np.array_equal(found[1], table_starts[expected]) and np.array_equal(found[2], table[expected])


def test_the_guess_follows_the_longest_run_before_the_latest_pairs():
    assert guesses([1, 2, 3, 1, 2, 4, 1, 2, 9]) == [None] * 5 + [(3, 2), None, None, (4, 2)]
    # before the last token: (5, 6) occurred twice; the earlier occurrence matches three tokens (1, 5, 6), the later two
    assert guesses([1, 5, 6, 7, 2, 5, 6, 8, 1, 5, 6, 0])[-1] == (7, 3)
    assert guesses(list(range(40)) + list(range(40)))[-1] == (39, 32)  # matches are counted up to 32 tokens


@pytest.mark.parametrize("repeats, expected", [(255, 50), (256, 60)])
def test_the_guess_looks_at_the_latest_256_occurrences_of_the_pair(repeats, expected):
    """The longest run (10, 11, 1, 2 → 50) is found among the latest 256 occurrences of (1, 2), not beyond them."""
    tokens = [10, 11, 1, 2, 50] + [7, 1, 2, 60] * repeats + [10, 11, 1, 2, 0]
    assert guesses(tokens)[-1] == (expected, 4 if expected == 50 else 2)


def spec_guess(tokens: list[int], i: int) -> tuple[int, int] | None:
    """SPEC 9.8's guess before t_i, word for word: the latest 256 j with the same pair before them, each one's match
    length, the largest length and the largest j among equals."""
    if i < 2:
        return None
    js = [j for j in range(2, i) if tokens[j - 2 : j] == tokens[i - 2 : i]][-256:]
    if not js:
        return None
    lengths = {j: max(n for n in range(2, min(32, j) + 1) if tokens[j - n : j] == tokens[i - n : i]) for j in js}
    j = max(js, key=lambda j: (lengths[j], j))
    return tokens[j], lengths[j]


def spec_weight(bucket: tuple[int, int, int]) -> int:
    guessed, hits, mass = bucket
    return (max(0, hits * (1 << TOTAL_BITS) - mass) << 16) // ((guessed + 2) * (1 << TOTAL_BITS) - mass)


token_runs = st.lists(st.integers(0, 3), max_size=300) | st.lists(st.sampled_from([0, 49151, 1 << 30]), max_size=300)


@settings(max_examples=60, deadline=None)
@given(tokens=token_runs, cut=st.integers(0, 300))
def test_guesses_and_weights_follow_the_spec(tokens, cut):
    """The compiled match model against SPEC 9.8 written out in Python: every guess of a chunk's coder (guesses) and
    of a decoder (MatchModel one token at a time, its arrays grown from a small start, copied midway), and every
    weight, with the model's frequencies of the guesses spread over the four confidences."""
    assert guesses(tokens) == [spec_guess(tokens, i) for i in range(len(tokens))]
    model = MatchModel(TOTAL_BITS, own_finder(capacity=4))
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, token in enumerate(tokens):
        if i == cut:
            model = model.copy()
        expected = spec_guess(tokens, i)
        assert model.guess() == (expected[0] if expected else None)
        freq = [1, 1 << 29, (1 << 30) - 1, 1 << 30, (1 << 31) + 7, (1 << 32) - 2][(i * 7 + token) % 6]
        if expected:
            bucket = buckets.setdefault((min(expected[1], 8), min(3, 32 - freq.bit_length())), [0, 0, 0])
            assert model.weight(freq) == spec_weight(bucket)
            bucket[0], bucket[1], bucket[2] = bucket[0] + 1, bucket[1] + (token == expected[0]), bucket[2] + freq
        model.update(token, freq)


def test_the_weight_is_exact_where_its_product_passes_64_bits():
    """A bucket of 2^24 - 1 guesses (a chunk's most) of mass near 2^56: (h T - s) 2^16 needs 73 bits."""
    weights = MatchWeights(TOTAL_BITS)
    for guessed, hits, mass in [((1 << 24) - 1, (1 << 24) - 1, 1 << 24), ((1 << 24) - 1, 1 << 23, ((1 << 24) - 2) << 31),
                                (5, 5, 5), (3, 0, 0), ((1 << 24) - 1, (1 << 24) - 1, ((1 << 24) - 1) * ((1 << 32) - 2))]:
        weights.buckets[6, 3] = guessed, hits, mass
        assert weights.weight(8, 1) == spec_weight((guessed, hits, mass))


def test_the_weight_grows_with_guesses_the_model_did_not_expect_and_stays_below_one():
    model, weights = MatchModel(TOTAL_BITS), []
    unexpected = 1 << (TOTAL_BITS - 20)  # the model gives each guess about 1e-6
    for token in [7, 8] * 30:
        guess = model.guess()
        if guess is not None:
            assert guess == token  # a periodic text: every guess after the first period comes true
            weights.append(model.weight(unexpected))
        model.update(token, unexpected)
    # lengths 2..7 each start a bucket (weight 0: nothing learned there yet); from length 8 on, one bucket learns
    assert weights[:7] == [0] * 7 and weights[7:] == sorted(weights[7:]) and 0 < weights[8] < weights[-1] < 1 << WEIGHT_BITS
    assert model.weight((1 << TOTAL_BITS) - 2) == 0  # where the model was already sure: no guess seen in that bucket


@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_chunks_round_trip_alone_together_in_any_grouping_and_with_limits(data):
    """The match model's state belongs to its chunk: the same tables in lockstep with any others, or alone."""
    chunks = [log_text(data.draw(st.integers(3, 9), label=f"lines {i}"), i) for i in range(data.draw(st.integers(1, 4)))]
    chunks.append(greedy_text(tiny_model(), 70, seed_token=2 + ord("m")) + b"\xff.")
    round_trips_every_way(match_codec, chunks, data)


def test_with_a_primer_the_primer_chunk_keeps_its_history():
    """The primer chunk's match model sees its primer tokens, coded in their own window, before the rest."""
    chunks = [log_text(12, 1), log_text(8, 2), log_text(6, 3)]
    codec = match_codec(primer_field=True, primer_tokens=20)
    payloads = codec.encode_batch(chunks)
    assert codec.primer.chunk == 0

    read_chunk = reader_of(payloads)
    decoder = match_codec(primer_field=True)
    assert decoder.decode_batch(payloads, [len(c) for c in chunks], None, [0, 1, 2], read_chunk) == chunks
    assert decoder.decode_batch(payloads[2:], [len(chunks[2])], None, [2], read_chunk) == chunks[2:]


def test_each_chunk_takes_the_match_model_only_where_it_is_smaller():
    repetitive, predictable = log_text(20, 4), greedy_text(tiny_model(), 90, seed_token=2 + ord("p"))
    plain = LmCodec(tiny_model(), window=32, overlap=8).encode_batch([repetitive, predictable])
    mixed = match_codec().encode_batch([repetitive, predictable])
    # header: model, window, overlap, then the adaptive field (1 byte each here)
    assert mixed[0][3] == 1 and len(mixed[0]) < 0.5 * len(plain[0])
    assert mixed[1][3] == 0 and mixed[1][:3] + mixed[1][4:] == plain[1]


def test_the_torch_operations_code_and_decode_the_same_payloads(monkeypatch):
    """The intervals and the mixed-table search in torch operations (on the engine's device: what a GPU runs, with only
    a few integers per row crossing to the range coder) give the compiled loops' payloads and decode them."""
    chunks = [log_text(20, 5), greedy_text(tiny_model(), 90, seed_token=2 + ord("t"))]
    payloads = match_codec().encode_batch(chunks)
    assert payloads[0][3] == 1  # the first chunk's tables are mixed with the match model's guesses
    monkeypatch.setenv("LZA_KERNELS", "torch")
    codec = match_codec()
    assert type(codec.engine.ops) is TorchOps
    assert codec.encode_batch(chunks) == payloads
    assert codec.decode_batch(payloads, [len(c) for c in chunks]) == chunks


@pytest.mark.parametrize("damage", ["adaptive 2", "adaptive 0", "flipped", "truncated"])
def test_damaged_match_payloads_are_reported_with_their_chunk(damage, tiny_path, tmp_path):
    """An unknown adaptive model is refused by its number; a payload read with the wrong tables or damaged bytes
    (sealed in: the stored-bytes checksum is right) fails its chunk's checks. The other chunk still reads."""
    from lzarchive.engine import registry

    registry.import_compiled(tiny_path)
    files = {"a.log": log_text(30, 6), "b.log": log_text(24, 5)}  # the first chunk the largest, as a writer makes them
    codec = match_codec()
    payloads = codec.encode_batch(list(files.values()))
    good = payloads[1]  # model, window, overlap, adaptive (1): one byte each; the token count; the range coder's bytes
    assert good[3] == 1
    bad = {"adaptive 2": good[:3] + b"\x02" + good[4:], "adaptive 0": good[:3] + b"\x00" + good[4:],
           "flipped": good[:-3] + bytes([good[-3] ^ 0x08]) + good[-2:], "truncated": good[: len(good) // 2]}[damage]
    if damage == "adaptive 2":
        [refused] = match_codec().decode_batch([bad], [len(files["b.log"])])
        assert isinstance(refused, CodecError) and "adaptive model 2" in str(refused)
    archive = tmp_path / "a.lza"
    header = Header(models=(codec.model_ref,), minor=2, incompat_flags=C.INCOMPAT_LM_MATCH).to_wire()
    archive.write_bytes(craft2(*entries_and_chunks(files, [payloads[0], bad]), header=header))
    result = run_cli("cat", str(archive), "a.log")
    assert result.stdout == files["a.log"], result.stderr
    result = run_cli("verify", str(archive))
    assert result.exit_code == EXIT_INTEGRITY and "chunk 1" in result.stderr and "b.log" in result.stderr
    assert "adaptive model 2" in result.stderr or damage != "adaptive 2"
    result = run_cli("extract", str(archive), "-C", str(tmp_path / "x"), "-q")
    assert result.exit_code == EXIT_INTEGRITY and not (tmp_path / "x" / "b.log").exists()


def test_pack_writes_2_2_with_the_match_model_without_a_span_and_older_formats_on_request(tiny_path, tmp_path):
    source = tmp_path / "logs"
    source.mkdir()
    (source / "apt.log").write_bytes(log_text(30, 7))
    written = {}
    older = {"span": 0, "bias": False, "format_version": "2.8"}  # 2.9's text field in every payload: the oldest is 2.9
    for name, options in (("default", older), ("no-match", {"match": False, **older}),
                          ("2.1", {"format_version": "2.1"})):
        archive = str(tmp_path / f"{name}.lza")
        api.pack([str(source)], archive, codec="lm", model=str(tiny_path), **options)
        with api.open_archive(archive) as reader:
            written[name] = (reader.header.minor, reader.header.incompat_flags)
        out = tmp_path / f"out-{name}"
        assert run_cli("extract", archive, "-C", str(out), "-q").exit_code == 0
        assert (out / "logs" / "apt.log").read_bytes() == (source / "apt.log").read_bytes()
    assert written == {"default": (2, C.INCOMPAT_LM_MATCH), "no-match": (0, 0), "2.1": (0, 0)}
    assert (tmp_path / "default.lza").stat().st_size < (tmp_path / "no-match.lza").stat().st_size
