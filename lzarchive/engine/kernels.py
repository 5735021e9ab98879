"""Engine layer: the exact kernels (SPEC.md section 9.3). Every function here returns values that no implementation
choice can change: reductions only over integers whose partial sums stay exactly representable, elementwise work
only with single correctly rounded binary64 operations, and tables instead of transcendental functions.

Integer-valued tensors are held in float64 (exact below 2^53), int64, or int16 (the KV cache: |q| <= QMAX); the int8
GEMM takes them as int8 halves (q = 256 * hi + lo) and sums the products in int32 below 2^31.
"""

from __future__ import annotations

import math
import os
import warnings

import numba
import numpy as np
import torch

from . import tables

QMAX = 32639  # activations: |q| <= QMAX, so q = 256 * hi + lo with hi, lo in int8 (the fast int8 path)
WMAX = 127  # weights: int8
EXP_TABLE_SHIFTS = 31  # E[i] < 2^31, so shifts of 31 and more give 0
LOG2E = 1.4426950408889634  # the binary64 nearest to log2(e)
EXP_INDEX_SCALE = -LOG2E * tables.EXP2_FRAC_STEPS  # exact: times a power of two
F64 = torch.float64
SIGMOID_RANGE = float(tables.SIGMOID_RANGE)
SIGMOID_STEPS_PER_UNIT = float(tables.SIGMOID_STEPS_PER_UNIT)
TABLE_UNIT = float(1 << tables.TABLE_BITS)


def compiled(**options):
    """numba.njit with numba's on-disk cache where one can be written (next to this file, or the user cache). Where
    neither can (a read-only install and home), each process compiles the kernels again: slower to start, the same
    results."""

    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            warnings.warn("no writable cache for compiled kernels (the package directory and the user cache are "
                          "read-only): compiling them in this process, which takes longer", RuntimeWarning)
            return numba.njit(**options)(function)

    return decorate


