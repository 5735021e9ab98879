"""The engine's exact operations against SPEC.md 9.3-9.4 written out literally in numpy, bit for bit, on both device
paths (compiled CPU loops and torch operations). Each test also shows that the tempting other reading (another
association order, a binary64 division) gives other bits on the same inputs: such a change, made alike in both
paths, would pass every comparison between them and every golden fixture, and desynchronise long inputs now and then.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lzarchive.engine import architectures, compiler
from lzarchive.engine.kernels import LOG2E, QMAX
from lzarchive.engine.ops import CompiledOps, Tables, TorchOps
from lzarchive.rangecoder import TOTAL_BITS

from .gpt2_tiny import tiny_gpt2
from .tiny import every_attention, tiny_model, tiny_ops

RNG = np.random.default_rng(2026)


CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def engines():
    """Both implementations of the exact operations: compiled loops, torch operations."""
    return tiny_ops()


def spec_exp(delta: np.ndarray, table: np.ndarray, extra_shift: int = 0) -> np.ndarray:
    """EXP of 9.3 (EXP15 with extra_shift 15) for binary64 delta <= 0, as int64."""
    k = np.floor(np.minimum(delta * (-LOG2E * 4096), 31 * 4096)).astype(np.int64)
    return table[k % 4096] >> np.minimum(k // 4096 + extra_shift, 62)


def test_linear_is_acc_times_row_scale_then_channel_scale(engines):
    a = RNG.integers(-QMAX, QMAX + 1, (64, 512)).astype(np.float64)
    w = RNG.integers(-128, 128, (96, 512)).astype(np.int8)
    s = RNG.random((64, 1)) * 1e-3
    ws = RNG.random(96) * 1e-2
    acc = (a.astype(np.int64) @ w.astype(np.int64).T).astype(np.float64)  # exact
    expected = (acc * s) * ws
    assert not np.array_equal(expected, acc * (s * ws))  # the order shows in the bits
    for ops in engines:
        got = ops.linear(torch.from_numpy(a), torch.from_numpy(s), torch.from_numpy(w), torch.from_numpy(ws))
        assert np.array_equal(got.numpy(), expected)


def test_frequency_tables_divide_integers(engines):
    """9.4: f = 1 + (e * free) // sum(e) on exact integers, on realistic rows of the default vocabulary's size; then on
    a row where it matters: e * free (up to 2^62) is not exact in binary64, and a binary64 division, off by once in
    about 2^35 entries of real tables, is made to differ: two equal e of 30 significant bits give 2^31 each
    exactly, and a binary64 quotient rounded below it gives 2^31 - 1."""
    vocab, total = 49152, 1 << TOTAL_BITS
    logits = RNG.random((64, vocab)) * 3.0
    logits[0, :] = 1.5  # all equal: the remainder goes to token 0
    exp_table = engines[0].tables.exp2_frac.numpy()
    e = spec_exp(logits - logits.max(axis=1, keepdims=True), exp_table)
    expected = 1 + (e * (total - vocab)) // e.sum(axis=1, keepdims=True)
    expected[np.arange(64), e.argmax(axis=1)] += total - expected.sum(axis=1)
    assert np.array_equal(_frequencies(engines, logits, engines[0].tables.exp2_frac), expected)

    odd = 1_065_353_089  # e * (2^32 - 2) is rounded down in binary64, and the quotient stays below 2^31 - 1
    assert float(odd * (total - 2)) < odd * (total - 2)
    assert np.floor(float(odd * (total - 2)) / float(2 * odd)) == 2**31 - 2
    crafted = _frequencies(engines, np.zeros((1, 2)), torch.full((4096,), odd, dtype=torch.int64))
    assert crafted.tolist() == [[2**31, 2**31]]


def test_the_bias_head_adds_its_state_to_the_logits_and_learns_by_the_spec(engines):
    """9.9: z' = z + (B * 2^-32), B the state converted to binary64 (rounded to nearest even from 2^53 on), then 9.4's
    table from z'; then b -= (f * Rb) >> 32 on the rows named and b_t += Rb. Rows that share a state row, a zero row,
    states past 2^53 (where the conversion rounds) and near 2^62, of either sign."""
    vocab, total = 300, 1 << TOTAL_BITS
    logits = RNG.random((4, vocab)) * 20 - 10
    bias = RNG.integers(-2**33, 2**33, (3, vocab))  # a few logits
    bias[1] = 0
    bias[2, :8] = [2**53 + 1, -(2**53 + 1), 2**53 + 3, 2**62 - 1, -(2**62), 3, -3, 2**33 + 1]
    bias[0, 50] = 2**37  # 32 logits up: token 50 takes most of this row's table
    rows, symbols = np.array([2, 0, 1, 0]), np.array([50, 7, 299, 3])
    converted = np.array([[float(int(v)) for v in bias[r]] for r in rows])  # Python's int -> float rounds to even
    assert converted[0, 0] == 2.0**53 and converted[0, 2] == 2.0**53 + 4
    shifted = logits + converted * 2.0**-32
    e = spec_exp(shifted - shifted.max(axis=1, keepdims=True), engines[0].tables.exp2_frac.numpy())
    expected = 1 + (e * (total - vocab)) // e.sum(axis=1, keepdims=True)
    expected[np.arange(4), e.argmax(axis=1)] += total - expected.sum(axis=1)
    assert expected[1, 50] > total // 2
    rate = 858_993_459
    learned = bias.copy()
    for row, table, symbol in zip(rows[:3], expected[:3], symbols[:3]):  # the rows named once each
        learned[row] -= (table * rate) >> TOTAL_BITS
        learned[row, symbol] += rate
    for ops in engines:
        got = ops.frequencies(torch.from_numpy(logits.copy()), TOTAL_BITS, torch.from_numpy(bias.copy()), rows).numpy()
        assert np.array_equal(got, expected)
        state = torch.from_numpy(bias.copy())
        ops.update_bias(state, rows[:3], torch.from_numpy(got[:3]), symbols[:3], rate, TOTAL_BITS)
        assert np.array_equal(state.numpy(), learned)
        assert np.array_equal(ops.frequencies(torch.from_numpy(logits.copy()), TOTAL_BITS, torch.zeros(1, vocab,
                              dtype=torch.int64), np.zeros(4, dtype=np.int64)).numpy(),
                              _frequencies(engines, logits, engines[0].tables.exp2_frac))


def _frequencies(engines, logits: np.ndarray, exp2_frac: torch.Tensor) -> np.ndarray:
    """Both implementations' frequencies with the given EXP table; they must agree."""
    tables = Tables(exp2_frac, *(tiny_model().tensors[f"table.{n}"] for n in ("sigmoid", "rope_cos", "rope_sin")))
    got = TorchOps(CPU, tables).frequencies(torch.from_numpy(logits.copy()), TOTAL_BITS).numpy()
    assert np.array_equal(CompiledOps(CPU, tables).frequencies(torch.from_numpy(logits.copy()), TOTAL_BITS).numpy(), got)
    return got


