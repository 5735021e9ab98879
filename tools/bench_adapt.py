#!/usr/bin/env python3
"""Offline measurement: would models that learn from the chunk so far, mixed with the float model, pay on a text?

The float model (default GGUF, dequantized) codes the text in windows; for every token we keep its probability of the
token that came and of the token a match model predicts. Then, token by token and using only what a decoder has seen:
  match   the longest earlier repeat of the last 2..32 tokens predicts the next one; its weight q is learned online
          per (match length, model confidence) bucket: p = (1 - q) p_model + q [token = predicted]
  cache   a unigram cache of the tokens seen so far, mixed in with a weight learned online per cache size
Weights are chosen per bucket as the best of a small grid on the tokens already coded (a decoder can do the same).
Prints bits per byte of the model alone and with each component. Usage (from tools/):
    python bench_adapt.py --corpora asyoulik --chunk-size 128K --window 2048,512
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
from lzarchive.codecs.lm import LmCodec, window_bodies

GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 0.95)
MIN_MATCH, MAX_MATCH = 2, 32


def match_predictions(tokens: list[int]) -> list[tuple[int, int]]:
    """For each position: (predicted token, match length), or (-1, 0): the token after the most recent earlier
    occurrence of the longest suffix (2..32 tokens) of what came before."""
    last_at: dict[tuple, int] = {}
    out = []
    for i in range(len(tokens)):
        found = (-1, 0)
        for n in range(min(MAX_MATCH, i), MIN_MATCH - 1, -1):
            j = last_at.get(tuple(tokens[i - n : i]))
            if j is not None:
                found = (tokens[j], n)
                break
        out.append(found)
        for n in range(MIN_MATCH, min(MAX_MATCH, i) + 1):  # after the lookup: later repeats find this position
            last_at[tuple(tokens[i - n : i])] = i
    return out


def model_probabilities(model, codec: LmCodec, tokens: list[int], predicted: list[int], window: int, overlap: int):
    """p_model(token that came) and p_model(predicted token) for every position, window by window."""
    bos = codec.model.config.bos_token
    actual_p, predicted_p = [0.0] * len(tokens), [0.0] * len(tokens)
    for start, end in window_bodies(len(tokens), window, overlap):
        primer = tokens[max(0, start - overlap) : start] if start else []
        inputs = torch.tensor([bos] + primer + tokens[start:end])
        with torch.no_grad():
            probs = torch.softmax(model(inputs[None]).logits[0].double(), dim=-1)
        rows = torch.arange(len(primer), len(primer) + end - start)
        actual_p[start:end] = probs[rows, inputs[rows + 1]].tolist()
        guess = torch.tensor([max(p, 0) for p in predicted[start:end]])
        predicted_p[start:end] = probs[rows, guess].tolist()
    return actual_p, predicted_p


class OnlineWeight:
    """Per bucket, the grid weight with the least log loss on the tokens coded so far in that bucket."""

    def __init__(self) -> None:
        self.loss: dict[object, list[float]] = defaultdict(lambda: [0.0] * len(GRID))

    def weight(self, bucket) -> float:
        losses = self.loss[bucket]
        return GRID[min(range(len(GRID)), key=losses.__getitem__)]

    def update(self, bucket, probability_of) -> None:
        losses = self.loss[bucket]
        for k, w in enumerate(GRID):
            losses[k] -= math.log2(max(probability_of(w), 1e-300))


def confidence_bucket(p: float) -> int:
    return min(7, int(-math.log2(max(p, 1e-12))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="asyoulik")
    parser.add_argument("--bytes", type=parse_size, default=1 << 20)
    parser.add_argument("--chunk-size", type=parse_size, default=128 << 10)
    parser.add_argument("--window", default="2048,512")
    args = parser.parse_args()
    window, overlap = (int(x) for x in args.window.split(","))
    corpora = args.corpora.split(",")
    data = b"".join(b"".join(build_corpus(name, args.bytes // len(corpora)).values()) for name in corpora)
    codec, model = LmCodec(api.load_model()), float_model()
    totals = defaultdict(float)
    for lo in range(0, len(data), args.chunk_size):
        tokens, escaped = codec.encoder.encode(data[lo : lo + args.chunk_size])
        matches = match_predictions(tokens)
        actual_p, predicted_p = model_probabilities(model, codec, tokens, [m[0] for m in matches], window, overlap)
        match_weight, cache_weight = OnlineWeight(), OnlineWeight()
        counts: dict[int, int] = defaultdict(int)
        for i, token in enumerate(tokens):
            p = actual_p[i]
            totals["model"] -= math.log2(p)
            guess, length = matches[i]
            if guess >= 0:
                bucket = (min(length, 16), confidence_bucket(predicted_p[i]))
                hit = token == guess
                q = match_weight.weight(bucket)
                totals["match"] -= math.log2((1 - q) * p + (q if hit else 0.0))
                match_weight.update(bucket, lambda w: (1 - w) * p + (w if hit else 0.0))
            else:
                totals["match"] -= math.log2(p)
            cached = counts[token] / i if i else 0.0
            bucket = i.bit_length()  # how much the cache has seen: known to a decoder before the token
            lam = cache_weight.weight(bucket)
            totals["cache"] -= math.log2((1 - lam) * p + lam * cached)
            cache_weight.update(bucket, lambda w: (1 - w) * p + w * cached)
            counts[token] += 1
        totals["escapes"] += 8 * len(escaped)
    result = {"bytes": len(data), "chunk_size": args.chunk_size, "window": window, "overlap": overlap}
    for name in ("model", "match", "cache"):
        result[f"{name}_bits_per_byte"] = round((totals[name] + totals["escapes"]) / len(data), 4)
    result["match_gain"] = round(1 - result["match_bits_per_byte"] / result["model_bits_per_byte"], 4)
    result["cache_gain"] = round(1 - result["cache_bits_per_byte"] / result["model_bits_per_byte"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
