"""Engine layer: the integer tables that replace every transcendental function (SPEC.md section 9.3).

They are computed with mpmath (software arithmetic, identical on every platform) at 40 digits or more and rounded
half-even to integers, so compiling a model gives the same bytes anywhere.
"""

from __future__ import annotations

import mpmath

TABLE_BITS = 30  # every table value is an integer in units of 2^-30
EXP2_FRAC_STEPS = 4096  # 2^-f sampled at f = i / 4096
SIGMOID_RANGE = 16  # sigmoid sampled on [-16, 16] ...
SIGMOID_STEPS_PER_UNIT = 256  # ... every 1/256
GATE_POINTS = 2 * SIGMOID_RANGE * SIGMOID_STEPS_PER_UNIT + 1  # rows of the sigmoid and GELU tables
DIGITS = 40


def _to_int(value: mpmath.mpf) -> int:
    return int(mpmath.nint(mpmath.ldexp(value, TABLE_BITS)))  # nint: half to even


def _grid() -> list[mpmath.mpf]:
    """x = -16 + i/256, i = 0 .. 8192: the points of the sigmoid and GELU tables."""
    return [mpmath.mpf(i) / SIGMOID_STEPS_PER_UNIT - SIGMOID_RANGE for i in range(GATE_POINTS)]


def exp2_frac_table() -> list[int]:
    """E[i] = round(2^30 * 2^(-i/4096)), i = 0 .. 4095."""
    with mpmath.workdps(DIGITS):
        return [_to_int(mpmath.power(2, -mpmath.mpf(i) / EXP2_FRAC_STEPS)) for i in range(EXP2_FRAC_STEPS)]


def sigmoid_table() -> list[int]:
    """S[i] = round(2^30 / (1 + e^-x)), x = -16 + i/256, i = 0 .. 8192."""
    with mpmath.workdps(DIGITS):
        return [_to_int(1 / (1 + mpmath.exp(-x))) for x in _grid()]


def gelu_table() -> list[int]:
    """G[i] = round(2^30 * phi(x)), x = -16 + i/256, i = 0 .. 8192 (the sigmoid table's grid), with GELU's tanh form
    GELU(x) = x * phi(x): phi(x) = (1 + tanh(z)) / 2 = 1 / (1 + e^(-2z)), z = sqrt(2/pi) * (x + 0.044715 * x^3)."""
    with mpmath.workdps(DIGITS):
        root, c = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf("0.044715")
        return [_to_int(1 / (1 + mpmath.exp(-2 * root * (x + c * x**3)))) for x in _grid()]


def rope_tables(positions: int, head_dim: int, theta: float) -> tuple[list[list[int]], list[list[int]]]:
    """cos and sin of p * theta^(-2j/head_dim) for p < positions, j < head_dim/2, as 2^-30 integers."""
    with mpmath.workdps(DIGITS + 10):
        # theta: the binary64 value, exactly
        steps = [mpmath.power(mpmath.mpf(theta), -mpmath.mpf(2 * j) / head_dim) for j in range(head_dim // 2)]
        step = [(mpmath.cos(f), mpmath.sin(f)) for f in steps]
        current = [(mpmath.mpf(1), mpmath.mpf(0)) for _ in steps]
        cos_rows, sin_rows = [], []
        for _ in range(positions):
            cos_rows.append([_to_int(c) for c, _ in current])
            sin_rows.append([_to_int(s) for _, s in current])
            # rotate by one step: exact angle addition at 50 digits keeps the drift far below 2^-30
            current = [(c * sc - s * ss, s * sc + c * ss) for (c, s), (sc, ss) in zip(current, step)]
        return cos_rows, sin_rows