def spec_attention_row(q, factor, k, ks, v, vs, seen, exp_table):
    """One query row of 9.3 step 3 over the keys seen (a count: keys < seen; or their indices): q (hd,) integers, k
    (hd, keys) and v (keys, hd) int16."""
    seen = np.arange(seen) if isinstance(seen, int) else seen
    scores = (q.astype(np.int64) @ k[:, seen].astype(np.int64)).astype(np.float64)
    z = (scores * factor) * ks[seen]
    p = spec_exp(z - z.max(), exp_table, extra_shift=15).astype(np.float64)
    w = p * vs[seen]
    m = w.max() if w.max() > 0 else 1.0
    wq = np.rint(w * (QMAX / m))
    values = (wq.astype(np.int64) @ v[seen].astype(np.int64)).astype(np.float64)
    return values * ((m / QMAX) / p.sum()), values * (m / QMAX) / p.sum()


def test_attention_follows_the_spec_order(engines):
    """z = (S * (qs / sqrt(hd))) * ks, p = EXP15, quantized weights, out = sum * ((ws) / sum p): both implementations
    against a literal row-by-row computation; out = sum * ws / sum p (left to right) would differ."""
    batch, heads, keys, hd, rows = 1, 2, 160, 16, 3
    k = RNG.integers(-QMAX, QMAX + 1, (batch, heads, hd, keys)).astype(np.int16)
    v = RNG.integers(-QMAX, QMAX + 1, (batch, heads, keys, hd)).astype(np.int16)
    ks, vs = RNG.random((batch, heads, keys, 1)) * 1e-4, RNG.random((batch, heads, keys, 1)) * 1e-4
    block = RNG.integers(-QMAX, QMAX + 1, (batch, heads, rows, hd)).astype(np.float64)
    factor = RNG.random((batch, heads, rows)) * 1e-5
    positions = torch.tensor([keys - 1])
    exp_table = engines[0].tables.exp2_frac.numpy()
    expected, other = np.empty((batch, heads, rows, hd)), np.empty((batch, heads, rows, hd))
    for h in range(heads):
        for r in range(rows):
            expected[0, h, r], other[0, h, r] = spec_attention_row(block[0, h, r], factor[0, h, r], k[0, h], ks[0, h, :, 0],
                                                                   v[0, h], vs[0, h, :, 0], keys, exp_table)
    assert not np.array_equal(expected, other)
    cache = [torch.from_numpy(x) for x in (k, ks, v, vs)]
    for attention in every_attention(*engines, *cache).values():
        assert np.array_equal(attention(torch.from_numpy(block), torch.from_numpy(factor), positions).numpy(), expected)


