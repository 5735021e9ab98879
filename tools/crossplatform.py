#!/usr/bin/env python3
"""Cross-platform proof: decode the golden fixtures and an lm archive of real text (at least 64 KiB, several windows
per chunk) under other kernels, instruction sets and devices, and compare every byte with what was packed.

Rows (each a separate process):
  native    this machine as configured (the reference)
  generic   torch's generic CPU kernels (ATEN_CPU_CAPABILITY=default) and numba compiled for a generic CPU
  torch     the torch operations instead of the compiled loops (LZA_KERNELS=torch)
  float64   the float64 products instead of the int8 GEMM (LZA_INT8_GEMM=off)
  cuda      the model on a GPU (--device cuda), when one is present
  --launcher NAME=COMMAND adds a row run through COMMAND (e.g. another architecture's Python under qemu-user:
            "aarch64=chroot /srv/arm64 /usr/bin/python3"; the repository must be at the same path inside, and the
            model directory it uses must hold the models printed at the start).

Usage: python tools/crossplatform.py --out tools/results/DATE-crossplatform.md [--text-bytes 64K] [--rows ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
ROWS = {
    "native": {},
    "generic": {"ATEN_CPU_CAPABILITY": "default", "NUMBA_CPU_NAME": "generic"},
    "torch": {"LZA_KERNELS": "torch"},
    "float64": {"LZA_INT8_GEMM": "off"},
    "cuda": {},
}
TEXT_SOURCES = ("/usr/share/common-licenses", str(Path(sys.prefix).parent))  # licence texts, then anything
VERSIONS = """
import json, platform, sys
import numba, numpy, torch
print(json.dumps({"machine": platform.machine(), "python": sys.version.split()[0], "torch": torch.__version__,
                  "aten_cpu": torch.backends.cpu.get_cpu_capability(), "numba": numba.__version__,
                  "numba_cpu": numba.config.CPU_NAME or "host", "numpy": numpy.__version__,
                  "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
"""


def real_text(size: int) -> bytes:
    """At least `size` bytes of real prose: the system's licence texts, whole files in name order."""
    out = bytearray()
    for path in sorted(Path(TEXT_SOURCES[0]).glob("*")):
        if path.is_file() and len(out) < size:
            out += path.read_bytes()
    if len(out) < size:
        raise SystemExit(f"{TEXT_SOURCES[0]} holds only {len(out)} bytes of text; need {size}")
    return bytes(out[:size])


def lza(argv: list[str], env: dict[str, str], launcher: list[str]) -> tuple[int, float, str]:
    started = time.perf_counter()
    proc = subprocess.run(launcher + ["-m", "lzarchive", *argv], env={**os.environ, **env}, capture_output=True,
                          text=True, cwd=ROOT)
    return proc.returncode, time.perf_counter() - started, proc.stderr.strip()[-300:]


def expected_files() -> dict[str, dict[str, str]]:
    """archive → {path: sha256} of every regular file it must decode to."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
    return {str(FIXTURES / name): {row["path"]: row["sha256"] for row in manifest["trees"][spec["tree"]] if "sha256" in row}
            for name, spec in sorted(manifest["archives"].items())}


def provide_models() -> None:
    """The models the archives name, in this user's model cache, where every row run here finds them (a --launcher
    row needs them in its own): the default model (the text's) and its variant cut at 2,048 positions (the lm
    fixtures'), and the others the fixtures name (the tiny GPT-2, compiled from its weights)."""
    import make_fixtures

    from lzarchive.engine import registry

    print(f"model default: {registry.default_model_path()}", flush=True)
    print(f"model default, the lm fixtures': {registry.default_model_path(registry.EARLIER_POSITIONS)}", flush=True)
    manifest = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as directory:
        for model in sorted({spec["model"] for spec in manifest["archives"].values() if "model" in spec}):
            print(f"model {model}: {registry.import_compiled(make_fixtures.model_file(model, directory))}", flush=True)


def compare(out: Path, files: dict[str, str]) -> tuple[int, list[str]]:
    checked, wrong = 0, []
    for path, sha in files.items():
        full = out / path
        data = full.read_bytes() if full.is_file() else b""
        checked += len(data)
        if hashlib.sha256(data).hexdigest() != sha:
            wrong.append(path)
    return checked, wrong


def run_row(name: str, env: dict[str, str], launcher: list[str], archives: dict[str, dict[str, str]],
            device: str, work: Path) -> dict:
    versions = subprocess.run(launcher + ["-c", VERSIONS], env={**os.environ, **env}, capture_output=True, text=True,
                              cwd=ROOT)
    row = {"row": name, "env": env, "launcher": launcher, "versions": json.loads(versions.stdout or "{}"),
           "archives": []}
    for archive, files in archives.items():
        out = work / f"{name}-{Path(archive).stem}"
        shutil.rmtree(out, ignore_errors=True)
        code, seconds, stderr = lza(["extract", archive, "-C", str(out), "-q", "--device", device], env, launcher)
        checked, wrong = compare(out, files) if code == 0 else (0, list(files))
        row["archives"].append({"archive": os.path.relpath(archive, ROOT), "exit": code, "seconds": round(seconds, 1),
                                "bytes_compared": checked, "wrong": wrong, "stderr": stderr if code else ""})
        print(f"{name:8} {Path(archive).name:24} exit {code}  {checked} bytes  "
              f"{'OK' if code == 0 and not wrong else 'MISMATCH ' + str(wrong)}  {seconds:.1f} s", flush=True)
    return row


def report(rows: list[dict], text_size: int, command: str) -> str:
    lines = [f"# Cross-platform decoding proof ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `{command}`. Every archive was packed once on the native row and decoded by `lza extract` "
             f"in a separate process per row; every file is compared (sha256) with what was packed."
             + (f" The text archive holds {text_size} bytes of licence texts from /usr/share/common-licenses in 8 KiB "
                f"lm chunks (about 2,000 tokens each: several 1024-position windows with overlap per chunk, decoded in "
                f"lockstep)." if text_size else ""), "",
             "| row | machine | torch (ATen CPU) | numba (CPU) | numpy | python | archives | bytes compared | result |",
             "|---|---|---|---|---|---|---:|---:|---|"]
    for row in rows:
        v = row["versions"]
        ok = all(a["exit"] == 0 and not a["wrong"] for a in row["archives"])
        env = " ".join(f"{k}={val}" for k, val in row["env"].items())
        lines.append(f"| {row['row']}{' (' + env + ')' if env else ''} | {v.get('machine')} | {v.get('torch')} "
                     f"({v.get('aten_cpu')}) | {v.get('numba')} ({v.get('numba_cpu')}) | {v.get('numpy')} | "
                     f"{v.get('python')} | {len(row['archives'])} | {sum(a['bytes_compared'] for a in row['archives'])} | "
                     f"{'identical' if ok else 'MISMATCH'} |")
    lines += ["", "Per archive (exit code, seconds):", ""]
    for row in rows:
        for a in row["archives"]:
            lines.append(f"- {row['row']}: {a['archive']}: exit {a['exit']}, {a['seconds']} s, "
                         f"{a['bytes_compared']} bytes{', wrong: ' + ', '.join(a['wrong']) if a['wrong'] else ''}"
                         f"{' — ' + a['stderr'] if a['stderr'] else ''}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the markdown report to write")
    parser.add_argument("--text-bytes", type=int, default=64 * 1024, help="bytes of real text in the lm archive")
    parser.add_argument("--rows", default="native,generic,torch,float64,cuda",
                        help="comma-separated rows to run (empty: only the --launcher rows)")
    parser.add_argument("--launcher", action="append", default=[], metavar="NAME=COMMAND",
                        help="an extra row run through COMMAND instead of this Python")
    parser.add_argument("--archives", default="",
                        help="comma-separated archives to decode (fixture file stems, or 'text'); default: all")
    args = parser.parse_args()
    wanted = set(filter(None, args.archives.split(",")))
    work = Path(tempfile.mkdtemp(prefix="lza-crossplatform-"))
    try:
        provide_models()
        archives = expected_files()
        text = b""
        if not wanted or "text" in wanted:  # packing it takes minutes: only when it is decoded
            text = real_text(args.text_bytes)
            src = work / "text"
            src.mkdir()
            (src / "licences.txt").write_bytes(text)
            archive = work / "text.lza"
            code, seconds, stderr = lza(["pack", str(src), "-o", str(archive), "--codec", "lm", "-q"], {}, [sys.executable])
            if code:
                raise SystemExit(f"packing the text failed: {stderr}")
            print(f"packed {len(text)} bytes of text in {seconds:.0f} s", flush=True)
            archives[str(archive)] = {"text/licences.txt": hashlib.sha256(text).hexdigest()}
        if wanted:
            unknown = wanted - {Path(a).stem for a in archives} - {"text"}
            if unknown:
                raise SystemExit(f"no such archive: {', '.join(sorted(unknown))}")
            archives = {a: files for a, files in archives.items() if Path(a).stem in wanted}
        rows = []
        for name in filter(None, args.rows.split(",")):
            if name == "cuda":
                import torch

                if not torch.cuda.is_available():
                    print("cuda: no GPU here, row left out", flush=True)
                    continue
            rows.append(run_row(name, ROWS[name], [sys.executable], archives, "cuda" if name == "cuda" else "cpu", work))
        for spec in args.launcher:
            name, _, command = spec.partition("=")
            rows.append(run_row(name, {}, shlex.split(command), archives, "cpu", work))
        Path(args.out).write_text(report(rows, len(text), " ".join(["python"] + sys.argv)), encoding="utf-8")
        ok = all(a["exit"] == 0 and not a["wrong"] for row in rows for a in row["archives"])
        print(f"{'all identical' if ok else 'MISMATCH'}: {args.out}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
