"""The lm codec's match model (SPEC.md 9.8, format 2.2): the longest earlier repeat of the chunk's last tokens predicts
the next one, and its weight in each (match length, model confidence) bucket is estimated from how often such guesses
came true there against how likely the model found them. Integers throughout, so every decoder mixes the same tables.

Machine-written text repeats whole lines further back than the model's window reaches; the model alone cannot see
them there."""

from __future__ import annotations

import numpy as np

from ..engine.kernels import compiled, mixed_cumulative

MIN_MATCH, MAX_MATCH = 2, 32  # match lengths, in tokens
CANDIDATES = 256  # the latest earlier occurrences of the last two tokens that a guess is chosen from
LENGTH_BUCKETS = 8  # match lengths 2..7 apart, 8 and longer together
CONFIDENCE_BUCKETS = 4  # -log2 of the model's probability of the guess: 0, 1, 2, 3 and more
PRIOR = 2  # misses assumed in every bucket before its first guess: a new bucket trusts a guess little
WEIGHT_BITS = 16


class MatchFinder:
    """A chunk's tokens so far and, for each pair of tokens, where it occurred: guess() → (token, length) or None for
    the next position, then push(token). Arrays that grow as the chunk does, worked on by compiled loops: the decoder
    calls them for every token of every chunk, which on a GPU is the host's work per token."""

    def __init__(self, capacity: int = 1024) -> None:
        self.count = 0
        # int32: tokens and indexes of a chunk (fewer than 2^24) fit, in 8 bytes per token and 24-48 for the table
        self.tokens = np.zeros(capacity, dtype=np.int32)
        # earlier[j]: the previous index with the same pair of tokens before it as j, or -1 (j >= MIN_MATCH)
        self.earlier = np.full(capacity, -1, dtype=np.int32)
        self._new_table()

    def _new_table(self) -> None:
        """A hash table with a power of two slots, at most half of them used: a pair of tokens → the latest index
        after it."""
        slots = 1 << (2 * len(self.tokens)).bit_length()
        self.pairs = np.full(slots, -1, dtype=np.int64)
        self.latest = np.zeros(slots, dtype=np.int32)

    def guess(self) -> tuple[int, int] | None:
        """Among the latest CANDIDATES occurrences of the last two tokens, the one whose run of equal tokens before
        it matches the end of the chunk so far longest (up to MAX_MATCH), the latest among equals: the token after it
        and that length."""
        token, length = _guess(self.tokens, self.count, self.earlier, self.pairs, self.latest)
        return None if length == 0 else (token, length)

    def push(self, token: int) -> None:
        if self.count == len(self.tokens):
            self._grow()
        _push(self.tokens, self.count, self.earlier, self.pairs, self.latest, token)
        self.count += 1

    def _grow(self) -> None:
        more = max(1, len(self.tokens))  # twice the room
        self.tokens = np.concatenate([self.tokens, np.zeros(more, dtype=np.int32)])
        self.earlier = np.concatenate([self.earlier, np.full(more, -1, dtype=np.int32)])
        self._new_table()
        _index_pairs(self.tokens, self.count, self.pairs, self.latest)

    def copy(self) -> MatchFinder:
        other = MatchFinder(0)
        other.count = self.count
        other.tokens, other.earlier = self.tokens.copy(), self.earlier.copy()
        other.pairs, other.latest = self.pairs.copy(), self.latest.copy()
        return other


@compiled()
def _slot(pairs, pair):
    """Where `pair` is in the hash table (its size a power of two), or the empty slot where it goes: a multiplicative
    hash folded onto its low bits, linear probing."""
    mixed = np.uint64(pair) * np.uint64(0x9E3779B97F4A7C15)
    slot = np.int64((mixed ^ (mixed >> np.uint64(29))) & np.uint64(len(pairs) - 1))
    while pairs[slot] != -1 and pairs[slot] != pair:
        slot = (slot + 1) & (len(pairs) - 1)
    return slot


@compiled()
def _pair(tokens, j):
    """The pair of tokens before index j as one key (tokens are below 2^31)."""
    return (np.int64(tokens[j - 2]) << 32) | np.int64(tokens[j - 1])


@compiled()
def _latest(tokens, j, pairs, latest):
    """The pair of tokens before index j, its slot, and the latest index after that pair so far, or -1."""
    pair = _pair(tokens, j)
    slot = _slot(pairs, pair)
    return pair, slot, latest[slot] if pairs[slot] != -1 else -1


@compiled()
def _record(tokens, j, pairs, latest):
    """Makes index j the latest after its pair of tokens; returns the one that was, or -1."""
    pair, slot, before = _latest(tokens, j, pairs, latest)
    pairs[slot], latest[slot] = pair, j
    return before