def test_attention_with_a_span_sees_the_prefix_and_the_span_only(engines):
    """9.5's span: the query in slot s sees the keys below `kept` (the prefix) and those in s - S < j <= s. Both
    implementations against literal rows over exactly those keys: decoding one slot (the loops), and blocks of slots
    (a block's rows see different ranges) where the span starts inside the prefix, after it, and at slot 0."""
    batch, heads, keys, hd, group = 1, 2, 120, 16, 3
    k = RNG.integers(-QMAX, QMAX + 1, (batch, heads, hd, keys)).astype(np.int16)
    v = RNG.integers(-QMAX, QMAX + 1, (batch, heads, keys, hd)).astype(np.int16)
    ks, vs = RNG.random((batch, heads, keys, 1)) * 1e-4, RNG.random((batch, heads, keys, 1)) * 1e-4
    cache = [torch.from_numpy(x) for x in (k, ks, v, vs)]
    exp_table = engines[0].tables.exp2_frac.numpy()
    for kept, span, slots in ((5, 20, [keys - 1]), (5, 20, [40]), (5, 20, range(10, 60)), (0, 7, range(0, 30)),
                              (3, 1, [keys - 1]), (3, 200, range(90, 120)), (1, 40, range(60, 70))):
        slots = torch.tensor(list(slots))
        rows = group * len(slots)  # (head in group, slot)
        block = RNG.integers(-QMAX, QMAX + 1, (batch, heads, rows, hd)).astype(np.float64)
        factor = RNG.random((batch, heads, rows)) * 1e-5
        expected = np.empty((batch, heads, rows, hd))
        for h in range(heads):
            for r in range(rows):
                s = int(slots[r % len(slots)])
                seen = np.array([j for j in range(s + 1) if j < kept or j > s - span])
                expected[0, h, r] = spec_attention_row(block[0, h, r], factor[0, h, r], k[0, h], ks[0, h, :, 0], v[0, h],
                                                       vs[0, h, :, 0], seen, exp_table)[0]
        for name, attention in every_attention(*engines, *cache).items():
            got = attention(torch.from_numpy(block), torch.from_numpy(factor), slots, kept, span).numpy()
            assert np.array_equal(got, expected), (name, kept, span, slots[0])


