#!/usr/bin/env python3
"""LM codec benchmark: ratio against xz -9e, zstd -19, bzip2 -9 and the float model on the same bytes; compression and
decompression tokens/s as a fraction of this machine's measured fp32 GEMM FLOP/s; peak memory of pack and extract.

The sample is real text already on the machine: Python standard library code, CPython's licence, and man pages.
Usage: python tools/bench_lm.py [--bytes 65536] [--float-reference]   (the float reference needs: pip install -e '.[bench]')
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import math
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time

import torch


def gemm_flops() -> float:
    """Best fp32 GEMM rate over a few shapes like the model's (2 * M * K * N per product)."""
    best = 0.0
    for m, k, n in ((2048, 576, 1536), (2048, 1536, 576), (4096, 1024, 1024)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 2 * m * k * n * 5 / (time.perf_counter() - started))
    return best


def sample(total: int) -> dict[str, bytes]:
    """About a third each: stdlib code, prose (licence text), man pages."""
    stdlib = sysconfig.get_paths()["stdlib"]
    sources = {
        "code": sorted(glob.glob(os.path.join(stdlib, "*.py"))),
        "prose": [os.path.join(stdlib, "LICENSE.txt")] + sorted(glob.glob("/usr/share/common-licenses/*")),
        "man": sorted(glob.glob("/usr/share/man/man1/*.gz")),
    }
    files: dict[str, bytes] = {}
    for kind, paths in sources.items():
        budget = total // 3
        for path in paths:
            if budget <= 0:
                break
            if not os.path.isfile(path):
                continue
            data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            data = data[: min(budget, 16384)]
            files[f"{kind}/{os.path.basename(path)}"] = data
            budget -= len(data)
    return files


def run(cmd: list[str], **kwargs) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in bytes."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, **kwargs)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-2000:]}")
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run heavy commands in order of interest
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def classical(data: bytes, tmp: str) -> dict[str, int]:
    path = os.path.join(tmp, "sample.cat")
    with open(path, "wb") as f:
        f.write(data)
    sizes = {}
    for name, cmd in {"xz -9e": ["xz", "-9e", "-c"], "zstd -19": ["zstd", "-19", "-c"], "bzip2 -9": ["bzip2", "-9", "-c"]}.items():
        try:
            sizes[name] = len(subprocess.run(cmd + [path], capture_output=True, check=True).stdout)
        except (FileNotFoundError, subprocess.CalledProcessError):
            import bz2
            import lzma

            import zstandard

            fallback = {"xz -9e": lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME),
                        "zstd -19": lambda d: zstandard.ZstdCompressor(level=19).compress(d),
                        "bzip2 -9": lambda d: bz2.compress(d, 9)}
            sizes[name] = len(fallback[name](data))
    return sizes


def float_reference(files: dict[str, bytes], window: int, overlap: int) -> float:
    """Bits of the float32 Hugging Face model (GGUF dequantized) on the same tokens and windows."""
    from transformers import AutoModelForCausalLM

    from lzarchive import api
    from lzarchive.codecs.lm import LmCodec, window_bodies
    from lzarchive.engine import registry

    source = registry.default_source_path()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(source), gguf_file=os.path.basename(source),
                                                 dtype=torch.float32).eval()
    codec = LmCodec(api.load_model(), window=window, overlap=overlap)
    bos = codec.model.config.bos_token
    bits = 0.0
    for data in files.values():
        encoded = codec.encoder.encode(data)
        tokens = encoded[0]
        bits += 8 * len(encoded[1])
        for start, end in window_bodies(len(tokens), window, overlap):
            primer = tokens[max(0, start - overlap) : start] if start else []
            inputs = [bos] + primer + tokens[start:end]
            with torch.no_grad():
                logits = model(torch.tensor([inputs])).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            first = len(primer)
            for offset in range(end - start):
                bits -= float(logp[first + offset, inputs[first + offset + 1]]) / math.log(2)
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=65536, help="sample size (default 64 KiB)")
    parser.add_argument("--float-reference", action="store_true", help="also run the float HF model (needs accelerate)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from lzarchive import api
    from lzarchive.codecs.lm import DEFAULT_OVERLAP, DEFAULT_WINDOW, LmCodec

    files = sample(args.bytes)
    data = b"".join(files.values())
    model = api.load_model()
    encoder = LmCodec(model).encoder
    tokens = sum(len(encoder.encode(d)[0]) for d in files.values())
    params = sum(t.numel() for n, t in model.tensors.items() if n.endswith(".q") and not n.startswith("tok_embeddings")) \
        + model.tensors["tok_embeddings.q"].numel()  # the tied output head runs once per token
    flops_per_token = 2 * params
    peak = gemm_flops()
    report = {"sample_bytes": len(data), "files": len(files), "tokens": tokens, "gemm_fp32_gflops": peak / 1e9,
              "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "sample")
        for name, content in files.items():
            os.makedirs(os.path.join(src, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(src, name), "wb") as f:
                f.write(content)
        archive = os.path.join(tmp, "sample.lza")
        lza = [sys.executable, "-m", "lzarchive"]
        pack_s, pack_rss = run(lza + ["pack", src, "-o", archive, "--codec", "lm", "--device", args.device, "-q"])
        extract_s, extract_rss = run(lza + ["extract", archive, "-C", os.path.join(tmp, "out"), "--device", args.device, "-q"])
        for name, content in files.items():
            with open(os.path.join(tmp, "out", "sample", name), "rb") as f:
                assert f.read() == content, f"benchmark lost data in {name}"
        info = api.info(archive)
        lm_stored = info.codecs.get("lm", {}).get("stored_bytes", 0)
        report.update(
            archive_bytes=info.archive_bytes, lm_payload_bytes=lm_stored, codecs=info.codecs,
            bits_per_byte_archive=8 * info.archive_bytes / len(data),
            bits_per_byte_lm_payload=8 * lm_stored / max(1, info.codecs.get("lm", {}).get("raw_bytes", 1)),
            pack_seconds=pack_s, extract_seconds=extract_s,
            compress_tokens_per_s=tokens / pack_s, decompress_tokens_per_s=tokens / extract_s,
            compress_gemm_fraction=tokens / pack_s * flops_per_token / peak,
            decompress_gemm_fraction=tokens / extract_s * flops_per_token / peak,
            peak_rss_pack_mib=pack_rss / 2**20, peak_rss_extract_mib=max(pack_rss, extract_rss) / 2**20,
        )
        sizes = classical(data, tmp)
        report["classical_bits_per_byte"] = {k: 8 * v / len(data) for k, v in sizes.items()}
        report["lza_over_xz"] = info.archive_bytes / sizes["xz -9e"]
    if args.float_reference:
        bits = float_reference(files, DEFAULT_WINDOW, DEFAULT_OVERLAP)
        report["float_model_bits_per_byte"] = bits / len(data)
        report["exact_over_float"] = (8 * lm_stored) / bits if lm_stored else None
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
