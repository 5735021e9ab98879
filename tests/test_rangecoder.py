"""The range coder: any symbol sequence under any valid tables round-trips, within a stated overhead of the ideal."""

from __future__ import annotations

import bisect
import math

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from lzarchive.rangecoder import READ_PAST_END, TOTAL, RangeDecodeError, RangeDecoder, RangeEncoder

OVERHEAD_BITS = 16  # stated bound: flushing costs at most two bytes over the ideal -log2 p sum


@st.composite
def coded_steps(draw):
    """(cumulative table, symbol) pairs: tables of 1..64 symbols summing to any total up to 2^32, every entry >= 1."""
    steps = []
    zeros = draw(st.booleans())  # symbols at the start of their tables code zero bytes, which the encoder drops
    for _ in range(draw(st.integers(0, 120))):
        total = draw(st.sampled_from([TOTAL, 256, 1 << 16, 12345, 2]))
        size = draw(st.integers(1, min(64, total)))
        cuts = sorted(draw(st.lists(st.integers(0, total - size), min_size=size - 1, max_size=size - 1)))
        freqs = [1 + b - a for a, b in zip([0] + cuts, cuts + [total - size])]
        cumulative = [0]
        for f in freqs:
            cumulative.append(cumulative[-1] + f)
        symbol = 0 if zeros else draw(st.integers(0, size - 1) | st.just(max(range(size), key=freqs.__getitem__)))
        steps.append((cumulative, symbol))
    return steps


def code(steps) -> bytes:
    encoder = RangeEncoder()
    for cumulative, symbol in steps:
        encoder.encode(cumulative[symbol], cumulative[symbol + 1] - cumulative[symbol], cumulative[-1])
    return encoder.finish()


@settings(max_examples=200, deadline=None)
@given(coded_steps())
def test_round_trip_and_size(steps):
    data = code(steps)
    decoder = RangeDecoder(data)
    for cumulative, symbol in steps:
        value = decoder.target(cumulative[-1])
        found = bisect.bisect_right(cumulative, value) - 1
        assert found == symbol
        decoder.consume(cumulative[found], cumulative[found + 1] - cumulative[found])
    decoder.check_end()
    ideal = sum(-math.log2((c[s + 1] - c[s]) / c[-1]) for c, s in steps)
    assert len(data) * 8 <= ideal + OVERHEAD_BITS


def test_certain_symbols_cost_nothing():
    steps = [([0, TOTAL - 1, TOTAL], 0)] * 10_000  # probability 1 - 2^-32 each
    assert len(code(steps)) <= 2


def test_a_run_of_zero_bytes_is_kept_where_the_decoder_would_read_too_far():
    steps = [([0, 1, 256], 0)] * 100  # 8 bits each, all coded as zero bytes
    data = code(steps)
    assert len(data) >= 100 - READ_PAST_END and set(data) <= {0}
    decoder = RangeDecoder(data)
    for cumulative, symbol in steps:
        assert decoder.target(256) == 0
        decoder.consume(0, 1)


def test_a_decoder_that_reads_far_past_the_end_fails():
    """An empty payload declaring many symbols (a crafted lm chunk) must not decode zeros forever."""
    decoder = RangeDecoder(b"")
    with pytest.raises(RangeDecodeError, match="past the end"):
        for _ in range(10_000):
            decoder.consume(decoder.target(256), 1)
    assert decoder._pos <= READ_PAST_END + 1


def test_bytes_after_the_coded_symbols_are_damage():
    steps = [([0, 100, 300, TOTAL], 1)] * 50
    data = code(steps)
    decoder = RangeDecoder(data + b"\0" * (READ_PAST_END + 1))  # the zeros a decoder reads past the end anyway, and more
    for _ in steps:
        assert 100 <= decoder.target() < 300  # the symbols decode unchanged
        decoder.consume(100, 200)
    with pytest.raises(RangeDecodeError, match="after the coded symbols"):
        decoder.check_end()