def halves_that_depend_on_the_division(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pairs m > x where x * (QMAX / m) and x * (QMAX * (1 / m)) round to different integers: the product
    lands on a half (or next to one) and the reciprocal's extra rounding moves it across."""
    m = np.arange(1000, 3000, dtype=np.float64)[:, None]
    x = np.arange(1, 1000, dtype=np.float64)[None, :]
    rows, cols = np.nonzero(np.rint(x * (QMAX / m)) != np.rint(x * (QMAX * (1 / m))))
    assert len(rows) >= count
    return m[rows[:count], 0], x[0, cols[:count]]


def test_weights_are_quantized_with_the_reciprocal():
    """9.2: a compiled weight row is q = round(w * (127 * (1 / m))), the reciprocal then a product, as the reference
    compiler has always done; here rows where the one-division reading gives other integers."""
    m = np.arange(1, 4000, dtype=np.float64)[:, None] / 64
    w = np.arange(1, 256, dtype=np.float64)[None, :] / 128
    w = np.broadcast_to(w, (len(m), w.shape[1]))
    keep = (w < m).all(axis=1)
    rows = np.concatenate([m[keep], w[keep], -w[keep] / 3], axis=1)
    expected = np.rint(rows * (127 * (1 / m[keep])))
    assert not np.array_equal(expected, np.rint(rows * (127 / m[keep])))
    q, scale = compiler.quantize_weight(torch.from_numpy(rows))
    assert np.array_equal(q.numpy(), expected) and np.array_equal(scale.numpy(), m[keep, 0] / 127)


def test_layer_norm_follows_the_spec_order():
    """LayerNorm (GPT-2): y = d * x - sum x in integers; the variance from y's sum of squares (after the shift) over
    d^3; n = ((y / (sigma * (d * 2^R))) * gain) + bias, then quantize. A product with the reciprocal of
    sigma * (d * 2^R) would differ."""
    d = 48
    x = RNG.integers(-2**28, 2**28, (32, d)).astype(np.int64) >> RNG.integers(0, 20, (32, 1))
    x[0] = 777  # constant: y = 0 everywhere
    gain, bias = RNG.normal(1, 0.1, d), RNG.normal(0, 0.1, d)
    y = x * d - x.sum(axis=1, keepdims=True)
    peak = np.abs(y).max(axis=1, keepdims=True).astype(np.float64)
    shift = np.maximum(np.frexp(peak)[1] - 24, 0)
    variance = np.ldexp(((y >> shift) ** 2).sum(axis=1, keepdims=True).astype(np.float64), 2 * shift - 32) / float(d**3)
    unit = np.sqrt(variance + 1e-5) * float(d << 16)
    n = ((y.astype(np.float64) / unit) * gain) + bias
    m = np.abs(n).max(axis=1, keepdims=True)
    expected_q, expected_s = np.rint(n * (QMAX / m)), m / QMAX
    other = (y.astype(np.float64) * (1 / unit) * gain) + bias  # the scales show it (q rounds the difference away)
    assert not np.array_equal(np.abs(other).max(axis=1, keepdims=True) / QMAX, expected_s)
    for ops in (architectures.engine(tiny_gpt2(), compiled_kernels=c).ops for c in (True, False)):
        q, s = ops.layer_norm_quantize(torch.from_numpy(x), torch.from_numpy(gain), torch.from_numpy(bias), 1e-5, 16)
        assert np.array_equal(q.numpy(), expected_q) and np.array_equal(s.numpy(), expected_s)


def test_quantize_divides_once(engines):
    """9.3: c = QMAX / m is one correctly rounded division. torch computes `number / tensor` as number * (1 / tensor),
    two roundings, and a path written that way decoded 64 KiB of text differently from the other."""
    m, x = halves_that_depend_on_the_division(64)
    rows = np.stack([m, x, -x / 2], axis=1)
    expected_q, expected_s = np.rint(rows * (QMAX / m[:, None])), m[:, None] / QMAX
    assert not np.array_equal(expected_q, np.rint(rows * (QMAX * (1 / m[:, None]))))
    for ops in engines:
        q, s = ops.quantize(torch.from_numpy(rows))
        assert np.array_equal(q.numpy(), expected_q) and np.array_equal(s.numpy(), expected_s)


def test_attention_weights_divide_once(engines):
    """The same for the softmax weights: each head sees two keys with equal scores (p = 2^15 each) and value scales
    that make its weights exactly (m, x) of such a pair, so only c = QMAX / m decides the second weight."""
    m, x = halves_that_depend_on_the_division(16)
    heads, hd = len(m), 8
    k, ks = np.ones((1, heads, hd, 2), dtype=np.int16), np.ones((1, heads, 2, 1))
    v = RNG.integers(-QMAX, QMAX + 1, (1, heads, 2, hd)).astype(np.int16)
    vs = np.stack([m, x], axis=1)[None, :, :, None] / 2**15
    block, factor = np.ones((1, heads, 1, hd)), np.ones((1, heads, 1))
    exp_table = engines[0].tables.exp2_frac.numpy()
    expected = np.stack([spec_attention_row(block[0, h, 0], 1.0, k[0, h], ks[0, h, :, 0], v[0, h], vs[0, h, :, 0], 2,
                                            exp_table)[0] for h in range(heads)])[None, :, None]
    cache = [torch.from_numpy(a) for a in (k, ks, v, vs)]
    for attention in every_attention(*engines, *cache).values():
        assert np.array_equal(attention(torch.from_numpy(block), torch.from_numpy(factor), torch.tensor([1])).numpy(),
                              expected)


def test_gated_activation_and_rope_follow_the_spec_order(engines):
    """h = SILU(gate) * up with SILU(x) = sigma * x and sigma = ((dS * f) + S) / 2^30; RoPE r0 = (x0 C) - (x1 N),
    r1 = (x0 N) + (x1 C) with C, N the tables over 2^30."""
    sigmoid = engines[1].tables.gate.numpy()
    gate = RNG.normal(0, 6, (8, 160))
    up = RNG.normal(0, 1, (8, 160))
    t = (np.clip(gate, -16, 16) + 16) * 256
    i = np.minimum(np.floor(t), 8191)
    index = i.astype(np.int64)
    sigma = (((sigmoid[index + 1] - sigmoid[index]) * (t - i)) + sigmoid[index]) / 2**30
    h = (sigma * gate) * up
    assert not np.array_equal(h, sigma * (gate * up))
    m = np.abs(h).max(axis=1, keepdims=True)
    expected_q, expected_s = np.rint(h * (QMAX / m)), m / QMAX
    for ops in engines:
        q, s = ops.gate_quantize(torch.from_numpy(gate.copy()), torch.from_numpy(up))
        assert np.array_equal(q.numpy(), expected_q) and np.array_equal(s.numpy(), expected_s)

    x = RNG.normal(0, 50, (1, 5, 4, 16))  # (B, T, H, hd) at positions 100..104
    cos = tiny_model().tensors["table.rope_cos"].numpy()[100:105, None, :] / 2**30
    sin = tiny_model().tensors["table.rope_sin"].numpy()[100:105, None, :] / 2**30
    x0, x1 = x[0, ..., 0::2], x[0, ..., 1::2]
    expected = np.stack([(x0 * cos) - (x1 * sin), (x0 * sin) + (x1 * cos)], axis=-1).reshape(5, 4, 16)
    for ops in engines:
        got = ops.rope(torch.from_numpy(x), 100).numpy()  # (B, H, T, hd)
        assert np.array_equal(got[0].transpose(1, 0, 2), expected)