def quantize(x: torch.Tensor, dim: int = -1, qmax: int = QMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization along `dim`: q = round(x * (qmax / m)), scale = m / qmax, m = max |x| (1 where 0).

    Returns float64 q (integer-valued, |q| <= qmax) and the float64 scale with `dim` kept as size 1.
    """
    m = x.abs().amax(dim=dim, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    q = torch.round(x * divide(qmax, m))
    return q, divide(m, qmax)


def divide(numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> torch.Tensor:
    """numerator / denominator in one correctly rounded division per element, as SPEC.md 9.3 has every ÷, with a
    number on either side. torch does not divide there: `number / tensor` is number * (1 / tensor) on every device
    and `tensor / number` is tensor * (1 / number) on CUDA (aten's div_true_kernel_cuda), two roundings that are 1 ulp
    off for about a quarter of binary64 inputs and move q wherever x * c lands on a half."""
    if not isinstance(numerator, torch.Tensor):
        numerator = torch.full_like(denominator, numerator)
    if not isinstance(denominator, torch.Tensor):
        denominator = torch.full_like(numerator, denominator)
    return torch.div(numerator, denominator)


def correctly_rounded_sqrt(device: torch.device):
    """A float64 sqrt on `device` that rounds correctly, as SPEC.md 9.3 requires: torch.sqrt where it agrees with
    numpy's (the hardware instruction) on a probe, else numpy's on the CPU. torch 2.13's CPU sqrt is 1 ulp off for
    about 1 % of float64 inputs, 1755.4540978446098 among them."""
    probe = torch.rand(4096, generator=torch.Generator().manual_seed(0), dtype=F64) * 1e4
    probe[0] = 1755.4540978446098
    if torch.equal(torch.sqrt(probe.to(device)).cpu(), torch.from_numpy(np.sqrt(probe.numpy()))):
        return torch.sqrt
    return lambda x: torch.from_numpy(np.sqrt(x.cpu().numpy())).to(x.device)


class IntMatmul:
    """(a @ w.T) * a_scale * w_scale for integer-valued a (|a| <= QMAX) and int8 w, with the product exact, on whichever
    path this device supports.

    The int8 path splits a into two int8 halves and uses the int8 GEMM (int32 accumulation, |partial sums| < 2^25);
    the float64 path multiplies integers whose partial sums stay below 2^53. Both give the same integers; the int8
    path is used only after a self-check on extreme values agrees with the float64 path. With `compiled` (CPU only)
    the split and the join run in compiled loops (one pass each instead of a dozen small tensor operations).
    """

    def __init__(self, device: torch.device, compiled: bool = False) -> None:
        self.device = device
        self.compiled = compiled
        # LZA_INT8_GEMM=off: the float64 products even where the int8 GEMM is exact (cross-platform proofs)
        self.use_int8 = os.environ.get("LZA_INT8_GEMM", "on") != "off" and self._int8_exact()

    def _int8_exact(self) -> bool:
        generator = torch.Generator().manual_seed(0)
        a = torch.randint(-QMAX, QMAX + 1, (40, 1536), generator=generator, dtype=torch.int64).to(F64)
        a[0], a[1] = QMAX, -QMAX
        w = torch.randint(-128, 128, (64, 1536), generator=generator, dtype=torch.int64).to(torch.int8)
        w[0], w[1] = 127, -128
        a, w = a.to(self.device), w.to(self.device)
        try:
            return bool(torch.equal(self._int8(a, w), self._float64(a, w)))
        except (RuntimeError, NotImplementedError):
            return False

    @staticmethod
    def _float64(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return a @ w.to(F64).T

    @staticmethod
    def _halves(rows: int, width: int, device: torch.device) -> torch.Tensor:
        # the int8 GEMM wants more than 16 rows: padding rows are zero
        return (torch.zeros if 2 * rows <= 16 else torch.empty)(max(2 * rows, 17), width, dtype=torch.int8, device=device)

    def _int8(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        shape = a.shape
        flat = a.reshape(-1, shape[-1]).to(torch.int32)
        rows = flat.shape[0]
        lo = torch.bitwise_and(flat + 128, 255) - 128  # two's complement: the same as (flat + 128) mod 256 - 128
        hi = torch.bitwise_right_shift(flat - lo, 8)  # exact division by 256
        halves = self._halves(rows, shape[-1], a.device)
        halves[:rows], halves[rows : 2 * rows] = hi, lo  # one GEMM for both halves
        acc = torch._int_mm(halves, w.T).to(F64)
        # 256 * hi + lo: integers below 2^34, exact however the add is evaluated
        return torch.add(acc[rows : 2 * rows], acc[:rows], alpha=256).reshape(*shape[:-1], w.shape[0])

    def linear(self, a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
        """(a @ w.T) * a_scale * w_scale: a (..., k), a_scale (..., 1), w (n, k) int8, w_scale (n,)."""
        if not self.use_int8:
            return self._float64(a, w) * a_scale * w_scale
        if not self.compiled:
            return self._int8(a, w) * a_scale * w_scale
        flat = a.reshape(-1, a.shape[-1])
        halves = self._halves(len(flat), flat.shape[1], a.device)
        split_halves(flat.numpy(), halves.numpy())
        acc = torch._int_mm(halves, w.T)
        out = torch.empty(len(flat), w.shape[0], dtype=F64)
        join_halves(acc.numpy(), a_scale.reshape(-1).numpy(), w_scale.numpy(), out.numpy())
        return out.view(*a.shape[:-1], w.shape[0])


@compiled(parallel=True)
def split_halves(a, halves):
    """halves[i] = hi, halves[rows + i] = lo with a[i] = 256 * hi + lo, lo in [-128, 127]; |a| <= QMAX keeps hi in
    int8 too."""
    rows, width = a.shape
    for i in numba.prange(rows):
        for j in range(width):
            x = np.int32(a[i, j])
            lo = ((x + 128) & 255) - 128
            halves[i, j] = (x - lo) >> 8
            halves[rows + i, j] = lo


@compiled(parallel=True)
def join_halves(acc, a_scale, w_scale, out):
    """out[i, j] = ((256 * hi + lo) * a_scale[i]) * w_scale[j] from the int32 products of both halves: the exact
    integer (|.| < 2^34), then the two scale products."""
    rows, width = out.shape
    for i in numba.prange(rows):
        for j in range(width):
            out[i, j] = (np.float64(acc[i, j]) * 256.0 + np.float64(acc[rows + i, j])) * a_scale[i] * w_scale[j]


class Tables:
    """The integer tables as tensors on one device."""

    def __init__(self, exp2_frac: torch.Tensor, sigmoid: torch.Tensor, rope_cos: torch.Tensor, rope_sin: torch.Tensor):
        self.exp2_frac = exp2_frac  # (4096,) int64, 2^-30 units
        self._exp_tables: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self.sigmoid = sigmoid.to(F64)  # (8193,) integers in 2^-30 units, held in float64 (exact)
        self.sigmoid_step = self.sigmoid[1:] - self.sigmoid[:-1]  # hi - lo of each interval, exact
        self.rope_cos = rope_cos.to(F64) / (1 << tables.TABLE_BITS)  # exact: integer / power of two
        self.rope_sin = rope_sin.to(F64) / (1 << tables.TABLE_BITS)

    def exp_neg(self, d: torch.Tensor, extra_shift: int = 0, dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """e^d for d <= 0 as an integer in units of 2^-(30 - extra_shift): with y = -d * LOG2E, n = floor(y) and
        f = y - n, the value is E[floor(f * 4096)] >> (n + extra_shift); 0 once n >= 31 (E < 2^31). Returned as
        `dtype` (float64 holds these integers exactly). Overwrites d.

        Computed as one gather from the table of all E[i] >> (n + extra_shift), indexed by k = floor(y * 4096)
        (the same integers: scaling by 4096 is exact, so floor(y * 4096) = 4096 * n + floor(f * 4096))."""
        table = self.shifted(extra_shift, dtype)
        k = d.mul_(EXP_INDEX_SCALE).clamp_(max=float(len(table) - 1))
        return table[k.to(torch.int64)]

    def shifted(self, extra_shift: int, dtype: torch.dtype) -> torch.Tensor:
        """The table exp_neg gathers from: E[i] >> (n + extra_shift) at index 4096 * n + i, then one 0."""
        key = (extra_shift, dtype)
        if key not in self._exp_tables:
            n = torch.arange(EXP_TABLE_SHIFTS - extra_shift, device=self.exp2_frac.device)[:, None]  # then all zero
            shifted = torch.bitwise_right_shift(self.exp2_frac[None, :], n + extra_shift).flatten()
            self._exp_tables[key] = torch.cat([shifted, shifted.new_zeros(1)]).to(dtype)
        return self._exp_tables[key]

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """x * sigmoid(x), sigmoid linearly interpolated in the table as lo + (hi - lo) * f; exact 0 / 1 beyond +-16."""
        t = torch.clamp(x, -tables.SIGMOID_RANGE, tables.SIGMOID_RANGE).add_(tables.SIGMOID_RANGE)
        t.mul_(tables.SIGMOID_STEPS_PER_UNIT)
        i = torch.floor(t).clamp_(max=float(len(self.sigmoid) - 2))
        index = i.to(torch.int64)
        f = t.sub_(i)
        sig = self.sigmoid_step[index].mul_(f).add_(self.sigmoid[index]).div_(1 << tables.TABLE_BITS)
        return sig.mul_(x)


def frequency_table(logits: torch.Tensor, table: Tables, total_bits: int) -> torch.Tensor:
    """Integer frequencies summing to 2^total_bits, every token at least 1 (SPEC.md section 9.4).

    e = exp_neg(z - max z); f = 1 + floor(e * (2^total - V) / sum e); the remainder goes to the first maximal token.
    """
    vocab = logits.shape[-1]
    e = table.exp_neg(logits - logits.amax(dim=-1, keepdim=True))  # int64 <= 2^30
    free = (1 << total_bits) - vocab
    freq = 1 + torch.div(e * free, e.sum(dim=-1, keepdim=True), rounding_mode="floor")
    remainder = (1 << total_bits) - freq.sum(dim=-1, keepdim=True)
    top = e.argmax(dim=-1, keepdim=True)  # argmax returns the first maximal index
    return freq.scatter_add(-1, top, remainder)


# ---------------------------------------------------------------------------------------------- fused CPU row work
# The elementwise steps of quantize, Tables.silu, ExactLlama's RMSNorm and RoPE in compiled loops, one row at a time: the
# same single IEEE operations in the same order as the torch code (numba does not contract a * b + c into an FMA
# without fastmath), one call instead of a dozen tensor operations, each a pass over memory or, when decoding, mostly
# dispatch overhead.


@compiled()
def _quantize_row(x, q):
    """quantize for one row: q = rint(x * (QMAX / m)) (q may be x); returns the scale m / QMAX."""
    m = 0.0
    for j in range(x.shape[0]):
        m = max(m, abs(x[j]))
    if not m > 0:
        m = 1.0
    to_q = QMAX / m
    for j in range(x.shape[0]):
        q[j] = np.rint(x[j] * to_q)
    return m / QMAX


@compiled(parallel=True)
def quantize_rows(x, q, scale):
    """quantize along the last axis of (rows, d) x."""
    for i in numba.prange(x.shape[0]):
        scale[i] = _quantize_row(x[i], q[i])


@compiled(parallel=True)
def norm_quantize_rows(x, weight, eps, residual_bits, q, scale):
    """ExactLlama._norm_quantize for (rows, d) int64 x: q = quantize(x * weight), scale = its scale / (rms * 2^bits),
    with the sum of squares exact in int64 after dropping low bits."""
    rows, d = x.shape
    for i in numba.prange(rows):
        peak = 0
        for j in range(d):
            q[i, j] = np.float64(x[i, j]) * weight[j]
            peak = max(peak, abs(x[i, j]))
        m_scale = _quantize_row(q[i], q[i])
        shift = max(math.frexp(np.float64(peak))[1] - 24, 0)
        sum_sq = 0
        for j in range(d):
            reduced = x[i, j] >> shift
            sum_sq += reduced * reduced
        mean = math.ldexp(np.float64(sum_sq), 2 * shift - 2 * residual_bits) / d
        scale[i] = m_scale / (math.sqrt(mean + eps) * (1 << residual_bits))


@compiled(parallel=True)
def silu_product_quantize_rows(gate, up, sigmoid, sigmoid_step, q, scale):
    """quantize(Tables.silu(gate) * up) along the last axis of (rows, d) gate and up."""
    last = np.float64(sigmoid.shape[0] - 2)
    for i in numba.prange(gate.shape[0]):
        row = q[i]
        for j in range(gate.shape[1]):
            x = gate[i, j]
            t = (min(max(x, -SIGMOID_RANGE), SIGMOID_RANGE) + SIGMOID_RANGE) * SIGMOID_STEPS_PER_UNIT
            index = min(np.floor(t), last)
            k = int(index)
            sig = (sigmoid_step[k] * (t - index) + sigmoid[k]) / TABLE_UNIT
            row[j] = (sig * x) * up[i, j]
        scale[i] = _quantize_row(row, row)


@compiled(parallel=True)
def rope_rows(x, start, cos, sin, out):
    """ExactLlama._rope for x (B, T, H, hd) at positions start + t: out[b, h, t] holds each pair (x0, x1) of x[b, t, h]
    as (x0 * cos - x1 * sin, x0 * sin + x1 * cos)."""
    batch, steps, heads, hd = x.shape
    for n in numba.prange(batch * steps):
        b, t = n // steps, n % steps
        c, s = cos[start + t], sin[start + t]
        for h in range(heads):
            for i in range(hd // 2):
                x0, x1 = x[b, t, h, 2 * i], x[b, t, h, 2 * i + 1]
                out[b, h, t, 2 * i] = x0 * c[i] - x1 * s[i]
                out[b, h, t, 2 * i + 1] = x0 * s[i] + x1 * c[i]


# ---------------------------------------------------------------------------------------------- fused CPU attention
# The same arithmetic as ExactLlama's torch attention, in compiled loops: one pass per row instead of a dozen tensor
# passes, and no tiny batched GEMMs when decoding. Every operation is a single IEEE operation in the order SPEC.md
# 9.3 gives. The integer dot products accumulate in whatever order the loops give: their sums are exact below 2^53.


@compiled(parallel=True)
def attention_scores(q, k_t, z):
    """z[b, h, r, j] = q[b, h, r] · k[b, h, j] for j < z.shape[-1], with k_t[b, h] = kᵀ (head_dim, capacity) int16: exact
    integer sums, accumulated along head_dim four components at a time, vectorized across keys."""
    batch, heads, rows, keys = z.shape
    hd = q.shape[-1]
    for i in numba.prange(batch * heads):
        b, h = i // heads, i % heads
        k = k_t[b, h]
        for r in range(rows):
            row, q_row = z[b, h, r], q[b, h, r]
            row[:] = 0.0
            for d in range(0, hd - 3, 4):  # four components per pass over the row: a quarter of its loads and stores
                k0, k1, k2, k3 = k[d], k[d + 1], k[d + 2], k[d + 3]
                q0, q1, q2, q3 = q_row[d], q_row[d + 1], q_row[d + 2], q_row[d + 3]
                for j in range(keys):
                    row[j] += (q0 * k0[j] + q1 * k1[j]) + (q2 * k2[j] + q3 * k3[j])
            for d in range(hd - hd % 4, hd):
                for j in range(keys):
                    row[j] += q_row[d] * k[d, j]


@compiled()
def _softmax_row(row, seen, row_factor, k_scale, v_scale, exp15):
    """One row of exact scores → row[j] = p_j * v_scale[j] for j < seen (SPEC.md 9.3); returns the largest of them (1
    where none is positive) and Σ p."""
    last = exp15.shape[0] - 1
    top = -np.inf
    for j in range(seen):
        row[j] = (row[j] * row_factor) * k_scale[j]
        top = max(top, row[j])
    p_sum = 0.0
    w_max = 0.0
    for j in range(seen):
        p = exp15[int(min((row[j] - top) * EXP_INDEX_SCALE, last))]
        p_sum += p  # exact: integers below 2^53
        row[j] = p * v_scale[j]
        w_max = max(w_max, row[j])
    if not w_max > 0:
        w_max = 1.0
    return w_max, p_sum


@compiled(parallel=True)
def attention_weights(z, row_factor, k_scale, v_scale, visible, exp15, factor):
    """Scores → quantized softmax weights in place (SPEC.md 9.3), one row at a time. z: (B, H, R, keys) exact scores;
    row_factor: (B, H, R) qs / sqrt(head_dim); k_scale, v_scale: (B, H, keys); visible: (R,) keys row r sees (the
    rest become 0); exp15: EXP15 as a table. Writes wq into z and ws / Σ p into factor (B, H, R)."""
    batch, heads, rows, keys = z.shape
    for i in numba.prange(batch * heads * rows):
        b, h, r = i // (heads * rows), i // rows % heads, i % rows
        row, seen = z[b, h, r], visible[r]
        w_max, p_sum = _softmax_row(row, seen, row_factor[b, h, r], k_scale[b, h], v_scale[b, h], exp15)
        to_q = QMAX / w_max
        for j in range(seen):
            row[j] = np.rint(row[j] * to_q)
        row[seen:] = 0.0
        factor[b, h, r] = (w_max / QMAX) / p_sum


@compiled(parallel=True)
def attention_weights_halves(acc, row_factor, k_scale, v_scale, visible, exp15, halves, factor):
    """attention_weights from and to int8 halves. acc: (B, H, ≥ 2R, 2 keys) int32 products of the query halves (rows
    r and R + r: hi and lo of query r) with the key halves (columns 2j and 2j + 1: hi and lo of key j). Writes the
    halves of wq into halves (B, H, ≥ 2R, keys), rows as in acc, and ws / Σ p into factor (B, H, R)."""
    batch, heads, rows = row_factor.shape
    for i in numba.prange(batch * heads * rows):
        b, h, r = i // (heads * rows), i // rows % heads, i % rows
        seen, hi, lo = visible[r], acc[b, h, r], acc[b, h, rows + r]
        row = np.empty(seen)
        for j in range(seen):  # the exact score: integers below 2^37
            row[j] = 65536.0 * hi[2 * j] + 256.0 * (np.float64(hi[2 * j + 1]) + lo[2 * j]) + lo[2 * j + 1]
        w_max, p_sum = _softmax_row(row, seen, row_factor[b, h, r], k_scale[b, h], v_scale[b, h], exp15)
        to_q = QMAX / w_max
        w_hi, w_lo = halves[b, h, r], halves[b, h, rows + r]
        for j in range(seen):
            x = np.int32(np.rint(row[j] * to_q))
            x_lo = ((x + 128) & 255) - 128
            w_hi[j] = (x - x_lo) >> 8
            w_lo[j] = x_lo
        w_hi[seen:] = 0
        w_lo[seen:] = 0
        factor[b, h, r] = (w_max / QMAX) / p_sum


@compiled(parallel=True)
def interleave_halves(x, out):
    """out[..., 2j] = hi, out[..., 2j + 1] = lo with x[..., j] = 256 * hi + lo, for 4-d int16 x (|x| <= QMAX): the
    halves of a prefix of x's last axis are a prefix of out's."""
    batch, heads, rows, width = x.shape
    for i in numba.prange(batch * heads * rows):
        b, h, r = i // (heads * rows), i // rows % heads, i % rows
        for j in range(width):
            value = np.int32(x[b, h, r, j])
            lo = ((value + 128) & 255) - 128
            out[b, h, r, 2 * j] = (value - lo) >> 8
            out[b, h, r, 2 * j + 1] = lo


@compiled(parallel=True)
def attention_values(w, v, out):
    """out[b, h, r] = Σ_j w[b, h, r, j] · v[b, h, j] with v int16: exact integer sums, accumulated in key order."""
    batch, heads, rows, keys = w.shape
    for i in numba.prange(batch * heads):
        b, h = i // heads, i % heads
        acc = out[b, h]
        acc[:] = 0.0
        for j in range(keys):
            v_row = v[b, h, j]
            for r in range(rows):
                weight = w[b, h, r, j]
                acc_row = acc[r]
                for d in range(v_row.shape[0]):
                    acc_row[d] += weight * v_row[d]


# ---------------------------------------------------------------------------------------------- frequency tables


@compiled(parallel=True)
def frequency_rows(logits, exp_table, total_bits, freq):
    """frequency_table, one row at a time: the same operations in the same order. exp_table: Tables.shifted(0, int64);
    freq: (rows, vocab) int64."""
    rows, vocab = logits.shape
    last = exp_table.shape[0] - 1
    total = 1 << total_bits
    free = total - vocab
    for i in numba.prange(rows):
        row, out = logits[i], freq[i]
        top = -np.inf
        for j in range(vocab):
            top = max(top, row[j])
        e_sum = 0
        best = 0  # the first maximal e
        for j in range(vocab):
            e = exp_table[int(min((row[j] - top) * EXP_INDEX_SCALE, last))]
            out[j] = e
            e_sum += e
            if e > out[best]:
                best = j
        assigned = 0
        for j in range(vocab):
            out[j] = 1 + out[j] * free // e_sum  # e * free < 2^30 * 2^total_bits: exact in int64
            assigned += out[j]
        out[best] += total - assigned


@compiled(parallel=True)
def symbol_starts(freq, symbols, starts):
    """starts[i] = freq[i, 0] + ... + freq[i, symbols[i] - 1]: where each row's symbol interval begins."""
    for i in numba.prange(freq.shape[0]):
        start = 0
        for j in range(symbols[i]):
            start += freq[i, j]
        starts[i] = start


@compiled(parallel=True)
def find_symbols(freq, targets, symbols, starts):
    """symbols[i]: the symbol whose interval [starts[i], starts[i] + freq[i, symbol]) holds targets[i] (below the
    table's total)."""
    for i in numba.prange(freq.shape[0]):
        start, symbol = 0, 0
        while targets[i] >= start + freq[i, symbol]:
            start += freq[i, symbol]
            symbol += 1
        symbols[i], starts[i] = symbol, start
