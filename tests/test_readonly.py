"""lza runs where nothing it would cache can be written (a read-only install and home): slower, with a warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import lzarchive

from .conftest import compiled_file
from .tiny import greedy_text, tiny_model


def test_every_command_runs_without_a_writable_cache(tmp_path):
    # A copy of the package whose __pycache__ directories are files (numba's cache beside the code cannot be made,
    # even by root), and a home that is not a directory (no user cache either).
    package = tmp_path / "pkg"
    shutil.copytree(os.path.dirname(lzarchive.__file__), package / "lzarchive", ignore=shutil.ignore_patterns("__pycache__"))
    for directory, _, _ in os.walk(package / "lzarchive"):
        (tmp_path / directory / "__pycache__").write_bytes(b"")
    model = tiny_model()
    model_file = compiled_file(model, tmp_path / "tiny.lzm")
    src = tmp_path / "src"
    src.mkdir()
    (src / "model-text.txt").write_bytes(greedy_text(model, 200))
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR", "LZA_MODEL_DIR")}
    env.update(HOME="/dev/null", PYTHONPATH=str(package), PYTHONDONTWRITEBYTECODE="1")

    def lza(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lzarchive", *args], env=env, capture_output=True, cwd=tmp_path)

    assert lza("--help").returncode == 0
    packed = lza("pack", str(src), "-o", str(tmp_path / "lm.lza"), "--codec", "lm", "--model", str(model_file))
    assert packed.returncode == 0, packed.stderr
    warnings = packed.stderr.decode()
    assert "lza: warning: no writable cache for compiled kernels" in warnings
    assert "lza: warning: the model cache /dev/null/.cache/lza/models cannot be written" in warnings
    assert lza("info", str(tmp_path / "lm.lza")).stdout.count(b"tiny-0") == 1
    assert lza("pack", str(src), "-o", str(tmp_path / "z.lza"), "--codec", "zstd").returncode == 0
    assert lza("list", str(tmp_path / "z.lza")).stdout == b"src\nsrc/model-text.txt\n"
    assert not [f for f in os.listdir(package / "lzarchive" / "engine") if f.endswith((".nbi", ".nbc"))]
