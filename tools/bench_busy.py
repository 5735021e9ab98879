#!/usr/bin/env python3
"""How lza's decoding shares a machine: decodes the first bytes of every chunk of an archive (lockstep decoding, after
loading the model) in one process alone, then in several at once, in three settings: all the CPU threads torch and
numba take by default with the OpenMP runtime's default waits (libgomp: 300,000 spins before a thread sleeps), the
same threads with the short waits the CLI sets (GOMP_SPINCOUNT=1000, lzarchive/cli/__init__.py), and one thread each
(OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1). Prints each process's seconds.

    python tools/bench_busy.py archive.lza --bytes 300 --processes 2 --repeat 2

--preload runs the decodes on another OpenMP runtime, LLVM's libomp.so.5 (Debian's libomp5 package; the runtime of
torch's macOS wheels) or Intel's libiomp5.so (PyPI's intel-openmp): preloaded, it takes the GNU OpenMP calls of torch
and numba's omp layer, and its own wait settings (KMP_BLOCKTIME) apply instead of GOMP_SPINCOUNT.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from lzarchive.cli import OPENMP_WAITS, SPIN_COUNT

DECODE = """
import sys, time
from lzarchive.api import model_codecs
from lzarchive.archive.reader import ArchiveReader
from lzarchive.format.constants import CodecId
reader = ArchiveReader.open(sys.argv[1], model_codecs("cpu", None))
chunks = [c for c, info in enumerate(reader.index.chunks) if info.codec == CodecId.LM]
reader.decode_chunks(chunks[:1], {chunks[0]: 10})
start = time.perf_counter()
out = reader.decode_chunks(chunks, {c: int(sys.argv[2]) for c in chunks})
print(f"{time.perf_counter() - start:.1f}")
"""


SETTINGS = {
    "default threads, the runtime's default waits": {},
    "default threads, short waits (the CLI's)": {"GOMP_SPINCOUNT": SPIN_COUNT},
    "one thread": {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
}
THREAD_VARIABLES = {"OMP_NUM_THREADS", "NUMBA_NUM_THREADS", *OPENMP_WAITS}


def decode_at_once(archive: str, size: int, processes: int, setting: dict[str, str]) -> list[float]:
    """Seconds each of `processes` simultaneous decodes took."""
    env = {name: value for name, value in os.environ.items() if name not in THREAD_VARIABLES | {"LD_PRELOAD"}}
    runs = [subprocess.Popen([sys.executable, "-c", DECODE, archive, str(size)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**env, **setting})
            for _ in range(processes)]
    seconds = []
    for run in runs:
        out, err = run.communicate()
        if run.returncode:
            sys.exit(f"decoding failed (exit {run.returncode}): {err.strip()}")
        seconds.append(float(out))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", help="an archive with lm chunks")
    parser.add_argument("--bytes", type=int, default=300, help="bytes decoded from the start of each chunk")
    parser.add_argument("--processes", type=int, default=2, help="decodes at once in the shared runs")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each setting, alternating")
    parser.add_argument("--preload", metavar="LIBRARY", help="an OpenMP runtime to run on instead of libgomp "
                        "(a path to libomp.so.5 or libiomp5.so)")
    args = parser.parse_args()
    if args.preload and not os.path.isfile(args.preload):  # the loader would skip it with a warning, and run libgomp
        parser.error(f"{args.preload}: no such file")
    runtime = {"LD_PRELOAD": os.path.abspath(args.preload)} if args.preload else {}
    for processes in (1, args.processes):
        for name in list(SETTINGS) * args.repeat:
            seconds = decode_at_once(args.archive, args.bytes, processes, {**runtime, **SETTINGS[name]})
            print(f"{processes} process(es) at once, each on {name}: "
                  + ", ".join(f"{s:.1f}" for s in seconds) + " s", flush=True)


if __name__ == "__main__":
    main()
