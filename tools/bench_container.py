#!/usr/bin/env python3
"""Container benchmark: per-entry and per-chunk overhead, and pack / extract / random-access speed with zstd at
several chunk sizes on a real tree (default: this Python's standard library, without site-packages). Prints a Markdown table.

Also the memory and time of `lza list` on an index of many entries (--list-entries, default 2^20 directories):
peak RSS per entry beyond a one-entry archive's, so a hostile or just very large index costs what it declares; and
its time per entry on paths 2,040 components deep (--deep-entries, default 2,000), and that of extracting as many
symlinks to targets 2,040 deep.

Usage: python tools/bench_container.py [--tree DIR] [--chunk-sizes 64K,256K,1M,4M] [--list-entries N] [--deep-entries N] [--only-list]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import sysconfig
import tempfile
import time

from lzarchive import api
from lzarchive.archive.writer import ArchiveWriter
from lzarchive.bench import run_measured
from lzarchive.cli.render import parse_size


def overheads(tmp: str) -> tuple[float, float]:
    """Bytes per extra empty-file entry, and per extra chunk (store codec, 1-byte chunks)."""
    def size_of(n_files: int, chunk_size: int, content: bytes) -> int:
        src = os.path.join(tmp, f"o{n_files}-{chunk_size}")
        os.makedirs(src)
        for i in range(n_files):
            with open(os.path.join(src, f"file{i:05}"), "wb") as f:
                f.write(content)
        out = src + ".lza"
        api.pack([src], out, codec="store", chunk_size=chunk_size)
        return os.path.getsize(out)

    per_entry = (size_of(1001, 1 << 20, b"") - size_of(1, 1 << 20, b"")) / 1000
    # 1000 one-byte files with 1-byte chunks vs the same files sharing one chunk: the difference is 999 chunks
    per_chunk = (size_of(1000, 1, b"x") - size_of(1000, 1 << 20, b"x")) / 999
    return per_entry, per_chunk


def bench_tree(tree: str, chunk_size: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"tree-{chunk_size}.lza")
    started = time.perf_counter()
    stats = api.pack([tree], out, codec="zstd", chunk_size=chunk_size, excludes=["__pycache__", "site-packages"],
                     force=True)
    pack_s = time.perf_counter() - started
    dest = os.path.join(tmp, f"x{chunk_size}")
    started = time.perf_counter()
    api.extract(out, dest)
    extract_s = time.perf_counter() - started
    shutil.rmtree(dest)
    small = [e for e in api.list_entries(out) if e.has_content and 1000 < e.size < 10000]
    sample = random.Random(0).sample(small, min(50, len(small)))
    started = time.perf_counter()
    for entry in sample:
        b"".join(api.cat(out, entry.path))
    cat_ms = (time.perf_counter() - started) / len(sample) * 1000
    with api.open_archive(out) as reader:
        index_bytes = reader.file_size - reader.index.chunks[-1].end - 64 if reader.index.chunks else 0
    return {"index_per_entry": index_bytes / stats.entries, "chunk": chunk_size, "content": stats.raw_bytes, "archive": stats.archive_bytes, "pack_s": pack_s,
            "extract_s": extract_s, "cat_ms": cat_ms, "entries": stats.entries, "chunks": stats.chunks}


def directories(tmp: str, count: int, depth: int = 1) -> str:
    """An archive of `count` directory entries, each `depth` components deep (a path of 2 x depth + 10 bytes)."""
    path = os.path.join(tmp, f"dirs-{count}-{depth}.lza")
    with open(path, "wb") as out:
        writer = ArchiveWriter(out, [])
        for i in range(count):
            writer.add_dir(f"directory-{i:08}" + "/a" * (depth - 1), mode=0o755, mtime_ns=1_700_000_000_000_000_000 + i)
        writer.finish()
    return path


def lza_list(path: str) -> tuple[float, int]:
    return run_measured([sys.executable, "-m", "lzarchive", "list", path], stdout_path=os.devnull)


def list_memory(tmp: str, entries: int) -> tuple[float, float, float]:
    """`lza list` of an archive of `entries` directories: (peak RSS bytes per entry beyond a one-entry archive's,
    seconds, archive bytes per entry)."""
    _, base_rss = lza_list(directories(tmp, 1))
    big = directories(tmp, entries)
    seconds, rss = lza_list(big)
    return (rss - base_rss) / entries, seconds, os.path.getsize(big) / entries


def list_deep(tmp: str, entries: int) -> tuple[float, float]:
    """`lza list` of `entries` directories 2,040 components deep (paths of 4,090 bytes, near the limit): (seconds
    per entry beyond a one-entry archive's, archive bytes per entry). Checking a path must cost its length, not its
    depth times its length."""
    base, _ = lza_list(directories(tmp, 1, 2040))
    big = directories(tmp, entries, 2040)
    seconds, _ = lza_list(big)
    return (seconds - base) / entries, os.path.getsize(big) / entries


def extract_deep_links(tmp: str, entries: int) -> float:
    """Seconds per entry of `lza extract` of `entries` symlinks whose targets are 2,040 components deep (4,079 bytes):
    each target is resolved as the kernel will, and must cost its length, not its depth times its length."""
    path = os.path.join(tmp, f"links-{entries}.lza")
    with open(path, "wb") as out:
        writer = ArchiveWriter(out, [])
        for i in range(entries):
            writer.add_symlink(f"link-{i:08}", "/".join(["a"] * 2040), mode=0o777, mtime_ns=0)
        writer.finish()
    command = [sys.executable, "-m", "lzarchive", "extract", "-q", path, "-C"]
    base, _ = run_measured(command + [os.path.join(tmp, "none")] + ["link-00000000"], stdout_path=os.devnull)
    seconds, _ = run_measured(command + [os.path.join(tmp, "all")], stdout_path=os.devnull)
    return (seconds - base) / entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=sysconfig.get_paths()["stdlib"])
    parser.add_argument("--chunk-sizes", default="64K,256K,1M,4M")
    parser.add_argument("--list-entries", type=int, default=1 << 20)
    parser.add_argument("--deep-entries", type=int, default=2000)
    parser.add_argument("--only-list", action="store_true", help="only the lza list measurements")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_entry, seconds, archive_per_entry = list_memory(tmp, args.list_entries)
        print(f"lza list of {args.list_entries} directory entries ({archive_per_entry:.2f} archive bytes each): "
              f"{per_entry:.0f} bytes of peak RSS per entry, {seconds:.1f} s", flush=True)
        per_entry_s, archive_per_entry = list_deep(tmp, args.deep_entries)
        print(f"lza list of {args.deep_entries} directory entries 2,040 deep ({archive_per_entry:.2f} archive bytes "
              f"each): {per_entry_s * 1e3:.2f} ms per entry", flush=True)
        print(f"lza extract of {args.deep_entries} symlinks to targets 2,040 deep: "
              f"{extract_deep_links(tmp, args.deep_entries) * 1e3:.2f} ms per entry\n", flush=True)
        if args.only_list:
            return
        per_entry, per_chunk = overheads(tmp)
        print(f"overhead: {per_entry:.1f} bytes per entry (empty file), {per_chunk:.1f} bytes per chunk\n")
        print(f"tree: {args.tree}\n")
        print("| chunk size | content MB | ratio | pack MB/s | extract MB/s | cat small file ms | chunks | index B/entry |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size in args.chunk_sizes.split(","):
            r = bench_tree(args.tree, parse_size(size), tmp)
            mb = r["content"] / 1e6
            print(f"| {size} | {mb:.1f} | {r['archive'] / r['content']:.4f} | {mb / r['pack_s']:.1f} | "
                  f"{mb / r['extract_s']:.1f} | {r['cat_ms']:.2f} | {r['chunks']} | {r['index_per_entry']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