@compiled()
def _push(tokens, count, earlier, pairs, latest, token):
    """Appends token at index count (< len(tokens)), recording index count under the pair before it."""
    if count >= MIN_MATCH:
        earlier[count] = _record(tokens, count, pairs, latest)
    tokens[count] = token


@compiled()
def _index_pairs(tokens, count, pairs, latest):
    """Fills an empty hash table with the latest index after each pair of the first count tokens."""
    for j in range(MIN_MATCH, count):
        _record(tokens, j, pairs, latest)


@compiled()
def _guess(tokens, count, earlier, pairs, latest):
    """(the guessed token, its match length), or (0, 0) without a guess: the candidates latest first, a longer match
    replacing the best so far (so the latest among equals stays)."""
    best_token, best_length = 0, 0
    if count < MIN_MATCH:
        return best_token, best_length
    j = _latest(tokens, count, pairs, latest)[2]
    candidates = 0
    while j >= 0 and candidates < CANDIDATES and best_length < MAX_MATCH:
        length = MIN_MATCH
        while length < min(MAX_MATCH, j) and tokens[j - length - 1] == tokens[count - length - 1]:
            length += 1  # a run cannot start before the chunk: length <= j
        if length > best_length:
            best_token, best_length = tokens[j], length
        j = earlier[j]
        candidates += 1
    return best_token, best_length


def guesses(tokens: list[int]) -> list[tuple[int, int] | None]:
    """MatchFinder.guess() at every position of a chunk's tokens: what a coder needs before the model's tables."""
    finder = MatchFinder(max(1, len(tokens)))
    found = np.zeros((len(tokens), 2), dtype=np.int64)
    _all_guesses(np.array(tokens, dtype=np.int32), finder.tokens, finder.earlier, finder.pairs, finder.latest, found)
    return [None if length == 0 else (token, length) for token, length in found.tolist()]


@compiled()
def _all_guesses(chunk, tokens, earlier, pairs, latest, found):
    for i in range(len(chunk)):
        found[i, 0], found[i, 1] = _guess(tokens, i, earlier, pairs, latest)
        _push(tokens, i, earlier, pairs, latest, chunk[i])


class MatchWeights:
    """Per (length, confidence) bucket: guesses, hits, and the sum of the model's frequencies of the guesses (below
    2^56: a chunk has fewer than 2^24 tokens)."""

    def __init__(self, total_bits: int) -> None:
        self.total_bits = total_bits
        self.buckets = np.zeros((LENGTH_BUCKETS - MIN_MATCH + 1, CONFIDENCE_BUCKETS, 3), dtype=np.int64)

    def weight(self, length: int, guess_freq: int) -> int:
        """Q in [0, 2^16): the guess's share, (hits - expected hits) / (guesses + PRIOR - expected hits) in its bucket,
        the expectation being the model's own probabilities of the guesses."""
        return _weight(self.buckets, length, guess_freq, self.total_bits)

    def update(self, length: int, guess_freq: int, hit: bool) -> None:
        _update(self.buckets, length, guess_freq, hit, self.total_bits)

    def copy(self) -> MatchWeights:
        other = MatchWeights(self.total_bits)
        other.buckets = self.buckets.copy()
        return other


@compiled()
def _bucket(buckets, length, guess_freq, total_bits):
    """The bucket's (guesses, hits, mass) row: lengths 2..7 and longer; confidence total_bits - bitlen(guess_freq),
    at most 3."""
    confidence = 0
    while confidence < CONFIDENCE_BUCKETS - 1 and guess_freq < 1 << (total_bits - 1 - confidence):
        confidence += 1
    return buckets[min(length, LENGTH_BUCKETS) - MIN_MATCH, confidence]


@compiled()
def _weight(buckets, length, guess_freq, total_bits):
    """(max(0, hits T - mass) 2^16) // ((guesses + PRIOR) T - mass), T = 2^total_bits, by long division: the
    numerator is below the denominator (hits <= guesses), which is below 2^57, while the product would pass 2^64."""
    bucket = _bucket(buckets, length, guess_freq, total_bits)  # guesses, hits, mass
    remainder = max(0, (bucket[1] << total_bits) - bucket[2])
    divisor = ((bucket[0] + PRIOR) << total_bits) - bucket[2]
    weight = 0
    for _ in range(WEIGHT_BITS):
        remainder <<= 1
        weight <<= 1
        if remainder >= divisor:
            remainder -= divisor
            weight |= 1
    return weight


@compiled()
def _update(buckets, length, guess_freq, hit, total_bits):
    bucket = _bucket(buckets, length, guess_freq, total_bits)
    bucket[0] += 1
    bucket[1] += hit
    bucket[2] += guess_freq


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
