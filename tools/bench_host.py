"""The lm codec's host-side work per token, which no accelerator takes over: tokenizing, the match model's guesses,
range coding. On a GPU the model's forward passes shrink; these do not, so they bound what one host process can feed
it (issue 17's GPU targets: 1 MB/s packing, 0.5 MB/s extracting). Also the search of a decoder's table (with a guess
mixed in), host work on a CPU and the device's on a GPU, in both implementations on this CPU.

    python tools/bench_host.py [TEXT]     (default: the first 64 KiB of ../shared/corpora/canterbury/lcet10.txt)
"""

from __future__ import annotations

import os
import random
import sys
import time

import numpy as np
import torch

from lzarchive import api
from lzarchive.codecs.match import WEIGHT_BITS, MatchModel, guesses, mix_factors
from lzarchive.engine.ops import Tables, exact_ops
from lzarchive.engine.tokenizer import Encoder
from lzarchive.rangecoder import TOTAL, TOTAL_BITS, RangeDecoder, RangeEncoder

DEFAULT_TEXT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpora", "canterbury",
                                             "lcet10.txt"))


def per_token(label: str, seconds: float, count: int) -> float:
    micros = seconds / count * 1e6
    print(f"{label:<60} {micros:8.2f} us per token")
    return micros


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_TEXT
    with open(path, "rb") as f:
        text = f.read(65536)
    model = api.load_model()
    encoder = Encoder(model.token_table, model.tokenizer_json, model.config.escape_token)
    started = time.perf_counter()
    tokens, _ = encoder.encode(text)
    tokenize = time.perf_counter() - started
    count = len(tokens)
    print(f"{path}: {len(text)} bytes, {count} tokens ({len(text) / count:.2f} bytes per token)")
    rng = random.Random(0)
    intervals = []  # skewed like a model's: mostly large intervals, some tiny
    for _ in tokens:
        size = max(1, int(TOTAL * rng.random() ** 3))
        intervals.append((rng.randrange(TOTAL - size + 1), size))
    encode_side = per_token("tokenize (encoder)", tokenize, count)
    guesses(tokens[:100])  # the match model's compiled loops load (or compile) on first use
    started = time.perf_counter()
    guesses(tokens)
    encode_side += per_token("match model guesses (encoder, every chunk)", time.perf_counter() - started, count)
    started = time.perf_counter()
    coder = RangeEncoder()
    for start, size in intervals:
        coder.encode(start, size)
    data = coder.finish()
    # the writer codes each chunk twice, with and without the match model, and keeps the smaller
    encode_side += 2 * per_token("range encode", time.perf_counter() - started, count)
    decoder = RangeDecoder(data)
    started = time.perf_counter()
    for start, size in intervals:
        decoder.target(TOTAL)
        decoder.consume(start, size)
    decode_side = per_token("range decode (target, consume)", time.perf_counter() - started, count)
    match = MatchModel(TOTAL_BITS)
    started = time.perf_counter()
    for token in tokens:
        if match.guess() is not None:
            match.weight(1 << 10)
        match.update(token, 1 << 10)
    match_side = per_token("match model (decoder: guess, weight, update)", time.perf_counter() - started, count)
    vocab, rows = model.config.vocab_size, 64
    freq = torch.full((rows, vocab), TOTAL // vocab, dtype=torch.int64)
    freq[:, 0] += TOTAL - freq.sum(dim=1)
    targets = np.array([rng.randrange(TOTAL) for _ in range(rows)], dtype=np.int64)
    keep, given = mix_factors(3000, vocab, TOTAL_BITS)
    mix = 0.0
    # the search is the device's work (ops.find_symbols): the compiled loops on a CPU, torch operations on a GPU, whose
    # numbers come from the device; here both on this CPU
    for compiled in (True, False):
        ops = exact_ops(torch.device("cpu"), Tables.of(model.tensors, "sigmoid"), compiled)
        path = "compiled" if compiled else "torch ops"
        for label, keeps, givens in ((f"search the model's table ({path}, per token)", 1 << WEIGHT_BITS, 0),
                                     (f"search it with a weighted guess mixed in ({path}, per such token)", keep, given)):
            arguments = (freq, targets, np.full(rows, 17), np.full(rows, keeps), np.full(rows, givens), WEIGHT_BITS)
            ops.find_symbols(*arguments)  # compiled on first use
            started = time.perf_counter()
            for _ in range(20):
                ops.find_symbols(*arguments)
            searched = per_token(label, (time.perf_counter() - started) / 20, rows)
            mix = searched if compiled else mix
    bytes_per_token = len(text) / count
    print(f"encoder host work: {encode_side:.1f} us per token -> at most {bytes_per_token / encode_side:.2f} MB/s per "
          f"host core")
    print(f"decoder host work, range coding and match model only (the decode loop's own bookkeeping per stream comes "
          f"on top): {decode_side:.1f} us per token, {decode_side + match_side:.1f} in match-model chunks, and the "
          f"compiled table searches above ({mix:.0f} with a weighted guess) on a CPU")


if __name__ == "__main__":
    main()
