"""Engine layer: the integer tables that replace every transcendental function (SPEC.md section 9.3).

They are computed with Python's decimal module (software arithmetic, identical on every platform) at 40 digits and
rounded half-even to integers, so compiling a model gives the same bytes anywhere.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, getcontext, localcontext

TABLE_BITS = 30  # every table value is an integer in units of 2^-30
EXP2_FRAC_STEPS = 4096  # 2^-f sampled at f = i / 4096
SIGMOID_RANGE = 16  # sigmoid sampled on [-16, 16] ...
SIGMOID_STEPS_PER_UNIT = 256  # ... every 1/256


def _to_int(value: Decimal) -> int:
    return int((value * (1 << TABLE_BITS)).to_integral_value(rounding=ROUND_HALF_EVEN))


def exp2_frac_table() -> list[int]:
    """E[i] = round(2^30 * 2^(-i/4096)), i = 0 .. 4095."""
    with localcontext() as ctx:
        ctx.prec = 40
        ln2 = Decimal(2).ln()
        return [_to_int((-(Decimal(i) / EXP2_FRAC_STEPS) * ln2).exp()) for i in range(EXP2_FRAC_STEPS)]


def sigmoid_table() -> list[int]:
    """S[i] = round(2^30 / (1 + e^-x)), x = -16 + i/256, i = 0 .. 8192."""
    with localcontext() as ctx:
        ctx.prec = 40
        count = 2 * SIGMOID_RANGE * SIGMOID_STEPS_PER_UNIT + 1
        return [_to_int(1 / (1 + (-(Decimal(i) / SIGMOID_STEPS_PER_UNIT - SIGMOID_RANGE)).exp())) for i in range(count)]


def gelu_table() -> list[int]:
    """G[i] = round(2^30 * phi(x)), x = -16 + i/256, i = 0 .. 8192 (the sigmoid table's grid), with GELU's tanh form
    GELU(x) = x * phi(x): phi(x) = (1 + tanh(z)) / 2 = 1 / (1 + e^(-2z)), z = sqrt(2/pi) * (x + 0.044715 * x^3)."""
    with localcontext() as ctx:
        ctx.prec = 40
        root = (2 / _pi()).sqrt()
        count = 2 * SIGMOID_RANGE * SIGMOID_STEPS_PER_UNIT + 1
        grid = (Decimal(i) / SIGMOID_STEPS_PER_UNIT - SIGMOID_RANGE for i in range(count))
        return [_to_int(1 / (1 + (-2 * root * (x + Decimal("0.044715") * x * x * x)).exp())) for x in grid]


def _cos_sin(angle: Decimal) -> tuple[Decimal, Decimal]:
    """Taylor series after reduction to [-pi, pi]; the context precision bounds the error."""
    pi = _pi()
    two_pi = 2 * pi
    angle = angle - two_pi * (angle / two_pi).to_integral_value(rounding=ROUND_HALF_EVEN)
    cos, sin, term, n = Decimal(0), Decimal(0), Decimal(1), 0
    while True:
        if n % 4 == 0:
            cos += term
        elif n % 4 == 1:
            sin += term
        elif n % 4 == 2:
            cos -= term
        else:
            sin -= term
        n += 1
        term = term * angle / n
        if abs(term) < Decimal(10) ** -(angle.adjusted() + 45) and n > 2:
            return cos, sin


def _pi() -> Decimal:
    """Machin's formula, at the current precision."""
    def arctan_inv(x: int) -> Decimal:
        total, term, n, x2 = Decimal(0), Decimal(1) / x, 1, x * x
        tiny = Decimal(10) ** -(getcontext().prec + 5)
        while term > tiny:
            total += term / n if n % 4 == 1 else -term / n
            term /= x2
            n += 2
        return total

    return 4 * (4 * arctan_inv(5) - arctan_inv(239))


def rope_tables(positions: int, head_dim: int, theta: float) -> tuple[list[list[int]], list[list[int]]]:
    """cos and sin of p * theta^(-2j/head_dim) for p < positions, j < head_dim/2, as 2^-30 integers."""
    with localcontext() as ctx:
        ctx.prec = 50
        base = Decimal(theta)  # the binary64 value of theta, exactly
        freqs = [(-(Decimal(2 * j) / head_dim) * base.ln()).exp() for j in range(head_dim // 2)]
        step = [_cos_sin(f) for f in freqs]
        cos_rows, sin_rows = [], []
        current = [(Decimal(1), Decimal(0)) for _ in freqs]
        for _ in range(positions):
            cos_rows.append([_to_int(c) for c, _ in current])
            sin_rows.append([_to_int(s) for _, s in current])
            # rotate by one step: exact angle addition at 50 digits keeps the drift far below 2^-30
            current = [(c * sc - s * ss, s * sc + c * ss) for (c, s), (sc, ss) in zip(current, step)]
        return cos_rows, sin_rows
