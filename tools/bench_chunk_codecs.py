#!/usr/bin/env python3
"""Which codec serves each lza chunk best: lm, zstd (lza's own codecs, their real payloads) or a classical
context-mixing / PPM coder a chunk codec could wrap (PPMd o16 via pyppmd, paq9a via paq, where installed). Decides
whether a classical chunk codec would win anywhere (issue 18, item 4): a codec is worth registering only where it
beats lm and zstd on whole chunks.

The corpus (a tools/bench.py corpus) is concatenated and cut into chunks of the lm codec's default size for its
length (lm_chunk_size); lza's writer also keeps a small file from straddling two chunks, which this leaves out.

    python tools/bench_chunk_codecs.py --corpus logs --size 256K
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench as corpora  # noqa: E402  (tools/bench.py: the corpora)

from lzarchive import api  # noqa: E402
from lzarchive import bench  # noqa: E402
from lzarchive.cli.render import parse_size  # noqa: E402
from lzarchive.codecs import ZstdCodec, lm_chunk_size  # noqa: E402
from lzarchive.codecs.lm import LmCodec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="logs", help="one of " + ", ".join(corpora.CORPORA))
    parser.add_argument("--size", default="256K", help="bytes of the corpus")
    args = parser.parse_args()
    data = b"".join(corpora.build_corpus(args.corpus, parse_size(args.size)).values())
    size = lm_chunk_size(len(data))
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    columns = {"lm": LmCodec(api.load_model()).encode_batch(chunks), "zstd": ZstdCodec().encode_batch(chunks)}
    for peer in bench.PEERS:
        if peer.compress_py:
            columns[peer.name] = [peer.compress_py(chunk) for chunk in chunks]
    print(f"{args.corpus}: {len(data)} bytes in {len(chunks)} chunks of {size}")
    print("chunk  raw     " + "  ".join(f"{name:>10}" for name in columns) + "  best")
    sizes = [{name: len(payloads[i]) if payloads[i] is not None else len(chunk) for name, payloads in columns.items()}
             for i, chunk in enumerate(chunks)]
    wins = dict.fromkeys(columns, 0)
    for i, (chunk, row) in enumerate(zip(chunks, sizes)):
        best = min(row, key=row.get)
        wins[best] += 1
        print(f"{i:5}  {len(chunk):6}  " + "  ".join(f"{row[name]:10}" for name in columns) + f"  {best}")
    print("total  " + f"{len(data):6}  " + "  ".join(f"{sum(row[name] for row in sizes):10}" for name in columns))
    print("chunks won: " + ", ".join(f"{name} {count}" for name, count in wins.items()))


if __name__ == "__main__":
    main()
