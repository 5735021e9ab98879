"""The lm codec's match model (SPEC.md 9.8, format 2.2): the longest earlier repeat of the chunk's last tokens predicts
the next one, and its weight in each (match length, model confidence) bucket is estimated from how often such guesses
came true there against how likely the model found them. Integers throughout, so every decoder mixes the same tables.
In a bias group (format 2.6) the repeat may come from any of the group's chunks (GroupFinder).

Machine-written text repeats whole lines further back than the model's window reaches; the model alone cannot see
them there."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..engine.kernels import compiled, mixed_cumulative

MIN_MATCH, MAX_MATCH = 2, 32  # match lengths, in tokens
CANDIDATES = 256  # the latest earlier occurrences of the last two tokens that a guess is chosen from
LENGTH_BUCKETS = 8  # match lengths 2..7 apart, 8 and longer together
CONFIDENCE_BUCKETS = 4  # -log2 of the model's probability of the guess: 0, 1, 2, 3 and more
PRIOR = 2  # misses assumed in every bucket before its first guess: a new bucket trusts a guess little
WEIGHT_BITS = 16


class GroupFinder:
    """The match finder of one chunk, or of a bias group's chunks (format 2.6, SPEC.md 9.11): each member's tokens so
    far and, for each pair of tokens, where it occurred (in which member, at which index). guess(member) -> (token,
    length) or None for a member's next position; push(member, token), then commit(): the pushed tokens join, members
    in order, so every guess of a group's step sees the tokens before the step only, in any batch. Arrays that grow
    as the chunks do, worked on by compiled loops: the decoder calls them for every token of every chunk, which on a
    GPU is the host's work per token."""

    def __init__(self, members: int = 1, capacity: int = 1024) -> None:
        # int32: tokens and indexes of a chunk (fewer than 2^24) fit
        self.tokens = np.zeros((members, capacity), dtype=np.int32)
        self.lengths = np.zeros(members, dtype=np.int64)
        # occurrence o: member[o] pushed its token index[o] (>= MIN_MATCH); earlier[o]: the previous occurrence after
        # the same pair of tokens, or -1
        self.member = np.zeros(members * capacity, dtype=np.int32)
        self.index = np.zeros(members * capacity, dtype=np.int32)
        self.earlier = np.full(members * capacity, -1, dtype=np.int32)
        self.occurrences = 0
        self.pending: list[tuple[int, int]] = []
        self._new_table()

    def _new_table(self) -> None:
        """A hash table with a power of two slots, at most half of them used: a pair of tokens -> its latest
        occurrence."""
        slots = 1 << (2 * len(self.earlier)).bit_length()
        self.pairs = np.full(slots, -1, dtype=np.int64)
        self.latest = np.zeros(slots, dtype=np.int32)

    def guess(self, member: int = 0) -> tuple[int, int] | None:
        """Among the latest CANDIDATES occurrences of the member's last two tokens, the one whose run of equal tokens
        before it matches the end of the member's tokens longest (up to MAX_MATCH), the latest among equals: the token
        after it and that length."""
        token, length = _guess(self.tokens, member, self.lengths[member], self.member, self.index, self.earlier,
                               self.pairs, self.latest)
        return None if length == 0 else (token, length)

    def push(self, member: int, token: int) -> None:
        self.pending.append((member, token))

    def commit(self) -> None:
        for member, token in sorted(self.pending):
            if self.lengths[member] == self.tokens.shape[1] or self.occurrences == len(self.earlier):
                self._grow()
            self.occurrences = _push(self.tokens, member, self.lengths, token, self.occurrences, self.member,
                                     self.index, self.earlier, self.pairs, self.latest)
        self.pending.clear()

    def _grow(self) -> None:
        """Twice the room for tokens and occurrences; the hash table made again."""
        self.tokens = np.concatenate([self.tokens, np.zeros((len(self.tokens), max(1, self.tokens.shape[1])),
                                                            dtype=np.int32)], axis=1)
        more = max(1, len(self.earlier))
        self.member = np.concatenate([self.member, np.zeros(more, dtype=np.int32)])
        self.index = np.concatenate([self.index, np.zeros(more, dtype=np.int32)])
        self.earlier = np.concatenate([self.earlier, np.full(more, -1, dtype=np.int32)])
        self._new_table()
        _index_occurrences(self.tokens, self.occurrences, self.member, self.index, self.pairs, self.latest)

    def copy(self) -> GroupFinder:
        other = GroupFinder(0, 0)
        other.tokens, other.lengths = self.tokens.copy(), self.lengths.copy()
        other.member, other.index, other.earlier = self.member.copy(), self.index.copy(), self.earlier.copy()
        other.occurrences, other.pending = self.occurrences, list(self.pending)
        other.pairs, other.latest = self.pairs.copy(), self.latest.copy()
        return other

    def view(self, member: int, at_once: bool = False) -> GroupMember:
        return GroupMember(self, member, at_once)


