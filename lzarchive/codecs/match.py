"""The lm codec's match model (SPEC.md 9.8, format 2.2): the longest earlier repeat of the chunk's last tokens predicts
the next one, and its weight in each (match length, model confidence) bucket is estimated from how often such guesses
came true there against how likely the model found them. Integers throughout, so every decoder mixes the same tables.

Machine-written text repeats whole lines further back than the model's window reaches; the model alone cannot see
them there."""

from __future__ import annotations

import numpy as np

from ..engine.kernels import mixed_cumulative

MIN_MATCH, MAX_MATCH = 2, 32  # match lengths, in tokens
CANDIDATES = 256  # the latest earlier occurrences of the last two tokens that a guess is chosen from
LENGTH_BUCKETS = 8  # match lengths 2..7 apart, 8 and longer together
CONFIDENCE_BUCKETS = 4  # -log2 of the model's probability of the guess: 0, 1, 2, 3 and more
PRIOR = 2  # misses assumed in every bucket before its first guess: a new bucket trusts a guess little
WEIGHT_BITS = 16


class MatchFinder:
    """A chunk's tokens so far and where each pair of tokens occurred; guess() → (token, length) or None for the next
    position, then push(token)."""

    def __init__(self) -> None:
        self.tokens = np.zeros(1024, dtype=np.int64)
        self.count = 0
        self.after: dict[tuple[int, int], list[int]] = {}  # a pair of tokens → the indexes after its occurrences

    def guess(self) -> tuple[int, int] | None:
        """Among the latest CANDIDATES occurrences of the last two tokens, the one whose run of equal tokens before
        it matches the end of the chunk so far longest (up to MAX_MATCH), the latest among equals: the token after it
        and that length."""
        i, tokens = self.count, self.tokens
        found = self.after.get((int(tokens[i - 2]), int(tokens[i - 1]))) if i >= MIN_MATCH else None
        if not found:
            return None
        after = np.array(found[-CANDIDATES:], dtype=np.int64)
        length = np.full(len(after), MIN_MATCH, dtype=np.int64)
        extending = np.ones(len(after), dtype=bool)
        for n in range(MIN_MATCH + 1, MAX_MATCH + 1):
            extending &= after >= n  # a run cannot start before the chunk
            extending[extending] = tokens[after[extending] - n] == tokens[i - n]
            if not extending.any():
                break
            length += extending
        best = len(after) - 1 - int(np.argmax(length[::-1]))  # the latest of the longest
        return int(tokens[after[best]]), int(length[best])

    def push(self, token: int) -> None:
        i = self.count
        if i >= MIN_MATCH:
            self.after.setdefault((int(self.tokens[i - 2]), int(self.tokens[i - 1])), []).append(i)
        if i == len(self.tokens):
            self.tokens = np.concatenate([self.tokens, np.zeros_like(self.tokens)])
        self.tokens[i] = token
        self.count += 1

    def copy(self) -> MatchFinder:
        other = MatchFinder()
        other.tokens, other.count = self.tokens.copy(), self.count
        other.after = {pair: list(where) for pair, where in self.after.items()}
        return other


def guesses(tokens: list[int]) -> list[tuple[int, int] | None]:
    """MatchFinder.guess() at every position of a chunk's tokens: what a coder needs before the model's tables."""
    finder, out = MatchFinder(), []
    for token in tokens:
        out.append(finder.guess())
        finder.push(token)
    return out


class MatchWeights:
    """Per (length, confidence) bucket: guesses, hits, and the sum of the model's frequencies of the guesses."""

    def __init__(self, total_bits: int) -> None:
        self.total_bits = total_bits
        self.buckets: dict[tuple[int, int], list[int]] = {}

    def _bucket(self, length: int, guess_freq: int) -> tuple[int, int]:
        confidence = min(CONFIDENCE_BUCKETS - 1, self.total_bits - guess_freq.bit_length())
        return min(length, LENGTH_BUCKETS) - MIN_MATCH, confidence

    def weight(self, length: int, guess_freq: int) -> int:
        """Q in [0, 2^16): the guess's share, (hits - expected hits) / (guesses + PRIOR - expected hits) in its bucket,
        the expectation being the model's own probabilities of the guesses."""
        guessed, hits, mass = self.buckets.get(self._bucket(length, guess_freq), (0, 0, 0))
        total = 1 << self.total_bits
        return (max(0, hits * total - mass) << WEIGHT_BITS) // ((guessed + PRIOR) * total - mass)

    def update(self, length: int, guess_freq: int, hit: bool) -> None:
        bucket = self.buckets.setdefault(self._bucket(length, guess_freq), [0, 0, 0])
        bucket[0] += 1
        bucket[1] += hit
        bucket[2] += guess_freq

    def copy(self) -> MatchWeights:
        other = MatchWeights(self.total_bits)
        other.buckets = {key: list(value) for key, value in self.buckets.items()}
        return other


class MatchModel:
    """A chunk's match model as a decoder runs it, one position at a time: guess(), then weight() once the model's
    table is known, then update() with the token that came."""

    def __init__(self, total_bits: int) -> None:
        self.finder, self.weights = MatchFinder(), MatchWeights(total_bits)
        self.current: tuple[int, int] | None = None

    def guess(self) -> int | None:
        self.current = self.finder.guess()
        return self.current[0] if self.current else None

    def weight(self, guess_freq: int) -> int:
        return self.weights.weight(self.current[1], guess_freq)

    def update(self, token: int, guess_freq: int) -> None:
        if self.current is not None:
            self.weights.update(self.current[1], guess_freq, token == self.current[0])
        self.finder.push(token)

    def copy(self) -> MatchModel:
        other = MatchModel(self.weights.total_bits)
        other.finder, other.weights, other.current = self.finder.copy(), self.weights.copy(), self.current
        return other


def mix_factors(weight: int, vocab: int, total_bits: int) -> tuple[int, int]:
    """K = 2^16 - Q and Δ = R - (R K) // 2^16 (R = 2^total_bits - vocab) of a weight Q: with them,
    kernels.mixed_cumulative gives the mixed table (SPEC.md 9.8), every symbol keeping at least 1 and the guess
    receiving the Δ the others gave up."""
    keep = (1 << WEIGHT_BITS) - weight
    spare = (1 << total_bits) - vocab
    return keep, spare - ((spare * keep) >> WEIGHT_BITS)


def mix_interval(start: int, size: int, token: int, guess: int, weight: int, vocab: int, total_bits: int):
    """The coded token's (start, size) in the mixed table, from its (start, size) in the model's."""
    keep, given = mix_factors(weight, vocab, total_bits)
    lo = mixed_cumulative(start, token, guess, keep, given, WEIGHT_BITS)
    hi = mixed_cumulative(start + size, token + 1, guess, keep, given, WEIGHT_BITS)
    return lo, hi - lo
