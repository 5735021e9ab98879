"""The range coder: any symbol sequence under any valid tables round-trips, within a stated overhead of the ideal."""

from __future__ import annotations

import bisect
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lzarchive.rangecoder import TOTAL, RangeDecoder, RangeEncoder

OVERHEAD_BITS = 16  # stated bound: flushing costs at most two bytes over the ideal -log2 p sum


@st.composite
def coded_steps(draw):
    """(cumulative table, symbol) pairs: tables of 1..64 symbols summing to any total up to 2^32, every entry >= 1."""
    steps = []
    for _ in range(draw(st.integers(0, 120))):
        total = draw(st.sampled_from([TOTAL, 256, 1 << 16, 12345, 2]))
        size = draw(st.integers(1, min(64, total)))
        cuts = sorted(draw(st.lists(st.integers(0, total - size), min_size=size - 1, max_size=size - 1)))
        freqs = [1 + b - a for a, b in zip([0] + cuts, cuts + [total - size])]
        cumulative = [0]
        for f in freqs:
            cumulative.append(cumulative[-1] + f)
        symbol = draw(st.integers(0, size - 1) | st.just(max(range(size), key=freqs.__getitem__)))
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
    ideal = sum(-math.log2((c[s + 1] - c[s]) / c[-1]) for c, s in steps)
    assert len(data) * 8 <= ideal + OVERHEAD_BITS


def test_certain_symbols_cost_nothing():
    steps = [([0, TOTAL - 1, TOTAL], 0)] * 10_000  # probability 1 - 2^-32 each
    assert len(code(steps)) <= 2
