#!/usr/bin/env python3
"""A fuzzer for the lm codec's reader: crafted payloads with every check sealed valid (hours of cases, not a test).

Packs small trees with the tests' tiny model under each kind of lm chunk the writer makes (a chunk of streams with
the bias head, the group's match model and the neural cache; chunks after a primer; lone chunks; other windows; UTF-16
and Latin-1 text coded as UTF-8, CR LF line ends coded as LF),
then rewrites one lm chunk's payload at a time, as a hostile writer would: a varint of its header set to an edge
value or a neighbour, bytes cut, inserted or flipped, or another chunk's payload in its place; and seals the chunk,
index and footer checks valid again. Every crafted archive goes through `lza verify`, `lza extract` and `lza cat` of
the files in that chunk, in process. A problem is any exception out of a command, verify and extract disagreeing, an
exit other than 0 or 3, or a byte written or printed that was not packed (cat of a damaged file prints the checked
chunks before the damaged one: a prefix of the file, never all of it).

Usage: python tools/fuzz_lm.py [--seeds 20] [--first 0] [--mutants 12] [--work DIR]
Prints verify's exit codes after each tree (Ctrl-C ends the run with what it found); exits 1 if any problem was
found, each printed with the seed, the options and the mutation that reproduce it.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)  # the tiny model, the in-process CLI and the resealing come from the tests

from lzarchive import api  # noqa: E402
from lzarchive.engine import registry  # noqa: E402
from lzarchive.errors import EXIT_INTEGRITY, EXIT_INTERRUPTED  # noqa: E402
from lzarchive.format import constants as C  # noqa: E402
from lzarchive.format.wire import read_varint, varint  # noqa: E402
from tests.adversarial.craft import resealed  # noqa: E402
from tests.conftest import compiled_file, run_cli  # noqa: E402
from tests.tiny import greedy_text, sampled_text, tiny_model  # noqa: E402

# writer options: each makes other kinds of lm chunk from the same small trees
OPTIONS = ([], ["--chunk-size", "200"], ["--chunk-size", "150", "--no-match"], ["--chunk-size", "250", "--window", "64"],
           ["--chunk-size", "300", "--primer", "20", "--bias-group", "1"], ["--chunk-size", "400", "--bias-group", "1"])
EDGE_VALUES = (0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 8191, 8192,
               65535, 1 << 20, (1 << 31) - 1, 1 << 31, (1 << 32) + 1, (1 << 63) - 1, 1 << 64)


def make_tree(root: Path, draw: random.Random) -> dict[str, bytes]:
    """1-4 files of text the tiny model predicts well (greedy) or about as well as its entropy (sampled), a third of
    them as UTF-16 (each byte a character: chunks in the text forms of format 2.9), and of the files after the first
    about a third in lines that end in CR LF (the forms of 2.10), half of those with Latin-1 accents (2.11) and a
    quarter in short lines after a DOS Cyrillic capital each (2.12)."""
    model, files = tiny_model(), {}
    for i in range(draw.randint(1, 4)):
        tokens = draw.choice([30, 120, 300, 500])
        text = (greedy_text(model, tokens, seed_token=2 + ord("a") + draw.randint(0, 20))
                if draw.random() < 0.6 else sampled_text(model, tokens, draw.randint(0, 10**6)))
        if i and sum(text) % 3 == 0:  # by the text, not a draw, and never the first file: a seed's tree and mutants
            # stay those of before 2.10 where it has one file (tests/adversarial/test_lm_hostile.py pins seed 6's)
            text = text.replace(b"\n", b"")
            text = b"".join(text[at : at + 40] + b"\r\n" for at in range(0, len(text), 40))
            if sum(text) % 2:  # a Latin-1 é after each line: its UTF-8 form's byte more is what the line's CR saves,
                text = text.replace(b"\r\n", b"\r\n\xe9")  # so the tiny model's tokens fit (the forms of 2.11)
            elif sum(text) % 4 == 2:  # lines of 5 bytes after an IBM866 Ж (a sign of 3 UTF-8 bytes read as
                # windows-1252, 2 as IBM866): IBM866's form makes 8/9 of windows-1252's tokens, and fits (2.12's forms)
                text = b"".join(b"\x86" + text[at : at + 5] + b"\r\n" for at in range(0, len(text), 42))
        encoding = draw.choice([None, None, None, None, "utf-16-le", "utf-16-be"])
        files[f"f{i}.txt"] = text.decode("latin-1").encode(encoding) if encoding else text
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def mutate(payloads: list[bytes], chunk: int, lm_chunks: list[int], draw: random.Random) -> tuple[str, bytes]:
    payload = payloads[chunk]
    how = draw.choice(["field", "field", "field", "drop field", "flip", "cut", "insert", "swap"])
    spans, pos = [], 0  # the first varints: the header's fields, then the range coder's bytes read as such
    while len(spans) < 24 and pos < len(payload):
        try:
            value, end = read_varint(payload, pos)
        except ValueError:
            break
        spans.append((pos, end, value))
        pos = end
    if how in ("field", "drop field") and spans:
        start, end, value = draw.choice(spans)
        if how == "drop field":
            return f"field at byte {start} ({value}) dropped", payload[:start] + payload[end:]
        new = draw.choice([*EDGE_VALUES, value + 1, max(0, value - 1), 2 * value])
        return f"field at byte {start}: {value} -> {new}", payload[:start] + varint(new) + payload[end:]
    if how == "flip" and payload:
        at = draw.randrange(min(len(payload), 48))
        return f"flip at byte {at}", payload[:at] + bytes([payload[at] ^ 1 << draw.randrange(8)]) + payload[at + 1 :]
    if how == "swap" and len(lm_chunks) > 1:
        other = draw.choice([i for i in lm_chunks if i != chunk])
        return f"chunk {other}'s payload", payloads[other]
    at = draw.randrange(len(payload) + 1)
    if how == "cut":
        return f"cut at byte {at}", payload[:at]
    inserted = draw.randbytes(draw.randint(1, 4))
    return f"{inserted.hex()} inserted at byte {at}", payload[:at] + inserted + payload[at:]


def check(path: str, files: dict[str, bytes], in_chunk: list[str], work: str) -> tuple[int | None, list[str]]:
    """verify's exit code and the problems of verify, extract and cat on one crafted archive."""
    problems, codes = [], {}
    for command in ("verify", "extract"):
        args = [command, path] + (["-C", os.path.join(work, "x"), "-q"] if command == "extract" else [])
        try:
            codes[command] = run_cli(*args).exit_code
        except Exception:  # noqa: BLE001 - what the fuzzer is looking for
            problems.append(f"{command} raised:\n{traceback.format_exc()}")
        if codes.get(command) == EXIT_INTERRUPTED:  # Ctrl-C, which the command caught
            raise KeyboardInterrupt
    if len(codes) == 2 and not codes["verify"] == codes["extract"] in (0, EXIT_INTEGRITY):
        problems.append(f"verify exits {codes['verify']}, extract {codes['extract']}")
    for folder, _, names in os.walk(os.path.join(work, "x")):
        for name in names:
            if name not in files or Path(folder, name).read_bytes() != files[name]:
                problems.append(f"extract wrote {name} other than packed")
    for name in in_chunk:
        try:
            result = run_cli("cat", path, "t/" + name)
        except Exception:  # noqa: BLE001
            problems.append(f"cat {name} raised:\n{traceback.format_exc()}")
            continue
        if result.exit_code == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        # on damage, cat has written the file's chunks before the damaged one (each checked), then stops
        whole, cut = (result.exit_code, result.stdout) == (0, files[name]), result.exit_code == EXIT_INTEGRITY
        if not whole and not (cut and files[name].startswith(result.stdout) and result.stdout != files[name]):
            problems.append(f"cat {name}: exit {result.exit_code} with {len(result.stdout)} bytes out")
    shutil.rmtree(os.path.join(work, "x"), ignore_errors=True)
    return codes.get("verify"), problems


