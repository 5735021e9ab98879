#!/usr/bin/env python3
"""One decoding step of the default model at the default policy's shapes, in the compiled kernels: LM_LOCKSTEP chunks
in lockstep, each with the span's keys cached and the SPAN_ROOM_DECODING - 1 more that the span hides just before a
slide (the cache holds random keys and values: the time does not depend on them). Prints milliseconds per step for
the decoding attention's loops (all layers together), the whole forward step and the frequency tables.

Decoding is where lza spends its time, and a kernel can lose its vectorization to a change that looks harmless
(72cd374 made the score loop 5x slower, unseen for a day): time a change to the engine with this tool in both trees,
alternating, since the machine is noisy:

    PYTHONPATH=/path/to/other/tree python tools/bench_step.py ; python tools/bench_step.py ; ...
    python tools/bench_step.py [--rows 16] [--repeat 20] [--span 768]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from lzarchive import api
from lzarchive.codecs import LM_DEFAULT_SPAN, LM_LOCKSTEP
from lzarchive.codecs.lm import SPAN_ROOM_DECODING
from lzarchive.engine import architectures, ops
from lzarchive.engine.kernels import QMAX
from lzarchive.rangecoder import TOTAL_BITS

TIMED_LOOPS = ("decoding_attention",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=LM_LOCKSTEP, help="chunks decoded in lockstep")
    parser.add_argument("--repeat", type=int, default=20, help="steps timed (after one that loads the kernels)")
    parser.add_argument("--span", type=int, default=LM_DEFAULT_SPAN, help="positions each token sees besides BOS")
    args = parser.parse_args()
    engine = architectures.engine(api.load_model())
    capacity = 1 + (args.span - 1) + SPAN_ROOM_DECODING  # BOS, the span, the room between slides
    cache = engine.new_cache(args.rows, capacity, args.span)
    generator = torch.Generator().manual_seed(0)
    for tensor in (*cache.k, *cache.v):
        tensor.copy_(torch.randint(-QMAX, QMAX + 1, tensor.shape, generator=generator, dtype=torch.int16))
    for tensor in (*cache.k_scale, *cache.v_scale):
        tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64) * 1e-3)
    cache.kept = 1
    tokens = torch.randint(0, engine.config.vocab_size, (args.rows, 1), generator=generator)

    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, loop):
        def run(*inputs):
            started = time.perf_counter()
            loop(*inputs)
            spent[name] += time.perf_counter() - started
        return run

    for name in TIMED_LOOPS:
        setattr(ops, name, timed(name, getattr(ops, name)))
    for step in range(args.repeat + 1):
        if step == 1:
            spent.clear()
        cache.length = capacity - 1  # the last step before a slide: the most keys hidden
        started = time.perf_counter()
        q, scale = engine.forward(tokens, cache)
        spent["whole forward step"] += time.perf_counter() - started
        started = time.perf_counter()
        engine.frequencies(q[:, -1], scale[:, -1], TOTAL_BITS)
        spent["frequency tables"] += time.perf_counter() - started
    print(f"{args.rows} rows in lockstep, {capacity - 1} cached keys of which {SPAN_ROOM_DECODING - 1} hidden, "
          f"{engine.config.layers} layers; ms per step, mean of {args.repeat} steps")
    for name, seconds in spent.items():
        print(f"{name:<24} {seconds / args.repeat * 1e3:8.2f}")
    step = (spent["whole forward step"] + spent["frequency tables"]) / args.repeat
    print(f"{'tokens per second':<24} {args.rows / step:8.1f}")


if __name__ == "__main__":
    main()
