#!/usr/bin/env python3
"""Exact engine against the float model: bits per byte of the lm codec's payloads and of the float32 Hugging Face model
(the default GGUF, dequantized) on the same tokens and windows. Ratio and speed against other tools: tools/bench.py.

With --windows W,O ..., the float model alone under each window policy instead: what longer contexts could gain at best
(the exact engine stays within 1 % of it; windows may exceed the compiled model's 2048 positions, up to the float
model's own context), as bits per byte and as a fraction of xz -9e on the same bytes.

Usage: python tools/bench_lm.py [--bytes 16384] [--corpora prose,code,man] [--chunk-size 8K] [--windows 1024,256 ...]
       (needs the bench extra: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os

import torch

from bench import build_corpus  # tools/bench.py: the same corpora
from lzarchive import api
from lzarchive.cli.render import parse_size
from lzarchive.codecs import LM_MIN_CHUNK_SIZE as DEFAULT_CHUNK_SIZE
from lzarchive.codecs.lm import LmCodec, window_bodies
from lzarchive.engine import registry


def float_model() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    source = registry.default_source_path()
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(source), gguf_file=os.path.basename(source),
                                                dtype=torch.float32).eval()


def float_bits(model: torch.nn.Module, codec: LmCodec, chunks: list[bytes], window: int, overlap: int) -> float:
    """-log2 p of every token under the float model, with the lm codec's tokens and escapes and these windows (any
    the float model takes: the compiled model's positions do not limit them)."""
    bos, bits = codec.model.config.bos_token, 0.0
    for chunk in chunks:
        tokens, escaped = codec.encoder.encode(chunk)
        bits += 8 * len(escaped)
        for start, end in window_bodies(len(tokens), window, overlap):
            primer = tokens[max(0, start - overlap) : start] if start else []
            inputs = torch.tensor([bos] + primer + tokens[start:end])
            with torch.no_grad():
                logp = torch.log_softmax(model(inputs[None]).logits[0].double(), dim=-1)
            coded = torch.arange(len(primer), len(primer) + end - start)  # the output before each coded token
            bits -= float(logp[coded, inputs[coded + 1]].sum()) / math.log(2)
    return bits


def window_policies(model: torch.nn.Module, codec: LmCodec, data: bytes, chunks: list[bytes], policies: list[str]) -> None:
    """One line per window policy: the float model's bits per byte, and its payload size over xz -9e's."""
    xz = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    for policy in policies:
        window, overlap = (int(part) for part in policy.split(","))
        bits = float_bits(model, codec, chunks, window, overlap)
        print(json.dumps({"window": window, "overlap": overlap, "chunk_size": len(chunks[0]), "bytes": len(data),
                          "float_bits_per_byte": round(bits / len(data), 4), "xz_bytes": xz,
                          "float_payload_over_xz": round(bits / 8 / xz, 4)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=parse_size, default=16384, help="sample size, split evenly over the corpora")
    parser.add_argument("--corpora", default="prose,code,man", help="comma-separated corpora of tools/bench.py")
    parser.add_argument("--chunk-size", type=parse_size, default=DEFAULT_CHUNK_SIZE, help="bytes per chunk")
    parser.add_argument("--windows", nargs="+", metavar="W,O", help="float model alone under these window policies")
    args = parser.parse_args()
    corpora = args.corpora.split(",")
    data = b"".join(b"".join(build_corpus(name, args.bytes // len(corpora)).values()) for name in corpora)
    chunks = [data[i : i + args.chunk_size] for i in range(0, len(data), args.chunk_size)]
    codec = LmCodec(api.load_model())
    if args.windows:
        window_policies(float_model(), codec, data, chunks, args.windows)
        return
    payloads = codec.encode_batch(chunks)
    coded = [(c, p) for c, p in zip(chunks, payloads) if p is not None]
    assert codec.decode_batch([p for _, p in coded], [len(c) for c, _ in coded]) == [c for c, _ in coded]
    exact = 8 * sum(len(p) for _, p in coded)
    reference = float_bits(float_model(), codec, [c for c, _ in coded], codec.window, codec.overlap)
    raw = sum(len(c) for c, _ in coded)
    print(json.dumps({"bytes": raw, "chunks": len(coded), "exact_bits_per_byte": exact / raw,
                      "float_bits_per_byte": reference / raw, "exact_over_float": exact / reference}, indent=1))


if __name__ == "__main__":
    main()
