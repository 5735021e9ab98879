#!/usr/bin/env python3
"""Offline measurement: would models that learn from the chunk so far, or a shared primer, pay on a text?

The float model (default GGUF, dequantized) codes the text in the lm codec's chunks and windows. Then, token by token
and using only what a decoder has seen, each candidate turns the model's distribution into its own and is charged
-log2 of the probability it gives the token that came:
  match   the lm codec's match model (lzarchive/codecs/match.py, SPEC 9.8): the longest earlier repeat of the last
          2..32 tokens predicts the next one, weighted per (match length, model confidence) bucket by its hits against
          the model's expectation: p = (1 - q) p_model + q [token = predicted], q = Q / 2^16 (the model's
          probabilities as 32-bit frequencies, as the exact codec sees them)
  cache   a unigram cache of the chunk's tokens, mixed in with a weight learned online per cache size
  bias    a log-space bias over the vocabulary learned by online gradient descent (Nacrith's bias head):
          p = softmax(logits + b), then b += rate (onehot(token) - p), at each rate of --bias-rates
  match+bias  both: the match model mixed into the biased distribution (its own weights, learned on that one)
  temp    the temperature (of a grid) with the least loss on the chunk so far: p = softmax(logits / T)
  sse     secondary estimation of the model's top token: per (confidence, last token was top) bucket, its hit rate
          so far replaces the model's top probability in proportion to the bucket's count; the rest scale to fit
With --primer P, every window of every chunk but the first also sees the first P tokens of the text before its own
tokens (an archive-level primer: coded once, its keys and values computed once per archive by a reader).
With --span S, each chunk is instead one forward in which every position sees BOS (and the primer) and the last S
positions only (the lm span of SPEC 9.5, the default since format 2.3; chunks past the model's positions extrapolate).
Weights are chosen per bucket as the best of a small grid on the tokens already coded (a decoder can do the same).
Prints bits per byte of the model alone and with each candidate. Usage (from tools/):
    python bench_adapt.py --corpora asyoulik                      # the default chunk policy and window
    python bench_adapt.py --corpora asyoulik --chunk-size 128K --window 2048,512
    python bench_adapt.py --corpora lcet10 --chunk-size 27K --span 768 --bias-rates 0.1,0.2,0.3   # the whole file
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

import torch

from bench import build_corpus
from bench_lm import float_model
from lzarchive import api
from lzarchive.cli.render import parse_size
from lzarchive.codecs import LM_DEFAULT_OVERLAP, LM_DEFAULT_WINDOW, lm_chunk_size
from lzarchive.codecs.lm import LmCodec, window_bodies
from lzarchive.codecs.match import WEIGHT_BITS, MatchModel
from lzarchive.rangecoder import TOTAL_BITS

GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 0.95)
TEMPERATURES = (0.8, 0.9, 1.0, 1.1, 1.25)
SSE_BUCKETS = 24
LN2 = math.log(2)


class OnlineWeight:
    """Per bucket, the grid weight with the least log loss on the tokens coded so far in that bucket."""

    def __init__(self, grid=GRID) -> None:
        self.grid = grid
        self.loss: dict[object, list[float]] = defaultdict(lambda: [0.0] * len(grid))

    def best(self, bucket) -> int:
        losses = self.loss[bucket]
        return min(range(len(self.grid)), key=losses.__getitem__)

    def weight(self, bucket) -> float:
        return self.grid[self.best(bucket)]

    def update(self, bucket, probability_of) -> None:
        losses = self.loss[bucket]
        for k, w in enumerate(self.grid):
            losses[k] -= math.log2(max(probability_of(w), 1e-300))


def matched_bits(match: MatchModel, logp: torch.Tensor, token: int) -> float:
    """-log2 of the token's probability in the distribution exp(logp) mixed with the match model's guess; then the
    match model learns the token."""
    p = math.exp(float(logp[token]))
    guess = match.guess()
    guess_freq = max(1, round(math.exp(float(logp[guess])) * 2**TOTAL_BITS)) if guess is not None else 0
    q = match.weight(guess_freq) / 2**WEIGHT_BITS if guess is not None else 0.0
    match.update(token, guess_freq)
    return -math.log2((1 - q) * p + (q if token == guess else 0.0))


class ChunkCandidates:
    """Every candidate's state for one chunk, fed one output row (float64 logits) and the token that came at a time."""

    def __init__(self, tokens: list[int], vocab: int, bias_rates: list[float]) -> None:
        self.tokens, self.match = tokens, MatchModel(TOTAL_BITS)
        self.biased_match = [MatchModel(TOTAL_BITS) for _ in bias_rates]
        self.cache_weight = OnlineWeight()
        self.counts: dict[int, int] = defaultdict(int)
        self.rates = torch.tensor(bias_rates, dtype=torch.float64)[:, None]
        self.bias = torch.zeros(len(bias_rates), vocab, dtype=torch.float64)
        self.inverse_temperatures = torch.tensor([1 / t for t in TEMPERATURES], dtype=torch.float64)[:, None]
        self.temperature_loss = torch.zeros(len(TEMPERATURES), dtype=torch.float64)
        self.sse = defaultdict(lambda: [0, 0])  # bucket -> [hits, seen]
        self.last_hit = 0

    def code(self, i: int, logits: torch.Tensor, totals: dict[str, float]) -> None:
        token = self.tokens[i]
        logp = torch.log_softmax(logits, dim=-1)
        p = math.exp(float(logp[token]))
        totals["model"] -= math.log2(p)

        totals["match"] += matched_bits(self.match, logp, token)

        cached = self.counts[token] / i if i else 0.0
        bucket = i.bit_length()  # how much the cache has seen: known to a decoder before the token
        lam = self.cache_weight.weight(bucket)
        totals["cache"] -= math.log2((1 - lam) * p + lam * cached)
        self.cache_weight.update(bucket, lambda w: (1 - w) * p + w * cached)
        self.counts[token] += 1

        biased = torch.log_softmax(logits[None] + self.bias, dim=-1)
        for rate, lp, row, match in zip(self.rates[:, 0].tolist(), biased[:, token].tolist(), biased, self.biased_match):
            totals[f"bias {rate:g}"] -= lp / LN2
            totals[f"match+bias {rate:g}"] += matched_bits(match, row, token)
        gradient = -biased.exp()
        gradient[:, token] += 1
        self.bias += self.rates * gradient

        tempered = torch.log_softmax(logits[None] * self.inverse_temperatures, dim=-1)[:, token]
        best = int(torch.argmin(self.temperature_loss))
        totals["temp"] -= float(tempered[best]) / LN2
        self.temperature_loss -= tempered

        top_lp, top = torch.max(logp, dim=0)
        top_p, top = math.exp(float(top_lp)), int(top)
        stretch = math.log(top_p / max(1 - top_p, 1e-12))
        bucket = (min(SSE_BUCKETS - 1, max(0, int((stretch + 6) * 2))), self.last_hit)
        hits, seen = self.sse[bucket]
        rate = (hits + 0.5) / (seen + 1)
        weight = seen / (seen + 32)
        refined = (1 - weight) * top_p + weight * rate
        sse_p = refined if token == top else p * (1 - refined) / max(1 - top_p, 1e-12)
        totals["sse"] -= math.log2(max(sse_p, 1e-300))
        self.sse[bucket] = [hits + (token == top), seen + 1]
        self.last_hit = int(token == top)


