"""Atomic writes: a pack or an extraction killed mid-write (SIGKILL), interrupted (Ctrl-C) or terminated (SIGTERM,
SIGHUP) leaves no archive or extracted file at its path, and an orderly stop no temporary file either."""

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


def start_lza(*args):
    # SIGINT and SIGHUP back to their defaults: a shell starts background jobs with SIGINT ignored, nohup SIGHUP, and
    # Python keeps both so (lza then rightly leaves them alone, and the command would run to its end)
    def default_signals():
        for signum in (signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)

    return subprocess.Popen([sys.executable, "-m", "lzarchive", *map(str, args), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=default_signals)


def start_pack(src, out):
    return start_lza("pack", src, "-o", out, "--codec", "zstd", "--level", "19")


def wait_for_partial(out, proc, minimum=1 << 20):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        parts = glob.glob(str(out.parent / f".{out.name}.*.lza-partial"))
        if parts and os.path.getsize(parts[0]) >= minimum:
            return parts[0]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"lza never started writing {out}")


STOPS = {signal.SIGINT: (130, b"lza: interrupted"), signal.SIGTERM: (143, b"lza: terminated by SIGTERM"),
         signal.SIGHUP: (129, b"lza: terminated by SIGHUP")}


@pytest.mark.parametrize("sig", [signal.SIGKILL, *STOPS], ids=lambda sig: sig.name)
def test_interrupted_pack_leaves_no_archive(slow_source, tmp_path, sig):
    out = tmp_path / "out.lza"
    with start_pack(slow_source, out) as proc:
        partial = wait_for_partial(out, proc)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    assert not out.exists()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # an orderly stop also removes its temporary file, and says why it stopped
        assert (proc.returncode, stderr.strip()) == STOPS[sig]
        assert not os.path.exists(partial)


@pytest.mark.parametrize("sig", STOPS, ids=lambda sig: sig.name)
def test_stopped_extraction_leaves_no_file(tiny_path, private_model_cache, tmp_path, sig):
    """The signal comes while the file is being decoded (token by token, seconds with the tiny model): its temporary
    file goes, and nothing appears under its name."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_bytes(b"the quick brown fox jumps over the lazy dog " * 100)
    archive = tmp_path / "notes.lza"
    with start_lza("pack", src, "-o", archive, "--model", tiny_path, "--codec", "lm") as proc:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    dest = tmp_path / "dest"
    with start_lza("extract", archive, "-C", dest) as proc:
        partial = wait_for_partial(dest / "src" / "notes.txt", proc, minimum=0)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr.strip()) == STOPS[sig]
    assert not os.path.exists(partial)
    assert os.listdir(dest / "src") == []


def test_a_stop_that_lands_inside_the_jit_is_delivered_again_outside_it(monkeypatch):
    """A signal handled while numba compiles or loads a kernel would raise inside a ctypes callback, which swallows the
    exception (the extraction above then ran on to its end, exit 0, in 4 of 36 runs) or unwinds through LLVM (a crash
    at exit): the handler sends the signal again shortly instead, and raises only outside numba and llvmlite."""
    from lzarchive.cli import app

    sent = []

    class Timer:
        def __init__(self, delay, function, args):
            sent.append((delay, function, args))
            self.daemon = False

        def start(self):
            pass

    monkeypatch.setattr(app.threading, "Timer", Timer)
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # the raising path would ignore further SIGTERM, SIGHUP
    jit_frame = {}
    exec(compile("import sys\ndef callback(): return sys._getframe()\nframe = callback()", f"{os.sep}site{os.sep}llvmlite"
                 f"{os.sep}binding{os.sep}executionengine.py", "exec"), jit_frame)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        app._stop(signum, jit_frame["frame"])  # no exception there
        assert sent.pop() == (0.05, os.kill, (os.getpid(), signum))
        with pytest.raises(KeyboardInterrupt) as stopped:  # Terminated is one
            app._stop(signum, sys._getframe())
        assert getattr(stopped.value, "signum", signal.SIGINT) == signum and not sent


def test_a_stop_that_lands_as_the_temporary_file_is_made_leaves_nothing(monkeypatch, tmp_path, tiny_path):
    """A stop can land the moment the temporary file exists, before its maker has returned the fd (an extraction
    stopped so, on a loaded machine, kept its .lza-partial): its name was recorded before the file was made, so the
    way out removes it, for the archive pack writes, for each file extract writes, and for the model cache's files
    (a compiled or imported model, a source's marker, the probe that finds the cache writable)."""
    from lzarchive import api, files
    from lzarchive.archive import extract, writer
    from lzarchive.engine import compiler, registry

    def stop_as_it_returns(name, made, dir_fd=None, mode=0o600):
        files.create_temp(name, made, dir_fd, mode)
        raise KeyboardInterrupt

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello " * 100)
    archive = tmp_path / "a.lza"
    with monkeypatch.context() as patched:
        patched.setattr(writer, "create_temp", stop_as_it_returns)
        with pytest.raises(KeyboardInterrupt):
            api.pack([str(src)], str(archive), codec="zstd")
    assert os.listdir(tmp_path) == ["src"]
    api.pack([str(src)], str(archive), codec="zstd")
    dest = tmp_path / "dest"
    with monkeypatch.context() as patched:
        patched.setattr(extract, "create_temp", stop_as_it_returns)
        with pytest.raises(KeyboardInterrupt):
            api.extract(str(archive), str(dest))
    assert os.listdir(dest / "src") == []
    cache = tmp_path / "models"
    cache.mkdir()
    monkeypatch.setenv("LZA_MODEL_DIR", str(cache))
    for module, step in ((compiler, lambda: registry.import_compiled(tiny_path)), (registry, registry.cache_dir)):
        with monkeypatch.context() as patched:
            patched.setattr(module, "create_temp", stop_as_it_returns)
            with pytest.raises(KeyboardInterrupt):
                step()
        assert os.listdir(cache) == []
