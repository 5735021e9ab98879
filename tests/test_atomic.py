"""Atomic writes: a pack killed mid-write (SIGKILL) or interrupted (Ctrl-C) leaves no archive at the output path."""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory):
    """Enough incompressible data at a high zstd level that packing takes seconds."""
    src = tmp_path_factory.mktemp("slow") / "data"
    src.mkdir()
    rng = random.Random(7)
    for i in range(32):  # 128 MiB: the pack must outlast the signal by a wide margin on a fast, idle machine
        (src / f"part{i}.bin").write_bytes(rng.randbytes(4 << 20))
    return src


def start_pack(src, out):
    # SIGINT back to its default: a shell starts background jobs with it ignored, and Python keeps it so (the pack
    # would then run to the end whenever the tests themselves run in the background)
    return subprocess.Popen([sys.executable, "-m", "lzarchive", "pack", str(src), "-o", str(out), "--codec", "zstd", "--level", "19", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_partial(out, proc, minimum=1 << 20):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        parts = glob.glob(str(out.parent / f".{out.name}.*.lza-partial"))
        if parts and os.path.getsize(parts[0]) >= minimum:
            return parts[0]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    raise AssertionError("pack never started writing")


@pytest.mark.parametrize("sig,expected", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)])
def test_interrupted_pack_leaves_no_archive(slow_source, tmp_path, sig, expected):
    out = tmp_path / "out.lza"
    with start_pack(slow_source, out) as proc:
        partial = wait_for_partial(out, proc)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == expected
    assert not out.exists()
    if sig == signal.SIGINT:  # an orderly interrupt also removes its temporary file
        assert not os.path.exists(partial)
        assert b"interrupted" in stderr
