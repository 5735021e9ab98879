"""Range coder (SPEC.md section 9.1): codes symbols against integer frequency tables; knows nothing of models.

State: `low` (the interval start, with a pending-carry byte cache, as in LZMA's coder) and `range`, both 64-bit.
After every symbol the range is renormalized to more than 2^56 by shifting out bytes, so with a table total of 2^32
the quotient range // total is at least 2^24 and the coding loss per symbol stays below 2^-24 relative.
"""

from __future__ import annotations

import copy

TOTAL_BITS = 32
TOTAL = 1 << TOTAL_BITS
_MASK64 = (1 << 64) - 1
_TOP = 1 << 56
_SHIFT = 56
READ_PAST_END = 16  # zero bytes a decoder may read past the end of a payload; more is damage (SPEC 9.1)


class RangeDecodeError(ValueError):
    """The payload cannot be what an encoder wrote (damaged, truncated, or crafted to run on forever)."""


class RangeEncoder:
    def __init__(self) -> None:
        self.low = 0
        self.range = _MASK64
        self._cache = 0
        self._cache_size = 1  # the first byte out is the initial cache (always 0); the decoder skips it
        self._out = bytearray()
        self._shifts = 0  # renormalization shifts: the decoder reads 8 bytes, then one per shift

    def encode(self, start: int, size: int, total: int = TOTAL) -> None:
        """Code the symbol occupying [start, start + size) of a table summing to total (1 <= size, total <= 2^32)."""
        r = self.range // total
        self.low += r * start
        self.range = r * size
        while self.range < _TOP:
            self.range <<= 8
            self._shifts += 1
            self._shift_low()

    def _shift_low(self) -> None:
        # A byte is final once no carry can reach it: low's top byte is below 0xFF, or a carry has just happened.
        if self.low < (0xFF << _SHIFT) or self.low > _MASK64:
            carry = self.low >> 64
            self._out.append((self._cache + carry) & 0xFF)
            self._out.extend(bytes([(0xFF + carry) & 0xFF]) * (self._cache_size - 1))
            self._cache_size = 0
            self._cache = (self.low >> _SHIFT) & 0xFF
        self._cache_size += 1
        self.low = (self.low << 8) & _MASK64

    def finish(self) -> bytes:
        """Pick the value in [low, low + range) with the most trailing zero bits, emit it, drop trailing zero bytes
        (the decoder reads zeros past the end) but keep enough that it reads at most READ_PAST_END bytes past the end,
        and drop the constant leading cache byte."""
        for bits in range(64, -1, -1):
            mask = (1 << bits) - 1
            value = (self.low + mask) & ~mask
            if value < self.low + self.range:
                break
        self.low = value
        for _ in range(9):
            self._shift_low()
        out = bytes(self._out[1:]).rstrip(b"\0")
        return out.ljust(8 + self._shifts - READ_PAST_END, b"\0")


class RangeDecoder:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self.range = _MASK64
        self.code = 0
        for _ in range(8):
            self.code = (self.code << 8) | self._next()

    def _next(self) -> int:
        pos = self._pos
        self._pos += 1
        if pos < len(self._data):
            return self._data[pos]
        if pos >= len(self._data) + READ_PAST_END:
            raise RangeDecodeError(f"range decoder: reads past the end of its {len(self._data)}-byte payload (damaged)")
        return 0

    def target(self, total: int = TOTAL) -> int:
        """The cumulative-frequency value the next symbol's interval contains; the caller finds the symbol."""
        self._r = self.range // total
        value = self.code // self._r
        if value >= total:
            raise RangeDecodeError("range decoder: code outside the table (damaged payload)")
        return value

    def consume(self, start: int, size: int) -> None:
        """Remove the decoded symbol's interval (same start and size the encoder used)."""
        self.code -= self._r * start
        self.range = self._r * size
        while self.range < _TOP:
            self.range <<= 8
            self.code = ((self.code << 8) | self._next()) & _MASK64

    def copy(self) -> RangeDecoder:
        """An independent decoder at the same point (the payload is shared: it is only read)."""
        return copy.copy(self)

    def check_end(self) -> None:
        """After the last symbol: an encoder's payload ends within the bytes the decoder read (it emits fewer than
        the 8 + one per shift that the decoder reads), so unread bytes are not the encoder's."""
        if self._pos < len(self._data):
            raise RangeDecodeError(f"range decoder: {len(self._data) - self._pos} bytes after the coded symbols (damaged)")