class GroupMember:
    """One member's side of a GroupFinder, what a MatchModel guesses from: a chunk's own finder (one member whose
    tokens join at once), or its side of its bias group's, whose tokens join when the group's step ends."""

    def __init__(self, group: GroupFinder, member: int, at_once: bool) -> None:
        self.group, self.member, self.at_once = group, member, at_once

    def guess(self) -> tuple[int, int] | None:
        return self.group.guess(self.member)

    def push(self, token: int) -> None:
        self.group.push(self.member, token)
        if self.at_once:
            self.group.commit()

    def copy(self) -> GroupMember:
        return GroupMember(self.group.copy(), self.member, self.at_once)


def own_finder(capacity: int = 1024) -> GroupMember:
    """A chunk's own match finder (SPEC.md 9.8)."""
    return GroupFinder(1, capacity).view(0, at_once=True)


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
def _push(tokens, member, lengths, token, occurrences, owner, index, earlier, pairs, latest):
    """Appends a member's token (room given), recording the occurrence under the pair of tokens before it; returns
    the count of occurrences."""
    j = lengths[member]
    row = tokens[member]
    row[j] = token
    lengths[member] = j + 1
    if j < MIN_MATCH:
        return occurrences
    pair = _pair(row, j)
    slot = _slot(pairs, pair)
    earlier[occurrences] = latest[slot] if pairs[slot] != -1 else -1
    pairs[slot], latest[slot] = pair, occurrences
    owner[occurrences], index[occurrences] = member, j
    return occurrences + 1


@compiled()
def _index_occurrences(tokens, occurrences, owner, index, pairs, latest):
    """Fills an empty hash table with the latest of the first `occurrences` after each pair."""
    for o in range(occurrences):
        pair = _pair(tokens[owner[o]], index[o])
        slot = _slot(pairs, pair)
        pairs[slot], latest[slot] = pair, o


@compiled()
def _guess(tokens, member, count, owner, index, earlier, pairs, latest):
    """(the guessed token, its match length), or (0, 0) without a guess: the candidates latest first, a longer match
    replacing the best so far (so the latest among equals stays)."""
    best_token, best_length = 0, 0
    if count < MIN_MATCH:
        return best_token, best_length
    row = tokens[member]
    pair = _pair(row, count)
    slot = _slot(pairs, pair)
    o = latest[slot] if pairs[slot] != -1 else -1
    candidates = 0
    while o >= 0 and candidates < CANDIDATES and best_length < MAX_MATCH:
        other, j = tokens[owner[o]], index[o]
        length = MIN_MATCH
        while length < min(MAX_MATCH, j) and other[j - length - 1] == row[count - length - 1]:
            length += 1  # j < count (every occurrence is from an earlier step): a run cannot start before a chunk
        if length > best_length:
            best_token, best_length = other[j], length
        o = earlier[o]
        candidates += 1
    return best_token, best_length


def group_guesses(chunks: Sequence[list[int]]) -> list[list[tuple[int, int] | None]]:
    """GroupFinder's guess at every position of every member, the group decoded in lockstep: what a coder needs
    before the model's tables."""
    finder = GroupFinder(len(chunks), max(map(len, chunks), default=0))
    found: list[list[tuple[int, int] | None]] = [[] for _ in chunks]
    for step in range(max(map(len, chunks), default=0)):
        for member, tokens in enumerate(chunks):
            if step < len(tokens):
                found[member].append(finder.guess(member))
                finder.push(member, tokens[step])
        finder.commit()
    return found


def guesses(tokens: list[int]) -> list[tuple[int, int] | None]:
    """A chunk's own match finder's guess at every position (SPEC.md 9.8): a group of one."""
    return group_guesses([tokens])[0]


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

    def __init__(self, total_bits: int, finder: GroupMember | None = None) -> None:
        """finder: the chunk's own (a new one by default), or its side of its bias group's (format 2.6)."""
        self.finder, self.weights = finder or own_finder(), MatchWeights(total_bits)
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
