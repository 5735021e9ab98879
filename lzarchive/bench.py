"""Benchmark helpers shared by `lza bench` and tools/bench.py: the classical compressors, and measured round trips of
lza and of them on the same bytes. Every run decompresses and compares: a benchmark that loses data raises."""

from __future__ import annotations

import bz2
import gzip
import importlib
import lzma
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import zstandard

from .errors import BenchmarkFailed
from .files import describe


def _module(name: str):
    """An optional library's module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@dataclass(frozen=True)
class Classical:
    """A classical compressor: its commands and the same algorithm in-process where the command is missing (`None`
    when neither is available here). Commands read stdin and write stdout, or, with `names_files`, name their files
    as {raw} (the input), {packed} and {back} (the decompressed copy)."""

    name: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]
    compress_py: Callable[[bytes], bytes] | None
    decompress_py: Callable[[bytes], bytes] | None
    names_files: bool = False


def _zstd(level: int) -> Callable[[bytes], bytes]:
    return lambda data: zstandard.ZstdCompressor(level=level).compress(data)


def _in_process(module, compress: str, decompress: str, **options) -> tuple[Callable | None, Callable | None]:
    if module is None:
        return None, None
    return (lambda d: getattr(module, compress)(d, **options)), (lambda d: getattr(module, decompress)(d, **options))


_brotli, _ppmd, _paq = _module("brotli"), _module("pyppmd"), _module("paq")
CLASSICAL = (
    Classical("xz -9e", ("xz", "-9e", "-c"), ("xz", "-dc"), lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME),
              lzma.decompress),
    Classical("zstd -19", ("zstd", "-19", "-c", "-q"), ("zstd", "-dc", "-q"), _zstd(19), zstandard.decompress),
    Classical("zstd --ultra -22", ("zstd", "--ultra", "-22", "-c", "-q"), ("zstd", "-dc", "-q"), _zstd(22),
              zstandard.decompress),
    Classical("brotli -q 11", ("brotli", "-q", "11", "-c"), ("brotli", "-dc"),
              (lambda d: _brotli.compress(d, quality=11)) if _brotli else None, _brotli and _brotli.decompress),
    Classical("bzip2 -9", ("bzip2", "-9", "-c"), ("bzip2", "-dc"), lambda d: bz2.compress(d, 9), bz2.decompress),
    Classical("gzip -9", ("gzip", "-9", "-c", "-n"), ("gzip", "-dc"), lambda d: gzip.compress(d, 9, mtime=0),
              gzip.decompress),
)
# The strongest classical compressors (context mixing and PPM): the real competition on ratio, measured by
# tools/bench.py where installed. zpaq: Debian's `zpaq` package. paq9a: PyPI `paq` (needs `pip install 'Cython<3'`
# and `pip install --no-build-isolation paq`). PPMd: PyPI `pyppmd` (the bench extra), variant I at order 16, 256 MiB.
PEERS = (
    Classical("zpaq -m5", ("zpaq", "a", "{packed}", "{raw}", "-m5"), ("zpaq", "x", "{packed}", "{raw}", "-to", "{back}"),
              None, None, names_files=True),
    Classical("paq9a", (), (), *_in_process(_paq, "compress", "decompress")),
    Classical("PPMd -o16", (), (), *_in_process(_ppmd, "compress", "decompress", max_order=16, mem_size=256 << 20)),
)


@dataclass(frozen=True)
class Measurement:
    tool: str
    raw_bytes: int
    stored_bytes: int
    compress_s: float
    decompress_s: float
    peak_rss: int | None  # bytes, the larger of the two processes; None when measured in this process
    how: str  # "command", "python" (in-process fallback) or "lza"

    @property
    def bits_per_byte(self) -> float:
        return 8 * self.stored_bytes / self.raw_bytes if self.raw_bytes else 0.0


def gemm_flops() -> float:
    """This machine's best fp32 GEMM rate (FLOP/s) over shapes like the default model's: the yardstick for lm speed."""
    import torch

    best = 0.0
    for m, k, n in ((2048, 576, 1536), (2048, 1536, 576), (4096, 1024, 1024)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        started = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 2 * m * k * n * 5 / (time.perf_counter() - started))
    return best


def model_flops_per_token(tensors: dict) -> int:
    """2 x the parameters that run per token: every linear layer and the output head (the embeddings when tied)."""
    tied = "output.q" not in tensors
    return 2 * sum(t.numel() for name, t in tensors.items() if name.endswith(".q") and (tied or name != "tok_embeddings.q"))


# Runs the command and reports its own peak RSS. A launcher is needed because a child forked from a large process
# (this one, with torch and the model loaded) inherits the parent's RSS in ru_maxrss; the command forked from this
# small launcher inherits only the launcher's (about 8 MiB), so tools smaller than that read as that floor.
_LAUNCHER = ("import os, sys\n"
             "pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "sys.stderr.write(f'\\nlza-peak-rss-kib {usage.ru_maxrss}\\n')\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_measured(argv: list[str], stdin_path: str | None = None, stdout_path: str | None = None,
                 env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run a command; wall seconds and that command's own peak RSS in bytes (see _LAUNCHER)."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, *argv], stdin=stdin, stdout=stdout,
                              stderr=subprocess.PIPE, env=env)
        wall = time.perf_counter() - started
    finally:
        for stream in (stdin, stdout):
            if stream is not subprocess.DEVNULL:
                stream.close()
    stderr, _, peak = proc.stderr.rpartition(b"\nlza-peak-rss-kib ")
    if proc.returncode or not peak:
        reason = f"exit {proc.returncode}: {stderr.decode(errors='replace').strip()[-500:]}"
        raise BenchmarkFailed(tool=" ".join(argv[:4]), reason=reason)
    return wall, int(peak) * 1024


def measure_classical(tool: Classical, data: bytes, tmp: str) -> Measurement | None:
    """Compress and decompress `data` with `tool`; None when it is not available on this machine."""
    if tool.compress and shutil.which(tool.compress[0]):
        paths = {name: os.path.join(tmp, f"classical.{name}") for name in ("raw", "packed", "back")}
        for path in paths.values():
            if os.path.exists(path):
                os.remove(path)  # zpaq adds to an archive that exists
        with open(paths["raw"], "wb") as f:
            f.write(data)
        if tool.names_files:
            compress_s, rss_c = run_measured([arg.format(**paths) for arg in tool.compress])
            decompress_s, rss_d = run_measured([arg.format(**paths) for arg in tool.decompress])
        else:
            compress_s, rss_c = run_measured(list(tool.compress), paths["raw"], paths["packed"])
            decompress_s, rss_d = run_measured(list(tool.decompress), paths["packed"], paths["back"])
        with open(paths["back"], "rb") as f:
            _check(tool.name, f.read() == data)
        return Measurement(tool.name, len(data), os.path.getsize(paths["packed"]), compress_s, decompress_s,
                           max(rss_c, rss_d), "command")
    if tool.compress_py is None or tool.decompress_py is None:
        return None
    started = time.perf_counter()
    packed_bytes = tool.compress_py(data)
    middle = time.perf_counter()
    try:
        unpacked = tool.decompress_py(packed_bytes)
    except Exception as e:  # a library's decoder refusing its own output (pyppmd 1.3.1 at order 16 does) is a loss
        raise BenchmarkFailed(tool=tool.name, reason=f"its decompressor failed: {type(e).__name__}: {e}") from e
    _check(tool.name, unpacked == data)
    return Measurement(tool.name, len(data), len(packed_bytes), middle - started, time.perf_counter() - middle, None,
                       "python")


def measure_per_file(tool: Classical, files: dict[str, bytes], tmp: str) -> Measurement | None:
    """Each file compressed alone, as a user of a classical tool keeps files one by one: sizes and times summed, the
    largest peak RSS. None when the tool is not available here."""
    parts = [measure_classical(tool, data, tmp) for data in files.values()]
    if not parts or parts[0] is None:
        return None
    peaks = [m.peak_rss for m in parts if m.peak_rss is not None]
    return Measurement(f"{tool.name}, per file", sum(m.raw_bytes for m in parts), sum(m.stored_bytes for m in parts),
                       sum(m.compress_s for m in parts), sum(m.decompress_s for m in parts),
                       max(peaks) if peaks else None, parts[0].how)


def write_tree(files: dict[str, bytes], root: str) -> None:
    for name, content in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


LZA_TREE = "lza-src"  # measure_lza's tree under `tmp`, and so the prefix of every path in its archive
LZA_ARCHIVE = "bench.lza"  # measure_lza's archive under `tmp`, left there until the next measurement


def measure_lza(files: dict[str, bytes], tmp: str, pack_options: Iterable[str] = (), *, label: str = "lza",
                device: str = "cpu", env: dict[str, str] | None = None, ray: str | None = None) -> Measurement:
    """Pack the tree `files` with `lza pack`, extract it, and compare every file; sizes are of the whole archive.
    ray: pack and extract on the Ray cluster at this address (`--ray`)."""
    src, archive, out = (os.path.join(tmp, name) for name in (LZA_TREE, LZA_ARCHIVE, "lza-out"))
    for path in (src, out):
        shutil.rmtree(path, ignore_errors=True)
    write_tree(files, src)
    lza = [sys.executable, "-m", "lzarchive"]
    cluster = ["--ray", ray] if ray else []
    compress_s, rss_c = run_measured(lza + ["pack", src, "-o", archive, "-q", "--force", "--device", device,
                                            *cluster, *pack_options], env=env)
    decompress_s, rss_d = run_measured(lza + ["extract", archive, "-C", out, "-q", "--device", device, *cluster],
                                       env=env)
    for name, content in files.items():
        with open(os.path.join(out, LZA_TREE, name), "rb") as f:
            _check(label, f.read() == content, name)
    return Measurement(label, sum(map(len, files.values())), os.path.getsize(archive), compress_s, decompress_s,
                       max(rss_c, rss_d), "lza")


def sample_files(paths: Iterable[str], budget: int, per_file: int, *, prefix: str = "",
                 decompress: bool = False) -> dict[str, bytes]:
    """Up to `per_file` bytes from each regular file under `paths` (walked in sorted order) until `budget` bytes,
    named `prefix` + sequence number + base name; with `decompress`, .gz and .xz files are read decompressed."""
    files: dict[str, bytes] = {}
    remaining = budget
    for path in _walk(paths):
        if remaining <= 0:
            break
        opener = {".gz": gzip.open, ".xz": lzma.open}.get(os.path.splitext(path)[1], open) if decompress else open
        try:
            with opener(path, "rb") as f:
                data = f.read(min(per_file, remaining))
        except (OSError, EOFError, lzma.LZMAError) as exc:
            warnings.warn(f"{path}: not sampled, cannot be read ({describe(exc) if isinstance(exc, OSError) else exc})",
                          RuntimeWarning)
            continue
        if data:
            files[f"{prefix}{len(files):04d}-{os.path.basename(path)}"] = data
            remaining -= len(data)
    return files


def _walk(paths: Iterable[str]):
    for path in paths:
        if os.path.isfile(path):
            yield path
        for root, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = os.path.join(root, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    yield full


def _check(tool: str, same: bool, name: str = "") -> None:
    if not same:
        raise BenchmarkFailed(tool=tool, reason=f"decompressed bytes differ{' in ' + name if name else ''}")
