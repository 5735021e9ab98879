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

A row too slow for one sitting (the text takes hours under emulation) can decode the text in parts:
--archives text --text-part K/N reads the K-th of N runs of its chunks with `lza cat --range` (the same chunk decoder,
fewer chunks in lockstep). The text and the writer are deterministic, so every part's run packs the same archive:
its sha256 is printed and reported, to tie the parts together.
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
TEXT_MTIME = 1_767_225_600  # 2026-01-01 00:00:00 UTC
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


def lza(argv: list[str], env: dict[str, str], launcher: list[str]) -> tuple[int, float, str, bytes]:
    """Exit code, seconds, the end of stderr and stdout of one lza command."""
    started = time.perf_counter()
    proc = subprocess.run(launcher + ["-m", "lzarchive", *argv], env={**os.environ, **env}, capture_output=True,
                          cwd=ROOT)
    return proc.returncode, time.perf_counter() - started, proc.stderr.decode(errors="replace").strip()[-300:], proc.stdout


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
            imported = registry.import_compiled(make_fixtures.model_file(model, directory))
            print(f"model {model}: {registry.find(imported.model_hash)}", flush=True)


def compare(out: Path, files: dict[str, str]) -> tuple[int, list[str]]:
    checked, wrong = 0, []
    for path, sha in files.items():
        full = out / path
        data = full.read_bytes() if full.is_file() else b""
        checked += len(data)
        if hashlib.sha256(data).hexdigest() != sha:
            wrong.append(path)
    return checked, wrong


def text_part(archive: Path, part: str) -> tuple[int, int]:
    """The byte range of the text (the archive's only file) that the K-th of N runs of its chunks hold."""
    from lzarchive import api

    k, _, n = part.partition("/")
    k, n = int(k), int(n)
    with api.open_archive(str(archive)) as reader:
        sizes = [chunk.raw_size for chunk in reader.index.chunks]
    if not 1 <= k <= n <= len(sizes):
        raise SystemExit(f"--text-part {part}: K/N with 1 <= K <= N <= {len(sizes)} (the text's chunks)")
    return sum(sizes[: (k - 1) * len(sizes) // n]), sum(sizes[: k * len(sizes) // n])


def run_row(name: str, env: dict[str, str], launcher: list[str], archives: dict[str, dict[str, str]],
            device: str, work: Path, ranges: dict[str, tuple[int, int]]) -> dict:
    """Decodes every archive under one row: extracted and compared file by file, or where `ranges` names the archive,
    that byte range of its only file read by `lza cat`."""
    versions = subprocess.run(launcher + ["-c", VERSIONS], env={**os.environ, **env}, capture_output=True, text=True,
                              cwd=ROOT)
    row = {"row": name, "env": env, "launcher": launcher, "versions": json.loads(versions.stdout or "{}"),
           "archives": []}
    for archive, files in archives.items():
        out = work / f"{name}-{Path(archive).stem}"
        shutil.rmtree(out, ignore_errors=True)
        if archive in ranges:
            (path, _), = files.items()  # the text, the archive's only file
            start, end = ranges[archive]
            code, seconds, stderr, data = lza(["cat", archive, path, "--range", f"{start}:{end}", "--device", device],
                                              env, launcher)
            (out / path).parent.mkdir(parents=True)
            (out / path).write_bytes(data)
        else:
            code, seconds, stderr, _ = lza(["extract", archive, "-C", str(out), "-q", "--device", device], env, launcher)
        checked, wrong = compare(out, files) if code == 0 else (0, list(files))
        row["archives"].append({"archive": os.path.relpath(archive, ROOT), "exit": code, "seconds": round(seconds, 1),
                                "bytes_compared": checked, "wrong": wrong, "stderr": stderr if code else ""})
        print(f"{name:8} {Path(archive).name:24} exit {code}  {checked} bytes  "
              f"{'OK' if code == 0 and not wrong else 'MISMATCH ' + str(wrong)}  {seconds:.1f} s", flush=True)
    return row


def report(rows: list[dict], text_size: int, text_notes: str, command: str) -> str:
    lines = [f"# Cross-platform decoding proof ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `{command}`. Every archive was packed once on the native row and decoded by `lza extract` "
             f"in a separate process per row; every file is compared (sha256) with what was packed."
             + (f" The text archive holds {text_size} bytes of licence texts from /usr/share/common-licenses in 8 KiB "
                f"lm chunks (about 2,000 tokens each: several 1024-position windows with overlap per chunk, decoded in "
                f"lockstep)" + text_notes + "." if text_size else ""), "",
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
    parser.add_argument("--text-part", metavar="K/N", help="decode only the K-th of N runs of the text's chunks")
    args = parser.parse_args()
    wanted = set(filter(None, args.archives.split(",")))
    if args.text_part and wanted and "text" not in wanted:
        parser.error("--text-part needs the text among --archives")
    work = Path(tempfile.mkdtemp(prefix="lza-crossplatform-"))
    try:
        provide_models()
        archives = expected_files()
        text, text_notes, ranges = b"", "", {}
        if not wanted or "text" in wanted:  # packing it takes minutes: only when it is decoded
            text = real_text(args.text_bytes)
            src = work / "text"
            src.mkdir()
            (src / "licences.txt").write_bytes(text)
            for path in (src / "licences.txt", src):  # the same archive bytes on every run: the index holds mtimes
                os.utime(path, (TEXT_MTIME, TEXT_MTIME))
            archive = work / "text.lza"
            code, seconds, stderr, _ = lza(["pack", str(src), "-o", str(archive), "--codec", "lm", "-q"], {},
                                           [sys.executable])
            if code:
                raise SystemExit(f"packing the text failed: {stderr}")
            archive_sha = hashlib.sha256(archive.read_bytes()).hexdigest()
            print(f"packed {len(text)} bytes of text in {seconds:.0f} s: {archive.stat().st_size} bytes, sha256 "
                  f"{archive_sha}", flush=True)
            text_notes = f"; the archive's sha256 is {archive_sha}"
            expected = text
            if args.text_part:
                start, end = ranges[str(archive)] = text_part(archive, args.text_part)
                expected = text[start:end]
                text_notes += f"; part {args.text_part} of its chunks: bytes {start}:{end}, read by `lza cat --range`"
            archives[str(archive)] = {"text/licences.txt": hashlib.sha256(expected).hexdigest()}
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
            rows.append(run_row(name, ROWS[name], [sys.executable], archives, "cuda" if name == "cuda" else "cpu", work,
                                ranges))
        for spec in args.launcher:
            name, _, command = spec.partition("=")
            rows.append(run_row(name, {}, shlex.split(command), archives, "cpu", work, ranges))
        Path(args.out).write_text(report(rows, len(text), text_notes, " ".join(["python"] + sys.argv)), encoding="utf-8")
        ok = all(a["exit"] == 0 and not a["wrong"] for row in rows for a in row["archives"])
        print(f"{'all identical' if ok else 'MISMATCH'}: {args.out}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
