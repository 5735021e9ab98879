"""CLI layer: typer commands over lzarchive.api; imports nothing below the API."""

import os

# OpenMP's wait after each parallel region, set before torch and numba load their OpenMP runtimes (GNU libgomp on
# Linux, which reads it once). Decoding runs a few hundred short regions per token; by default libgomp's idle threads
# spin 300,000 times before sleeping, and on a machine another process keeps busy that spinning holds the core the
# thread being waited for needs: two extractions at once each took over 17 times as long as one alone. 1000 spins
# (libgomp's own count for oversubscribed teams) shares the cores, at 2-4 % of the speed alone
# (tools/results/2026-12-06-openmp-waits.md). LLVM's and Intel's runtimes (KMP_BLOCKTIME) yield the core while they
# wait and need nothing (measured there). Whoever sets any of OpenMP's wait settings keeps their own.
SPIN_COUNT = "1000"
OPENMP_WAITS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
if not set(OPENMP_WAITS) & set(os.environ):
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