def chunk_outputs(model, prefix: list[int], tokens: list[int], window: int, overlap: int, span: int):
    """(start, end, float64 logits, index of the output before token start) for each forward over a chunk's tokens:
    the lm codec's windows after the prefix, or with a span one forward whose positions see the prefix and the last
    `span` positions."""
    if span:
        inputs = torch.tensor(prefix + tokens)
        at = torch.arange(len(inputs))
        seen = (at[None, :] <= at[:, None]) & ((at[:, None] - at[None, :] < span) | (at[None, :] < len(prefix)))
        with torch.no_grad():
            yield 0, len(tokens), model(inputs[None], attention_mask=seen[None, None]).logits[0].double(), len(prefix) - 1
        return
    for start, end in window_bodies(len(tokens), window, overlap):
        before = tokens[max(0, start - overlap) : start] if start else []
        with torch.no_grad():
            logits = model(torch.tensor(prefix + before + tokens[start:end])[None]).logits[0].double()
        yield start, end, logits, len(prefix) + len(before) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="asyoulik")
    parser.add_argument("--bytes", type=parse_size, default=1 << 20)
    parser.add_argument("--chunk-size", type=parse_size, default=None, help="default: the lm codec's chunk policy")
    parser.add_argument("--window", default=f"{LM_DEFAULT_WINDOW},{LM_DEFAULT_OVERLAP}")
    parser.add_argument("--bias-rates", default="0.002,0.005,0.01,0.02,0.05")
    parser.add_argument("--primer", type=int, default=0, help="tokens of the text's start every later window sees")
    parser.add_argument("--primer-from", help="take the primer from this file's start instead (a text from elsewhere)")
    parser.add_argument("--model-only", action="store_true", help="no candidates: the model's bits alone (faster)")
    parser.add_argument("--span", type=int, default=0, help="S > 0: one forward per chunk, each position seeing the "
                        "prefix and the last S positions (the lm span) instead of the windows")
    args = parser.parse_args()
    window, overlap = (int(x) for x in args.window.split(","))
    corpora = args.corpora.split(",")
    data = b"".join(b"".join(build_corpus(name, args.bytes // len(corpora)).values()) for name in corpora)
    chunk_size = args.chunk_size or lm_chunk_size(len(data))
    codec, model = LmCodec(api.load_model()), float_model()
    bos = codec.model.config.bos_token
    rates = [float(r) for r in args.bias_rates.split(",")]
    primer_text = open(args.primer_from, "rb").read() if args.primer_from else data
    primer = codec.encoder.encode(primer_text[: 16 * args.primer])[0][: args.primer] if args.primer else []
    totals: dict[str, float] = defaultdict(float)
    for lo in range(0, len(data), chunk_size):
        tokens, escaped = codec.encoder.encode(data[lo : lo + chunk_size])
        shared = primer if lo else []
        candidates = ChunkCandidates(tokens, model.config.vocab_size, rates)
        for start, end, logits, first in chunk_outputs(model, [bos] + shared, tokens, window, overlap, args.span):
            if args.model_only:
                rows = torch.arange(first, first + end - start)
                logp = torch.log_softmax(logits[rows], dim=-1)
                totals["model"] -= float(logp[torch.arange(end - start), torch.tensor(tokens[start:end])].sum()) / LN2
                continue
            for offset in range(end - start):
                candidates.code(start + offset, logits[first + offset], totals)
        totals["escapes"] += 8 * len(escaped)
    result = {"bytes": len(data), "chunk_size": chunk_size, "window": window, "overlap": overlap, "span": args.span,
              "primer": args.primer, "primer_from": args.primer_from or "the text"}
    model_bpb = (totals["model"] + totals["escapes"]) / len(data)
    for name, bits in totals.items():
        if name != "escapes":
            bpb = (bits + totals["escapes"]) / len(data)
            result[name] = {"bits_per_byte": round(bpb, 4), "gain": round(1 - bpb / model_bpb, 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
