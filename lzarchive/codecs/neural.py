"""Codec layer: the lm codec's neural cache (SPEC.md 9.13, format 2.8), which predicts a token from the tokens that
followed earlier positions whose final hidden state resembles the current one (Grave et al., 2017), over every token a
chunk (or its bias group) has coded so far; its table is mixed into the model's with a weight per bucket of the
largest cosine, learned online. Measured with the float model in tools/results/2026-12-05-neural-cache.md."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..engine.ops import TorchOps
from .match import WEIGHT_BITS  # the mixing weight Q in [0, 2^16), as the match model's

CACHE_KEYS = 1 << 17  # keys held at most: the latest, so a step's cost has a bound (lcet10.txt's group: 97,572)
CACHE_THETA = 60.0  # the softmax's sharpness over cosines (measured best of 10 .. 120)
CACHE_SHIFT = 10  # the keys' weights in 2^-20 units: their sum stays below 2^37
CACHE_BITS = 20  # the cache's table in 2^-20 units
CACHE_BUCKETS = 10  # of the largest cosine, in tenths
RATE_SHIFT = 7  # the weight's step: 2^-9 times the log loss's gradient, which is clipped to +-16
GRADIENT_CLIP = 16 << WEIGHT_BITS
WEIGHT_MAX = (1 << 32) - 1  # the weight's state in 2^-32 units
PRODUCTS = 1 << 24  # the writer's products of blocks of positions with the keys they see, at most, for all caches


class NeuralCache:
    """A chunk's (or a bias group's) neural cache: the keys of its tokens so far (the latest CACHE_KEYS, in a ring),
    their lengths and tokens, and the weight state per bucket. Grown as tokens come, never sized by a payload's counts
    (which a hostile archive inflates)."""

    def __init__(self, dims: int, device: torch.device) -> None:
        self.keys = torch.zeros(0, dims, dtype=torch.int8, device=device)
        self.lengths = torch.zeros(0, dtype=torch.float64, device=device)
        self.values = torch.zeros(0, dtype=torch.int64, device=device)
        self.count = 0  # keys added in all
        self.weights = [0] * CACHE_BUCKETS
        self._learned: list[tuple[int, int]] = []  # (bucket, step) of the current step, applied by commit()
        self._added: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def held(self) -> int:
        return min(self.count, CACHE_KEYS)

    def tables(self, ops: TorchOps, keys: torch.Tensor, lengths: torch.Tensor, freq: torch.Tensor, total_bits: int):
        """For the keys of rows (ops.cache_keys: int8 (n, d) and their lengths) and their tables freq (n, V): the mixed
        tables, the cache's, and each row's bucket. Only while the cache holds keys."""
        seen = np.zeros(len(keys), dtype=np.int64), np.full(len(keys), self.held, dtype=np.int64)
        cache, top = ops.cache_table(ops.key_products(keys, self.keys), lengths, self.lengths, self.values, *seen,
                                     freq.shape[-1], CACHE_THETA, CACHE_SHIFT, CACHE_BITS)
        return self.mix(ops, cache, top, freq, total_bits)

    def mix(self, ops: TorchOps, cache: torch.Tensor, top: torch.Tensor, freq: torch.Tensor, total_bits: int):
        """The tables freq mixed with the cache's (ops.cache_table: c and the largest cosines) at the weights of the
        rows' buckets; the cache's, and the buckets."""
        buckets = torch.floor(top * 10).clamp_(0, CACHE_BUCKETS - 1).to(torch.int64).cpu().numpy()
        weights = torch.tensor([self.weights[b] >> (32 - WEIGHT_BITS) for b in buckets], device=freq.device)
        return ops.mix_cache(freq, cache, weights, WEIGHT_BITS, CACHE_BITS, total_bits), cache, buckets

    def learn(self, bucket: int, model: int, cache: int, mixed: int, total_bits: int) -> None:
        """After a row's token: the model's, the cache's and the mixed table's frequencies of it; the weight steps at
        commit(), so that every row of a step uses the weights before it."""
        gradient = ((cache << (total_bits - CACHE_BITS)) - model << WEIGHT_BITS) // mixed
        self._learned.append((bucket, max(-GRADIENT_CLIP, min(GRADIENT_CLIP, gradient)) << RATE_SHIFT))

    def add(self, keys: torch.Tensor, lengths: torch.Tensor, tokens: Sequence[int]) -> None:
        """A step's rows' keys (ops.cache_keys) and the tokens that came after them, added at commit()."""
        self._added.append((keys, lengths, torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=keys.device)))

    def commit(self) -> None:
        for bucket, step in self._learned:
            self.weights[bucket] += step
        for bucket in {b for b, _ in self._learned}:
            self.weights[bucket] = max(0, min(WEIGHT_MAX, self.weights[bucket]))
        self._learned = []
        for keys, lengths, tokens in self._added:
            self._append(keys, lengths, tokens)
        self._added = []

    def _append(self, keys: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor) -> None:
        size = len(self.keys)
        if self.count + len(keys) > size and size < CACHE_KEYS:  # rows in multiples of 8: the int8 GEMM's liking
            grown = min(CACHE_KEYS, max(2 * size, -(-(self.count + len(keys)) // 8) * 8))
            self.keys = torch.cat([self.keys, self.keys.new_zeros(grown - size, self.keys.shape[1])])
            self.lengths = torch.cat([self.lengths, self.lengths.new_ones(grown - size)])
            self.values = torch.cat([self.values, self.values.new_zeros(grown - size)])
        slots = torch.arange(self.count, self.count + len(keys), device=keys.device) % CACHE_KEYS
        self.keys[slots], self.lengths[slots], self.values[slots] = keys, lengths, tokens
        self.count += len(keys)

    def copy(self) -> NeuralCache:
        other = NeuralCache(self.keys.shape[1], self.keys.device)
        other.keys, other.lengths, other.values = self.keys.clone(), self.lengths.clone(), self.values.clone()
        other.count, other.weights = self.count, list(self.weights)
        return other


class KnownKeys(NeuralCache):
    """A neural cache as the writer runs it: every key of its chunks known before coding (their output rows q and
    tokens), in the order a decoder adds them (position-major, the chunks in order), so that one product covers a
    block of positions. The same tables as NeuralCache's: the keys a position sees are the latest CACHE_KEYS added
    before its step."""

    def __init__(self, ops: TorchOps, rows: Sequence[torch.Tensor], tokens: Sequence[Sequence[int]],
                 share: int = 1) -> None:
        """rows: each chunk's output rows (n_c, d), integers; tokens: each chunk's tokens; share: the number of caches
        the writer holds, which share PRODUCTS."""
        super().__init__(rows[0].shape[-1], rows[0].device)
        counts = [len(chunk) for chunk in tokens]
        member = np.repeat(np.arange(len(counts)), counts)
        position = np.concatenate([np.arange(n) for n in counts])
        order = np.lexsort((member, position))
        keys = [ops.cache_keys(chunk.to(torch.float64)) for chunk in rows]  # a chunk at a time: float64 temporaries
        at = torch.as_tensor(order, device=rows[0].device)
        self.keys, self.lengths = torch.cat([k for k, _ in keys])[at], torch.cat([n for _, n in keys])[at]
        self.values = torch.as_tensor(np.concatenate([np.asarray(t, dtype=np.int64) for t in tokens])[order],
                                      device=rows[0].device)
        # keys added before step p: those of the positions before p
        self.before = np.concatenate([[0], np.cumsum(np.bincount(position, minlength=max(counts) + 1))])
        self._block: tuple[int, int, int, torch.Tensor] | None = None  # positions [first, end), key offset, products
        self._products_most = PRODUCTS // share

    def tables_at(self, ops: TorchOps, position: int, freq: torch.Tensor, total_bits: int):
        """NeuralCache.tables for the chunks' rows at this position (freq: theirs, in chunk order); None where no
        key was added before it."""
        start = int(self.before[position])
        if not start:
            return None
        first, _, offset, dots = self._products(ops, position)
        end = int(self.before[position + 1])  # the keys of this position's rows: start .. end
        lo = np.full(len(freq), max(0, start - CACHE_KEYS) - offset, dtype=np.int64)
        cache, top = ops.cache_table(dots[start - int(self.before[first]) : end - int(self.before[first])],
                                     self.lengths[start:end], self.lengths[offset:], self.values[offset:], lo,
                                     np.full(len(freq), start - offset, dtype=np.int64), freq.shape[-1], CACHE_THETA,
                                     CACHE_SHIFT, CACHE_BITS)
        return self.mix(ops, cache, top, freq, total_bits)

    def _products(self, ops: TorchOps, position: int):
        """The products of the keys of a block of positions from this one with the keys they see, computed once per
        block: as many positions as keep the block within its share of PRODUCTS (but one position at least)."""
        if self._block is None or not self._block[0] <= position < self._block[1]:
            offset = max(0, int(self.before[position]) - CACHE_KEYS)
            end = position + 1
            while end < len(self.before) - 1 and (self.before[end + 1] - self.before[position]) * (
                    self.before[end] - offset) <= self._products_most:
                end += 1
            rows = self.keys[int(self.before[position]) : int(self.before[end])]
            self._block = position, end, offset, ops.key_products(rows, self.keys[offset : int(self.before[end - 1])])
        return self._block
