#!/usr/bin/env python3
"""lza benchmark suite: ratio, speed, memory and random-access cost of lza against the classical compressors on the
same bytes (xz, zstd, brotli, bzip2, gzip, and where installed the strongest: zpaq -m5, paq9a, PPMd), each run solid
(the corpus as one stream) and per file; with sweeps over chunk size, context window, decode batch and device; writes a
Markdown report with PNG charts.

Corpora are assembled from real material already on the machine (see CORPORA for provenance and licences), never from
lza's own tests. Every lza run extracts and compares bytes; every classical run decompresses and compares.

    python tools/bench.py --size quick --out tools/results/DATE-bench-cpu      # minutes on 2 CPU cores
    python tools/bench.py --size 1M --device cuda --out tools/results/DATE-bench-gpu
    python tools/bench.py --size 64K --corpora prose --no-sweeps --ray local --out ...   # lza in-process and on Ray
Needs the bench extra: pip install -e '.[bench]' (matplotlib, brotli, pyppmd); zpaq from Debian (apt install zpaq);
paq9a from PyPI: pip install 'Cython<3' setuptools && pip install --no-build-isolation paq. A peer that is missing is
left out of the report (it says which ran).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from lzarchive import api, bench
from lzarchive.cli.render import parse_size
from lzarchive.codecs import LM_MIN_CHUNK_SIZE as LM_CHUNK
from lzarchive.codecs import LM_DEFAULT_WINDOW as DEFAULT_WINDOW
from lzarchive.codecs.lm import LmCodec
from lzarchive.engine.model import batching
from lzarchive.errors import BenchmarkFailed

SIZES = {"quick": 8 << 10, "full": 1 << 20}  # bytes per corpus (quick: one 8 KiB lm chunk each, ~32 minutes on 2 cores)
PER_FILE = 16 << 10  # at most this much of each file, and at most a quarter of the corpus: a corpus spans many files
BATCH_SWEEP_CHUNKS = 16  # the decode batch sweep cuts its text into this many chunks
CANTERBURY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpora", "canterbury")
SINGLE_FILE = ("asyoulik", "lcet10")  # public benchmark texts with published figures: each packed whole and alone
LARGE_FILES = ("logs",)  # corpora of few large files: up to a quarter of the corpus from each
TEXT = ("prose", "code", "man", "logs", "data") + SINGLE_FILE


def _stdlib(pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], pattern)))


def _site(pattern: str) -> list[str]:
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["purelib"], pattern), recursive=True))


def _logs() -> list[str]:
    """The system's and package managers' logs, rotated ones (.gz, .xz) included, in name order."""
    return sorted(path for path in glob.glob("/var/log/**/*.log*", recursive=True)
                  if os.path.isfile(path) and not os.path.islink(path))


# name → (what and where from, licence, how to list the files)
CORPORA = {
    "prose": ("licence texts: Debian's /usr/share/common-licenses and CPython's LICENSE.txt",
              "the licences themselves permit verbatim copies",
              lambda: [os.path.join(sysconfig.get_paths()["stdlib"], "LICENSE.txt")] + sorted(glob.glob("/usr/share/common-licenses/*"))),
    "code": ("Python standard library modules (*.py at the top of the stdlib)", "PSF License",
             lambda: _stdlib("*.py")),
    "man": ("section 1 man pages of the installed Debian packages (/usr/share/man/man1, gunzipped roff)",
            "each package's own licence (free software, see /usr/share/doc/*/copyright)",
            lambda: sorted(glob.glob("/usr/share/man/man1/*.gz"))),
    "logs": ("system and package-manager logs: /var/log/**/*.log* (dpkg, apt term/history/eipp, "
             "alternatives, ...; rotated .gz/.xz logs decompressed), as they were on the measuring machine",
             "machine-generated records of this machine's package installs", _logs),
    "data": ("JSON, CSV and XML data files shipped by installed Python packages (site-packages)",
             "each package's own licence (open source)",
             lambda: _site("**/*.json") + _site("**/*.csv") + _site("**/*.xml")),
    "asyoulik": ("Canterbury corpus: asyoulik.txt, Shakespeare's \"As You Like It\" (125,179 bytes), whole and alone, "
                 "from ../shared/corpora/canterbury", "public domain",
                 lambda: [os.path.join(CANTERBURY, "asyoulik.txt")]),
    "lcet10": ("Canterbury corpus: lcet10.txt, Library of Congress workshop proceedings (426,754 bytes), whole and "
               "alone, from ../shared/corpora/canterbury", "public domain",
               lambda: [os.path.join(CANTERBURY, "lcet10.txt")]),
    "binary": ("shared libraries (/usr/lib/x86_64-linux-gnu), PNG images and already-gzipped man pages",
               "each package's own licence",
               lambda: sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")) + _site("**/*.png")
               + sorted(glob.glob("/usr/share/man/man8/*.gz"))),
}


def build_corpus(name: str, size: int) -> dict[str, bytes]:
    """Up to PER_FILE bytes of each source file (a quarter of the corpus for LARGE_FILES corpora), in sorted order,
    until `size` bytes; compressed man pages and rotated logs are read decompressed. The single-file corpora are their whole
    file, whatever the size."""
    paths = [path for path in CORPORA[name][2]() if "lzarchive" not in path]
    if name in SINGLE_FILE:
        return {os.path.basename(path): open_whole(path) for path in paths if os.path.exists(path)}
    per_file = max(1, size // 4) if name in LARGE_FILES else min(PER_FILE, max(1, size // 4))
    return bench.sample_files(paths, size, per_file, prefix=f"{name}/", decompress=name in TEXT)


def open_whole(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@dataclass
class Row:
    corpus: str
    tool: str
    raw_bytes: int
    stored_bytes: int
    bits_per_byte: float
    compress_s: float
    decompress_s: float
    peak_rss_mib: float | None
    tokens: int | None = None  # lm tokens of the corpus (lza rows that code with lm)
    lm_bytes: int | None = None  # of raw_bytes, how many the archive holds in lm chunks
    container_bytes: int | None = None  # lza rows: the archive less its codecs' payloads (headers, index, footer)


def row_of(corpus: str, m: bench.Measurement, tokens: int | None = None, lm_bytes: int | None = None,
           container_bytes: int | None = None) -> Row:
    return Row(corpus, m.tool, m.raw_bytes, m.stored_bytes, round(m.bits_per_byte, 4), round(m.compress_s, 3),
               round(m.decompress_s, 3), round(m.peak_rss / 2**20, 1) if m.peak_rss else None, tokens, lm_bytes,
               container_bytes)


def compare_tools(corpora: dict[str, dict[str, bytes]], tokens: dict[str, int], device: str, tmp: str,
                  lm_options: list[str], ray: str | None = None) -> tuple[list[Row], list[str]]:
    """lza (auto), each of its codecs, and the classical tools. On text, auto codes with lm (lm_bytes tells), so a
    separate --codec lm run would repeat the slowest measurement; it runs on the other corpora, where it differs.
    `lm_options`: extra `lza pack` options for the runs that use the model (auto, lm). `ray`: also run lza (auto) with
    `--ray ray`, a row of its own. Returns the rows and, for a classical tool that did not give back its input (a
    peer's bug; lza's own failure ends the run), what failed where: the report lists it instead of a row."""
    rows, failures = [], []
    for name, files in corpora.items():
        data = b"".join(files.values())
        for codec in ("auto", "zstd", "store") if name in TEXT else ("auto", "lm", "zstd", "store"):
            label = "lza" if codec == "auto" else f"lza --codec {codec}"
            print(f"[{name}] {label} ...", file=sys.stderr, flush=True)
            options = ["--codec", codec] + (lm_options if codec in ("auto", "lm") else [])
            m = bench.measure_lza(files, tmp, options, label=label, device=device)
            rows.append(lza_row(name, m, tokens[name], tmp))
            if codec == "auto" and ray:
                print(f"[{name}] lza --ray {ray} ...", file=sys.stderr, flush=True)
                chunks = coded_chunks(tmp)
                m = bench.measure_lza(files, tmp, options, label=f"lza --ray {ray}", device=device, ray=ray)
                if coded_chunks(tmp) != chunks:  # the archives differ only where the tree's times do
                    raise RuntimeError(f"[{name}] lza --ray {ray} coded other chunks than lza in one process")
                rows.append(lza_row(name, m, tokens[name], tmp))
        for tool in bench.CLASSICAL + bench.PEERS:
            print(f"[{name}] {tool.name} ...", file=sys.stderr, flush=True)
            for label, measure in ((tool.name, lambda: bench.measure_classical(tool, data, tmp)),
                                   (f"{tool.name}, per file", lambda: bench.measure_per_file(tool, files, tmp))):
                try:
                    m = measure()
                except BenchmarkFailed as e:
                    failures.append(f"{name}: {label}: {e}")
                    print(f"[{name}] {label} failed: {e}", file=sys.stderr, flush=True)
                    continue
                if m:
                    rows.append(row_of(name, m))
    return rows, failures


def lza_row(corpus: str, m: bench.Measurement, tokens: int, tmp: str) -> Row:
    """The row of the lza run whose archive is in `tmp`: its tokens where it used the model, its container bytes."""
    info = api.info(os.path.join(tmp, bench.LZA_ARCHIVE))
    lm = info.codecs.get("lm", {}).get("raw_bytes", 0)
    payload = sum(c["stored_bytes"] for c in info.codecs.values())
    return row_of(corpus, m, tokens if lm else None, lm, info.archive_bytes - payload)


def coded_chunks(tmp: str) -> list[bytes]:
    """The payloads of the archive in `tmp`, in order."""
    with api.open_archive(os.path.join(tmp, bench.LZA_ARCHIVE)) as reader:
        return [reader.read_stored(i)[1] for i in range(len(reader.index.chunks))]


def chunk_size_sweep(files: dict[str, bytes], device: str, tmp: str) -> list[dict]:
    """Ratio against the bytes decoded (and time taken) to read one small file with `lza cat`."""
    small = min(files, key=lambda n: len(files[n]))
    out = []
    for codec, sizes in (("lm", (4 << 10, 8 << 10, 16 << 10)), ("zstd", (4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20))):
        for size in sizes:
            print(f"[chunk size] {codec} {size} ...", file=sys.stderr, flush=True)
            m = bench.measure_lza(files, tmp, ["--codec", codec, "--chunk-size", str(size)], label=codec, device=device)
            started = time.perf_counter()
            read = b"".join(api.cat(os.path.join(tmp, bench.LZA_ARCHIVE), f"{bench.LZA_TREE}/{small}", device=device))
            assert read == files[small]
            cat_s = time.perf_counter() - started
            out.append({"codec": codec, "chunk_size": size, "bits_per_byte": round(m.bits_per_byte, 4),
                        "decoded_to_read_one_file": min(size, sum(map(len, files.values()))), "cat_seconds": round(cat_s, 3)})
    return out


def model_sweeps(files: dict[str, bytes], model, device: str) -> dict[str, list[dict]]:
    """In-process with the codec itself: context window (ratio and speed), decode batch (throughput), device."""
    data = b"".join(files.values())

    def cut(size: int) -> list[bytes]:
        return [data[i : i + size] for i in range(0, len(data), size)]

    def run(codec: LmCodec, chunks: list[bytes]) -> dict:
        started = time.perf_counter()
        payloads = codec.encode_batch(chunks)
        middle = time.perf_counter()
        kept = [(c, p) for c, p in zip(chunks, payloads) if p is not None]
        decoded = codec.decode_batch([p for _, p in kept], [len(c) for c, _ in kept])
        assert decoded == [c for c, _ in kept], "lm sweep lost data"
        tokens = sum(len(codec.encoder.encode(c)[0]) for c, _ in kept)
        return {"bits_per_byte": round(8 * sum(len(p) for _, p in kept) / max(1, sum(len(c) for c, _ in kept)), 4),
                "compress_tokens_per_s": round(tokens / (middle - started), 1),
                "decompress_tokens_per_s": round(tokens / (time.perf_counter() - middle), 1)}

    chunks = cut(LM_CHUNK)
    sweeps: dict[str, list[dict]] = {"window": [], "decode_batch": [], "device": []}
    for window in (w for w in (256, 512, 1024, 2048) if w <= model.config.max_positions):
        print(f"[window] {window} ...", file=sys.stderr, flush=True)
        result = run(LmCodec(model, window=window, overlap=window // 4, device=device), chunks)
        sweeps["window"].append({"window": window, "overlap": window // 4, **result})
        if window == DEFAULT_WINDOW:  # the default: also this device's entry in the device sweep
            sweeps["device"].append({"device": device, **result})
    small = cut(max(1, min(LM_CHUNK, len(data) // BATCH_SWEEP_CHUNKS)))
    codec = LmCodec(model, device=device)
    payloads = codec.encode_batch(small)
    tokens = sum(len(codec.encoder.encode(c)[0]) for c in small)
    for batch in sorted({1, 4, len(small)}):
        print(f"[decode batch] {batch} ...", file=sys.stderr, flush=True)
        codec.batch_chunks = batch
        started = time.perf_counter()
        assert codec.decode_batch(payloads, [len(c) for c in small]) == small, "lm sweep lost data"
        sweeps["decode_batch"].append({"chunks_in_lockstep": batch, "chunk_bytes": len(small[0]),
                                       "decompress_tokens_per_s": round(tokens / (time.perf_counter() - started), 1)})
    others = [d for d in ("cpu", "cuda") if d != device and (d == "cpu" or torch.cuda.is_available())]
    for dev in others:
        print(f"[device] {dev} ...", file=sys.stderr, flush=True)
        sweeps["device"].append({"device": dev, **run(LmCodec(model, device=dev), chunks)})
    return sweeps


def charts(rows: list[Row], chunk_sweep: list[dict], out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(r.corpus for r in rows))
    tools = list(dict.fromkeys(r.tool for r in rows))
    made = []

    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(tools)
    for t, tool in enumerate(tools):
        values = [next((r.bits_per_byte for r in rows if r.corpus == c and r.tool == tool), 0) for c in corpora]
        ax.bar([i + t * width for i in range(len(corpora))], values, width, label=tool)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(corpora))], corpora)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.legend(fontsize=7, ncol=5)
    ax.set_title("Ratio per corpus per tool")
    made.append(_save(fig, out, "ratio.png"))

    fig, ax = plt.subplots(figsize=(7, 5))
    text = [r for r in rows if r.corpus in TEXT]
    for tool in tools:
        mine = [r for r in text if r.tool == tool]
        raw = sum(r.raw_bytes for r in mine)
        if not raw:  # a tool measured on the other corpora only
            continue
        ax.scatter(raw / max(1e-9, sum(r.compress_s for r in mine)) / 2**20,
                   8 * sum(r.stored_bytes for r in mine) / raw, label=tool)
    ax.set_xscale("log")
    ax.set_xlabel("compression speed, MiB/s (log)")
    ax.set_ylabel("bits per byte on text")
    ax.legend(fontsize=7)
    ax.set_title("Speed against ratio (text corpora)")
    made.append(_save(fig, out, "speed_vs_ratio.png"))
    if not chunk_sweep:
        return made

    fig, ax = plt.subplots(figsize=(7, 5))
    for codec in dict.fromkeys(p["codec"] for p in chunk_sweep):
        points = [p for p in chunk_sweep if p["codec"] == codec]
        ax.plot([p["decoded_to_read_one_file"] / 1024 for p in points], [p["bits_per_byte"] for p in points], "o-",
                label=f"lza --codec {codec}")
    ax.set_xscale("log")
    ax.set_xlabel("KiB decoded to read one small file (chunk size, log)")
    ax.set_ylabel("bits per byte")
    ax.legend()
    ax.set_title("Chunk size: ratio against random-access cost")
    made.append(_save(fig, out, "chunk_size.png"))
    return made


def _save(fig, out: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    return name


def summary(rows: list[Row], flops: float, per_token: int) -> dict:
    text = [r for r in rows if r.corpus in TEXT]

    def total(tool: str, field: str) -> float:
        return sum(getattr(r, field) or 0 for r in text if r.tool == tool)

    tokens = total("lza", "tokens")
    compress_tps = tokens / total("lza", "compress_s")
    decompress_tps = tokens / total("lza", "decompress_s")
    return {
        "text_corpora": list(dict.fromkeys(r.corpus for r in text)),
        "text_bytes": total("lza", "raw_bytes"),
        "lm_share_of_text": round(total("lza", "lm_bytes") / total("lza", "raw_bytes"), 4),
        "lza_over_xz_text": round(total("lza", "stored_bytes") / total("xz -9e", "stored_bytes"), 4),
        "lza_over_zstd19_text": round(total("lza", "stored_bytes") / total("zstd -19", "stored_bytes"), 4),
        "lm_tokens": tokens,
        "compress_tokens_per_s": round(compress_tps, 1),
        "decompress_tokens_per_s": round(decompress_tps, 1),
        "compress_gemm_fraction": round(compress_tps * per_token / flops, 4),
        "decompress_gemm_fraction": round(decompress_tps * per_token / flops, 4),
        "gemm_fp32_gflops": round(flops / 1e9, 1),
        "model_gflops_per_token": round(per_token / 1e9, 4),
    }


def report(meta: dict, rows: list[Row], chunk_sweep: list[dict], sweeps: dict, made: list[str], out: str) -> str:
    s = meta["summary"]
    lines = [
        f"# lza benchmark report ({meta['date']})", "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.", "",
        "## Summary", "",
        f"- Text ({s['text_bytes']} bytes over {', '.join(s['text_corpora'])}): lza / xz -9e = **{s['lza_over_xz_text']}**, "
        f"lza / zstd -19 = {s['lza_over_zstd19_text']} (sizes are whole archives, header and index included; lza's "
        f"default codec choice coded {100 * s['lm_share_of_text']:.0f} % of the text bytes with lm).",
        f"- lza on text: compression {s['compress_tokens_per_s']} tokens/s = **{100 * s['compress_gemm_fraction']:.1f} %**, "
        f"decompression {s['decompress_tokens_per_s']} tokens/s = **{100 * s['decompress_gemm_fraction']:.1f} %** of "
        f"this machine's measured fp32 GEMM rate ({s['gemm_fp32_gflops']} GFLOP/s; model FLOPs = "
        f"{s['model_gflops_per_token']} GFLOP per token). Times are of the whole `lza pack` / `lza extract` processes, "
        "model loading included. A file of one chunk decodes token by token alone; archives of many chunks decode "
        f"up to {meta['lockstep']['chunks']} of them in lockstep (fewer at longer windows: their KV caches stay within "
        f"{meta['lockstep']['cache_budget'] / 2**30:.0f} GiB){' (see the decode batch sweep)' if sweeps else ''}.", "",
        "## Ratio, speed and memory per corpus", "",
        "Peak RSS is each process's own, measured through a small launcher (about 8 MiB, which smaller tools read as).",
        "",
        "Container: for lza, the bytes of the archive that are not codec payloads (chunk headers, index, header, footer),"
        " and their share of the archive.", "",
        "| corpus | tool | bytes | stored | container | bits/byte | compress s | decompress s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rss = "" if r.peak_rss_mib is None else f"{r.peak_rss_mib:.0f}"
        container = "" if r.container_bytes is None else f"{r.container_bytes} ({100 * r.container_bytes / r.stored_bytes:.1f} %)"
        lines.append(f"| {r.corpus} | {r.tool} | {r.raw_bytes} | {r.stored_bytes} | {container} | {r.bits_per_byte:.3f} | "
                     f"{r.compress_s:.2f} | {r.decompress_s:.2f} | {rss} |")
    if meta["failures"]:
        lines += ["", "Runs that did not give back their input (no row: their size would be no compression):", ""]
        lines += [f"- {failure}" for failure in meta["failures"]]
    for name in made:
        if name != "chunk_size.png":
            lines += ["", f"![{name[:-4].replace('_', ' ')}]({name})"]
    if chunk_sweep:
        lines += ["", "## Chunk size: ratio against the cost of reading one small file", "",
                  "| codec | chunk size | bits/byte | bytes decoded to read one file | lza cat s |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {p['codec']} | {p['chunk_size']} | {p['bits_per_byte']:.3f} | {p['decoded_to_read_one_file']} | "
                  f"{p['cat_seconds']:.2f} |" for p in chunk_sweep]
        lines += ["", "![chunk size](chunk_size.png)"]
    lines += [""]
    for name, points in sweeps.items():
        lines += [f"## Sweep: {name.replace('_', ' ')} (lm codec, in-process, prose + code)", ""]
        keys = list(points[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
        lines += ["| " + " | ".join(str(p[k]) for k in keys) + " |" for p in points] + [""]
    lines += ["## Corpora", "", "| corpus | files | bytes | source | licence |", "|---|---:|---:|---|---|"]
    for name, c in meta["corpora"].items():
        source, licence, _ = CORPORA[name]
        lines.append(f"| {name} | {c['files']} | {c['bytes']} | {source} | {licence} |")
    lines += ["", "A classical tool's name alone is its solid run (the corpus's files concatenated, one stream); "
              "', per file' is every file compressed alone, summed. Classical tools ran as commands where installed, "
              "else in-process through the same library (peak RSS then blank): " + ", ".join(f"{t}: {h}" for t, h in meta["classical_how"].items()) + "."]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="quick", help="bytes per corpus: quick (8K), full (1M) or a size (256K)")
    parser.add_argument("--out", required=True, help="directory for report.md, results.json and the charts")
    parser.add_argument("--device", default="cpu", help="where lza's model runs (the device sweep also runs the other of cpu and cuda, if present)")
    parser.add_argument("--corpora", default=",".join(CORPORA), help="comma-separated subset of " + ", ".join(CORPORA))
    parser.add_argument("--ray", metavar="ADDRESS", help="also run lza on this Ray cluster (local: one started here)")
    parser.add_argument("--no-sweeps", action="store_true", help="skip the chunk-size, window, batch and device sweeps")
    parser.add_argument("--lm-options", default="", help="extra lza pack options for the runs that use the model, "
                        "e.g. '--chunk-size 32K --window 2048' (the tighter setting)")
    args = parser.parse_args()
    if importlib.util.find_spec("matplotlib") is None:  # the charts come last: fail before hours of measurement
        parser.error("matplotlib is missing: pip install -e '.[bench]'")
    size = SIZES.get(args.size) or parse_size(args.size)
    os.makedirs(args.out, exist_ok=True)

    model = api.load_model()
    encoder = LmCodec(model).encoder
    names = args.corpora.split(",")
    if unknown := set(names) - set(CORPORA):
        parser.error(f"unknown corpora {', '.join(sorted(unknown))}; choose from {', '.join(CORPORA)}")
    if not set(names) & set(TEXT):
        parser.error(f"include at least one text corpus ({', '.join(TEXT)}): the summary is about text")
    corpora = {}
    for name in names:
        corpora[name] = build_corpus(name, size)
        if not corpora[name]:
            parser.error(f"corpus {name}: none of its sources exist on this machine ({CORPORA[name][0]})")
    tokens = {name: sum(len(e[0]) for d in files.values() if (e := encoder.encode(d))) for name, files in corpora.items()}
    flops = bench.gemm_flops()
    with tempfile.TemporaryDirectory(prefix="lza-bench-") as tmp:
        rows, failures = compare_tools(corpora, tokens, args.device, tmp, shlex.split(args.lm_options), args.ray)
        sweep_files = {**corpora.get("prose", {}), **corpora.get("code", {})}
        chunk_sweep = [] if args.no_sweeps else chunk_size_sweep(sweep_files, args.device, tmp)
    sweeps = {} if args.no_sweeps else model_sweeps(sweep_files, model, args.device)
    lockstep = batching(torch.device(args.device))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""),
        "command": shlex.join(["python"] + sys.argv),
        "corpora": {n: {"files": len(f), "bytes": sum(map(len, f.values()))} for n, f in corpora.items()},
        "classical_how": {t.name: "command" if t.compress and shutil.which(t.compress[0])
                          else "python" if t.compress_py else "not installed" for t in bench.CLASSICAL + bench.PEERS},
        "summary": summary(rows, flops, bench.model_flops_per_token(model.tensors)),
        "failures": failures,
        "lockstep": {"chunks": lockstep.chunks, "cache_budget": lockstep.cache_budget},
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({**meta, "rows": [asdict(r) for r in rows], "chunk_size": chunk_sweep, "sweeps": sweeps}, f, indent=1)
    made = charts(rows, chunk_sweep, args.out)
    print(report(meta, rows, chunk_sweep, sweeps, made, args.out))
    print(json.dumps(meta["summary"], indent=1))


if __name__ == "__main__":
    main()
