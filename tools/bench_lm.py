#!/usr/bin/env python3
"""Exact engine against the float model: bits per byte of the lm codec's payloads and of the float32 Hugging Face model
(the default GGUF, dequantized) on the same tokens and windows. Ratio and speed against other tools: tools/bench.py.

Usage: python tools/bench_lm.py [--bytes 16384]   (needs the bench extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch

from bench import build_corpus  # tools/bench.py: the same corpora
from lzarchive import api
from lzarchive.codecs.lm import DEFAULT_CHUNK_SIZE, LmCodec, window_bodies
from lzarchive.engine import registry


def float_bits(codec: LmCodec, chunks: list[bytes]) -> float:
    """-log2 p of every token under the float model, with the lm codec's tokens, windows and escapes."""
    from transformers import AutoModelForCausalLM

    source = registry.default_source_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(source), gguf_file=os.path.basename(source),
                                                 dtype=torch.float32).eval()
    bos, bits = codec.model.config.bos_token, 0.0
    for chunk in chunks:
        tokens, escaped = codec.encoder.encode(chunk)
        bits += 8 * len(escaped)
        for start, end in window_bodies(len(tokens), codec.window, codec.overlap):
            primer = tokens[max(0, start - codec.overlap) : start] if start else []
            inputs = [bos] + primer + tokens[start:end]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([inputs])).logits[0].double(), dim=-1)
            for offset in range(end - start):
                bits -= float(logp[len(primer) + offset, inputs[len(primer) + offset + 1]]) / math.log(2)
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=16384, help="sample size, a third each of prose, code, man pages")
    args = parser.parse_args()
    data = b"".join(b"".join(build_corpus(name, args.bytes // 3).values()) for name in ("prose", "code", "man"))
    chunks = [data[i : i + DEFAULT_CHUNK_SIZE] for i in range(0, len(data), DEFAULT_CHUNK_SIZE)]
    codec = LmCodec(api.load_model())
    payloads = codec.encode_batch(chunks)
    coded = [(c, p) for c, p in zip(chunks, payloads) if p is not None]
    assert codec.decode_batch([p for _, p in coded], [len(c) for c, _ in coded]) == [c for c, _ in coded]
    exact = 8 * sum(len(p) for _, p in coded)
    reference = float_bits(codec, [c for c, _ in coded])
    raw = sum(len(c) for c, _ in coded)
    print(json.dumps({"bytes": raw, "chunks": len(coded), "exact_bits_per_byte": exact / raw,
                      "float_bits_per_byte": reference / raw, "exact_over_float": exact / reference}, indent=1))


if __name__ == "__main__":
    main()