def fuzz_seed(seed: int, mutants: int, work: str, model: str, tally: collections.Counter) -> list[str]:
    draw = random.Random(seed)
    files = make_tree(Path(work, "t"), draw)
    options = draw.choice(OPTIONS)
    archive = os.path.join(work, "a.lza")
    result = run_cli("pack", os.path.join(work, "t"), "-o", archive, "--codec", "lm", "--model", model, "-q", *options)
    if result.exit_code:
        return [f"seed {seed}: pack {options} exits {result.exit_code}: {result.stderr}"]
    with api.open_archive(archive) as reader:
        count = len(reader.index.chunks)
        decoded = reader.decode_chunks(range(count))
        plaintexts = [decoded[i] for i in range(count)]
        payloads = [reader.read_stored(i)[1] for i in range(count)]
        lm_chunks = [i for i, info in enumerate(reader.index.chunks) if info.codec == C.CodecId.LM]
        in_chunk = {i: [e.path.removeprefix("t/") for e in reader.entries if any(r.chunk == i for r in e.chunks)]
                    for i in lm_chunks}
        header_size, index = reader.header_size, reader.index
    problems = []
    packed = Path(archive).read_bytes()
    for _ in range(mutants if lm_chunks else 0):
        chunk = draw.choice(lm_chunks)
        mutation, crafted = mutate(payloads, chunk, lm_chunks, draw)
        if crafted == payloads[chunk] or len(crafted) > len(plaintexts[chunk]):
            continue  # nothing changed, or a payload the index itself refuses
        path = os.path.join(work, "crafted.lza")
        Path(path).write_bytes(resealed(packed, header_size, index, plaintexts,
                                        [*payloads[:chunk], crafted, *payloads[chunk + 1 :]]))
        code, found = check(path, files, in_chunk[chunk], work)
        tally[code] += 1
        problems += [f"seed {seed}, pack {options}, chunk {chunk}, {mutation}: {problem}" for problem in found]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="trees to pack (each with drawn options)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (runs are reproducible by seed)")
    parser.add_argument("--mutants", type=int, default=12, help="crafted archives per tree")
    parser.add_argument("--work", default=None, help="a folder for the trees and archives (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="lza-fuzz-")
    os.makedirs(work, exist_ok=True)
    os.environ["LZA_MODEL_DIR"] = os.path.join(work, "models")  # the archives name the tiny model: found here
    model = compiled_file(tiny_model(), os.path.join(work, "tiny.lzm"))
    registry.import_compiled(model)
    tally: collections.Counter = collections.Counter()
    problems = []
    try:
        for seed in range(args.first, args.first + args.seeds):
            seed_work = os.path.join(work, f"seed{seed}")
            problems += fuzz_seed(seed, args.mutants, seed_work, model, tally)
            shutil.rmtree(seed_work, ignore_errors=True)
            print(f"seed {seed} done: {summary(tally, problems)}", flush=True)
    except KeyboardInterrupt:  # a run of hours is stopped by hand: what it found so far
        print("interrupted")
    for problem in problems:
        print(problem)
    print(summary(tally, problems))
    return 1 if problems else 0


def summary(tally: collections.Counter, problems: list[str]) -> str:
    exits = ", ".join(f"{code}: {count}" for code, count in sorted(tally.items(), key=str))
    return f"{sum(tally.values())} crafted archives (verify exits {exits}), {len(problems)} problems"


if __name__ == "__main__":
    sys.exit(main())
