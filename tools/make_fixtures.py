#!/usr/bin/env python3
"""Regenerate the golden archives in fixtures/ and their manifest (content hashed with sha256, independently of lza).

Their bytes are the format's memory: if this script produces different bytes, that is a format change and needs a
version bump in SPEC.md and its change log. Usage: python tools/make_fixtures.py [--check]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from lzarchive.api import pack
from lzarchive.format.constants import IndexEncoding

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "fixtures")
sys.path.insert(0, ROOT)  # the GPT-2 fixture's model and text come from the tests' tiny GPT-2
MTIME = 1_700_000_000_123_456_789

# (path, kind, payload, mode): payload is bytes for files, the target for links
TREE = [
    ("tree", "dir", None, 0o755),
    ("tree/README.txt", "file", b"lza golden fixture\n" * 8, 0o644),
    ("tree/bin", "dir", None, 0o750),
    ("tree/bin/run.sh", "file", b"#!/bin/sh\necho 'hello from lza'\n", 0o755),
    ("tree/data.bin", "file", bytes((i * 37 + 11) % 256 for i in range(700)), 0o600),
    ("tree/empty.txt", "file", b"", 0o644),
    ("tree/empty-dir", "dir", None, 0o700),
    ("tree/unicodé ✓ name.txt", "file", "naïve café — ünïcødé\n".encode(), 0o644),
    ("tree/link-to-readme", "symlink", "README.txt", 0o777),
    ("tree/bin/hardlink.sh", "hardlink", "tree/bin/run.sh", 0o755),
]
# Word salad in the reference writer's reach: a fixed word list drawn by a 64-bit LCG (no library's generator, so
# the text stays the same for decades), with bytes the default model has no token for (they are escaped).
WORDS = ("the of and to in is that it for on with as was at by an be this from or are not but have had which one "
         "all were we when there can more if no out so said what up its about into than them time only new some could "
         "these two may then do first any my now such like our over man me even most made after also did many before "
         "must through back years where much your way well down should because each just those people how too little "
         "state good very make world still own see men work long get here between both life being under never day same "
         "another know while last might great old year off come since against go came right used take three archive "
         "chunk model token window river stone garden letter winter harbour lantern orchard meadow silver quiet "
         "morning distant journey careful gentle").split()


def drawer(seed: int):
    """draw(n): the next number in [0, n) of a 64-bit LCG started at `seed`."""
    state = seed

    def draw(n: int) -> int:
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return (state >> 33) % n

    return draw


def prose(size: int, seed: int, escapes: bytes = b"") -> bytes:
    """`size` bytes of sentences in paragraphs; `escapes` spread through the text."""
    draw, out = drawer(seed), bytearray()
    while len(out) < size:
        sentence = [WORDS[draw(len(WORDS))] for _ in range(6 + draw(9))]
        out += (" ".join(sentence).capitalize() + (". " if draw(5) else ".\n\n")).encode()
    return _escaped(bytes(out[:size]), escapes)


def _escaped(text: bytes, escapes: bytes) -> bytes:
    out, size = bytearray(text), len(text)
    for i, byte in enumerate(escapes):
        out[(i + 1) * size // (len(escapes) + 1)] = byte
    return bytes(out)


# the lm path at the default window (W 1024, O 256): chunk 0 holds a, b, c (about 1,150 tokens: two windows, the
# second primed with 256 tokens of overlap; b ends in the middle, so reading it alone stops decoding there), chunk 1
# holds d and e (two windows); the two chunks decode in lockstep; a and d hold escaped bytes
WINDOWS_TREE = [
    ("story", "dir", None, 0o755),
    ("story/a-opening.txt", "file", prose(2500, 1, b"\x04\xc0"), 0o644),
    ("story/b-note.txt", "file", prose(300, 2), 0o644),
    ("story/c-middle.txt", "file", prose(2000, 3), 0o644),
    ("story/d-long.txt", "file", prose(4500, 4, b"\xff"), 0o644),
    ("story/e-closing.txt", "file", prose(1500, 5), 0o644),
    ("story/note-link", "symlink", "b-note.txt", 0o777),
    ("story/same-as-e.txt", "hardlink", "story/e-closing.txt", 0o644),
]
# the primer (format 2.1): four chunks of 512 bytes, each decoded in windows of 64 positions (overlap 16) after BOS and
# the first 80 tokens of chunk 0, so positions reach 144, past the first attention block; first and third hold escapes
PRIMER_TREE = [
    ("letters", "dir", None, 0o755),
    ("letters/first.txt", "file", prose(700, 6, b"\x04"), 0o644),
    ("letters/second.txt", "file", prose(500, 7), 0o644),
    ("letters/third.txt", "file", prose(450, 8, b"\xc0"), 0o600),
]


def log_lines(size: int, seed: int, escapes: bytes = b"") -> bytes:
    """`size` bytes of package-manager log lines: a few packages, versions and actions, so whole lines recur further
    back than a short window reaches; `escapes` spread through the text."""
    draw, out, minute = drawer(seed), bytearray(), 0
    packages = ("libc6", "tzdata", "python3-apt", "openssl", "zlib1g", "libssl3")
    while len(out) < size:
        minute += draw(3)
        package = packages[draw(len(packages))]
        for action in ("unpacked", "half-configured", "installed")[draw(2):]:
            out += f"2026-11-{seed:02d} 10:{minute % 60:02d}:{draw(60):02d} status {action} {package}:amd64 " \
                   f"2.{len(package) % 4}-{draw(2) + 1}\n".encode()
    return _escaped(bytes(out[:size]), escapes)


# the match model (format 2.2): log lines in two chunks of 512 bytes (about 330 tokens each), in windows of 64
# positions (overlap 16) after BOS and the first 24 tokens of chunk 0, so most repeats lie beyond the window; the
# primer chunk's history includes its primer; a chunk of prose, where the match model does not pay (adaptive 0);
# escapes in both
MATCH_TREE = [
    ("var", "dir", None, 0o755),
    ("var/dpkg.log", "file", log_lines(1024, 11, b"\x04"), 0o644),
    ("var/notes.txt", "file", prose(400, 12, b"\xc0"), 0o644),
]
# the span (format 2.3): log lines and prose in three chunks of 512 bytes (about 330 tokens each) decoded in lockstep,
# in windows of 160 positions (past the first attention block) after BOS and the first 16 tokens of chunk 0, each
# token seeing the prefix and the last 40 positions (the overlap, 40, by default); the match model; escapes
SPAN_TREE = [
    ("logs", "dir", None, 0o755),
    ("logs/dpkg.log", "file", log_lines(1000, 13, b"\x04"), 0o644),
    ("logs/notes.txt", "file", prose(400, 14, b"\xc0"), 0o644),
]


def ledger(size: int, seed: int, escapes: bytes = b"") -> bytes:
    """`size` bytes of ledger lines between a few invented names over a few invented goods."""
    draw, out = drawer(seed), bytearray()
    names = ("Orlanthe Vissek", "Quarrowe", "Tembrin Aldous", "Maevhild", "Sorrowin Pike")
    goods = ("brineglass", "cobweave", "ashfern tallow", "quillstone")
    while len(out) < size:
        out += (f"{names[draw(5)]} owes {names[draw(5)]} {draw(20) + 2} {goods[draw(4)]}"
                f"{', paid' if draw(3) else ''}.\n").encode()
    return _escaped(bytes(out[:size]), escapes)


def few_words(size: int, seed: int, escapes: bytes = b"") -> bytes:
    """`size` bytes of sentences of twelve words in any order: the bias head learns which words come, and the match
    model's guesses (what followed the same two words before) rarely come true."""
    draw, out = drawer(seed), bytearray()
    pool = "river stone garden letter winter harbour lantern orchard meadow silver quiet morning".split()
    while len(out) < size:
        out += (" ".join(pool[draw(len(pool))] for _ in range(5 + draw(6))).capitalize() + ".\n").encode()
    return _escaped(bytes(out[:size]), escapes)


# the bias head (format 2.4): a ledger that keeps naming the same invented people and goods (which the model ranks
# low until the bias head has seen them), log lines, and sentences of a few words, in three chunks of 512 bytes
# decoded in lockstep, in windows of 160 positions after BOS and the first 16 tokens of chunk 0, with the span of 40:
# the bias head with the match model, and alone; escapes
BIAS_TREE = [
    ("books", "dir", None, 0o755),
    ("books/ledger.txt", "file", ledger(600, 15, b"\x04"), 0o644),
    ("books/dpkg.log", "file", log_lines(420, 16), 0o644),
    ("books/words.txt", "file", few_words(516, 17, b"\xc0"), 0o644),
]
# bias groups (format 2.5): a ledger of four chunks of 512 bytes (one run: one group sharing a bias head, whose
# last chunk holds 476 bytes) and sentences of a few words in a chunk of their own, decoded in lockstep, in windows of
# 160 positions with the span of 40; escapes
GROUP_TREE = [
    ("ledgers", "dir", None, 0o755),
    ("ledgers/accounts.txt", "file", ledger(2012, 18, b"\x04"), 0o644),
    ("ledgers/words.txt", "file", few_words(300, 19), 0o644),
]
# a bias group's match model (format 2.6): log lines in four chunks of 512 bytes (one group, whose chunks repeat
# each other's lines) and a ledger in two (a group of two; escapes), in windows of 160 positions with the span of 40
GROUP_MATCH_TREE = [
    ("logs", "dir", None, 0o755),
    ("logs/accounts.txt", "file", ledger(1000, 21, b"\x04"), 0o644),
    ("logs/dpkg.log", "file", log_lines(2040, 20), 0o644),
]
# a bias group as one chunk of streams (format 2.7): log lines in chunks of 512 bytes, then sentences of a few words
# that fit in no chunk with their end (a run ends), then a ledger (escapes) from the same chunk on: two runs, chunks
# 0-2 and 3-6, each one chunk of its streams (3 and 4), the two decoded in lockstep, in windows of 160 positions with
# the span of 40
STREAMS_TREE = [
    ("streams", "dir", None, 0o755),
    ("streams/a-dpkg.log", "file", log_lines(1200, 22), 0o644),
    ("streams/b-words.txt", "file", few_words(400, 23), 0o644),
    ("streams/c-ledger.txt", "file", ledger(1200, 24, b"\x04"), 0o644),
]
# the neural cache (format 2.8): a ledger in a run of three chunks of 512 bytes (one chunk of three streams sharing a
# cache; escapes) and log lines in a chunk of their own (its own cache), decoded in lockstep, in windows of 160
# positions with the span of 40
CACHE_TREE = [
    ("cache", "dir", None, 0o755),
    ("cache/a-ledger.txt", "file", ledger(1536, 25, b"\x04"), 0o644),
    ("cache/b-dpkg.log", "file", log_lines(500, 26), 0o644),
]
# UTF-16 text as UTF-8 (format 2.9): prose as UTF-16LE with a byte order mark, a line of accents and a character past
# U+FFFF (a surrogate pair) inside its second chunk of 512 bytes, in a run of three chunks (one chunk of three streams,
# each in text form 1); a few words as UTF-16BE in a chunk of its own (form 2); log lines as they are (form 0); all
# decoded in lockstep, in windows of 160 positions with the span of 40
UTF16_TREE = [
    ("utf16", "dir", None, 0o755),
    ("utf16/a-le.txt", "file", ("\ufeff" + prose(300, 27).decode() + "Naïve café, ĳssel — 🌍 über alles.\n"
                                + prose(340, 28).decode()).encode("utf-16-le"), 0o644),
    ("utf16/b-be.txt", "file", few_words(200, 29).decode().encode("utf-16-be"), 0o644),
    ("utf16/c-dpkg.log", "file", log_lines(300, 30), 0o644),
]
# CR LF as LF (format 2.10): prose with CR LF line ends and a lone CR (a progress line) in a run of three chunks of 512
# bytes (one chunk of three streams, each in text form 4), a few words with CR LF as UTF-16LE (form 5) and log lines
# with LF (form 0), in a chunk each
CRLF_TREE = [
    ("crlf", "dir", None, 0o755),
    ("crlf/a-dos.txt", "file", prose(1300, 31).replace(b"\n", b"\r\n") + b"Copying 10%\rCopying 100%\r\nDone.\r\n", 0o644),
    ("crlf/b-le.txt", "file", few_words(200, 33).replace(b"\n", b"\r\n").decode().encode("utf-16-le"), 0o644),
    ("crlf/c-dpkg.log", "file", log_lines(300, 34), 0o644),
]


LATIN_POOL = "été café naïve déjà façade garçon élève fenêtre forêt château rivière crème le la et de un".split()
RUSSIAN_POOL = "дом мир день город река лес поле время жизнь слово дело рука земля вода книга окно дорога старый новый " \
               "большой тихий и в на с по не".split()
GREEK_POOL = "σπίτι κόσμος μέρα πόλη ποτάμι δάσος χωράφι χρόνος ζωή λόγος νερό βιβλίο παράθυρο δρόμος παλιός νέος " \
             "μεγάλος μικρός και το της με στο".split()


def legacy_words(size: int, seed: int, extra: str = "", pool: list[str] = LATIN_POOL) -> str:
    """`size` characters of sentences of the pool's words (French-looking ones with accents by default; `extra` after
    each), as a legacy text holds them."""
    draw, out = drawer(seed), ""
    while len(out) < size:
        out += " ".join(pool[draw(len(pool))] for _ in range(4 + draw(5))).capitalize() + extra + ".\n"
    return out[:size]


# windows-1252 as UTF-8 (format 2.11): Latin-1 prose with LF in a run of three chunks of 512 bytes whose middle one is
# ASCII (one chunk of three streams, each in text form 3); windows-1252 text with CR LF, curly quotes and the euro
# sign in a chunk of its own (form 7); UTF-8 text with the same accents (form 0)
LATIN1_TREE = [
    ("latin1", "dir", None, 0o755),
    ("latin1/a-latin1.txt", "file", legacy_words(300, 35).encode("latin-1") + prose(800, 36)
     + legacy_words(300, 37).encode("latin-1"), 0o644),
    ("latin1/b-dos.txt", "file", legacy_words(300, 38, " ‘à 5 €’").replace("\n", "\r\n").encode("cp1252"), 0o644),
    ("latin1/c-utf8.txt", "file", legacy_words(300, 39).encode(), 0o644),
]
# other 8-bit code pages as UTF-8 (format 2.12): Russian in windows-1251 in a run of two chunks of 512 bytes (one chunk
# of two streams, each in text form 8), Russian in KOI8-R with CR LF (form 13), Greek in ISO-8859-7 (form 11) and
# Russian in IBM866 with its box-drawing frame (form 10), in a chunk each
CODE_PAGES_TREE = [
    ("pages", "dir", None, 0o755),
    ("pages/a-cp1251.txt", "file", legacy_words(900, 40, pool=RUSSIAN_POOL).encode("cp1251"), 0o644),
    ("pages/b-koi8.txt", "file", legacy_words(300, 41, pool=RUSSIAN_POOL).replace("\n", "\r\n").encode("koi8_r"), 0o644),
    ("pages/c-greek.txt", "file", legacy_words(300, 42, " «Αθήνα»", GREEK_POOL).encode("iso8859_7"), 0o644),
    ("pages/d-dos.txt", "file", ("╔══╗ " + legacy_words(290, 43, pool=RUSSIAN_POOL)).encode("cp866"), 0o644),
]
GPT2_MODEL = "gpt2-tiny"  # the tiny random GPT-2 of tests/gpt2_tiny.py (seed 0), compiled from its weights


@functools.cache
def trees() -> dict[str, list]:
    """Every fixture tree. The GPT-2 one holds text its model samples from its own tables (a fixed LCG draws), which
    it codes in about 6 bits per byte: three files of two 240-token samples each."""
    from tests.gpt2_tiny import tiny_gpt2
    from tests.tiny import sampled_text

    model = tiny_gpt2()
    sampled = [("sampled", "dir", None, 0o755)]
    for number, name in enumerate(("one", "two", "three")):
        text = b"".join(sampled_text(model, 240, seed) for seed in (2 * number + 1, 2 * number + 2))
        sampled.append((f"sampled/{name}.bin", "file", text, 0o644))
    return {"basic": TREE, "windows": WINDOWS_TREE, "primer": PRIMER_TREE, "match": MATCH_TREE, "span": SPAN_TREE,
            "bias": BIAS_TREE, "group": GROUP_TREE,
            "group-match": GROUP_MATCH_TREE, "streams": STREAMS_TREE, "cache": CACHE_TREE, "utf16": UTF16_TREE,
            "crlf": CRLF_TREE, "latin1": LATIN1_TREE, "pages": CODE_PAGES_TREE, "sampled": sampled}


ARCHIVES = {
    # name: (tree, format version, codec, chunk size, index encoding, lm window, lm primer, lm span, model: None for
    # the default, as it was compiled when these were made: cut at 2,048 positions). The store archives do not depend on
    # the zstd library's output, so their bytes are reproducible anywhere and the tests regenerate them byte for byte.
    # The lm ones keep their window, primer, span and model when the writer's defaults change.
    "v1-store.lza": ("basic", 1, "store", 64, IndexEncoding.MSGPACK, None, 0, 0, None),
    "v1-zstd.lza": ("basic", 1, "zstd", 256, IndexEncoding.MSGPACK_ZSTD, None, 0, 0, None),
    # lm with the default model (store as the floor, no zstd): regenerating it byte for byte pins the exact engine
    "v1-lm.lza": ("basic", 1, "lm", 64, IndexEncoding.MSGPACK, 1024, 0, 0, None),
    "v2-store.lza": ("basic", "2.0", "store", 64, IndexEncoding.MSGPACK, None, 0, 0, None),
    "v2-zstd.lza": ("basic", "2.0", "zstd", 256, IndexEncoding.MSGPACK_ZSTD, None, 0, 0, None),
    "v2-lm.lza": ("basic", "2.0", "lm", 64, IndexEncoding.MSGPACK, 1024, 0, 0, None),
    "v2-lm-windows.lza": ("windows", "2.0", "lm", 8192, IndexEncoding.MSGPACK, 1024, 0, 0, None),
    "v2.1-lm-primer.lza": ("primer", "2.1", "lm", 512, IndexEncoding.MSGPACK, 64, 80, 0, None),
    "v2.2-lm-match.lza": ("match", "2.2", "lm", 512, IndexEncoding.MSGPACK, 64, 24, 0, None),
    "v2.3-lm-span.lza": ("span", "2.3", "lm", 512, IndexEncoding.MSGPACK, 160, 16, 40, None),
    "v2.4-lm-bias.lza": ("bias", "2.4", "lm", 512, IndexEncoding.MSGPACK, 160, 16, 40, None),
    "v2.5-lm-bias-group.lza": ("group", "2.5", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.6-lm-group-match.lza": ("group-match", "2.6", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.7-lm-streams.lza": ("streams", "2.7", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.8-lm-cache.lza": ("cache", "2.8", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.9-lm-utf16.lza": ("utf16", "2.9", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.10-lm-crlf.lza": ("crlf", "2.10", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.11-lm-windows1252.lza": ("latin1", "2.11", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    "v2.12-lm-code-pages.lza": ("pages", "2.12", "lm", 512, IndexEncoding.MSGPACK, 160, 0, 40, None),
    # the GPT-2 profile (lza-int-gpt2-v1): three chunks of 512 bytes (a token each) in lockstep, each in windows of
    # 200 positions (overlap 50: past the first attention block)
    "v2-gpt2.lza": ("sampled", "2.0", "lm", 512, IndexEncoding.MSGPACK, 200, 0, 0, GPT2_MODEL),
}


def materialize(root: str, tree: list) -> None:
    for path, kind, payload, mode in tree:
        full = os.path.join(root, path)
        if kind == "dir":
            os.makedirs(full)
        elif kind == "file":
            with open(full, "wb") as f:
                f.write(payload)
        elif kind == "symlink":
            os.symlink(payload, full)
        else:
            os.link(os.path.join(root, payload), full)
        if kind != "symlink":
            os.chmod(full, mode)
    for path, kind, _, _ in sorted(tree, key=lambda t: -t[0].count("/")):
        os.utime(os.path.join(root, path), ns=(MTIME, MTIME), follow_symlinks=False)


def model_file(name: str | None, directory: str) -> str:
    """A fixture's model as a compiled file (packing imports it into the model cache)."""
    from tests.gpt2_tiny import tiny_gpt2

    from lzarchive.engine import compiler, registry

    if name is None:
        return registry.default_model_path(registry.EARLIER_POSITIONS)
    assert name == GPT2_MODEL
    model, path = tiny_gpt2(), os.path.join(directory, name + ".lzm")
    compiler.write_compiled(path, model.config, model.tensors, numerics=model.numerics, name=model.name,
                            source=model.source, tokenizer_json=model.tokenizer_json)
    return path


def build(name: str, out_path: str) -> None:
    tree, version, codec, chunk_size, index_encoding, window, primer, span, model = ARCHIVES[name]
    with tempfile.TemporaryDirectory() as tmp:
        materialize(tmp, trees()[tree])
        pack([os.path.join(tmp, trees()[tree][0][0])], out_path, codec=codec, chunk_size=chunk_size,
             index_encoding=index_encoding, format_version=version, window=window, primer=primer, span=span or None,
             model=model_file(model, tmp) if codec == "lm" else None, force=True)


def manifest() -> dict:
    """Each tree's entries, and which tree each archive holds (its sha256 is added by main)."""
    return {"trees": {name: tree_manifest(tree) for name, tree in trees().items()},
            "archives": {name: {"tree": spec[0], **({"model": spec[8]} if spec[8] else {})}
                         for name, spec in ARCHIVES.items()}}


def tree_manifest(tree: list) -> list[dict]:
    entries = []
    for path, kind, payload, mode in tree:
        row = {"path": path, "kind": kind, "mtime_ns": MTIME}
        if kind in ("file", "hardlink"):
            data = payload if kind == "file" else next(p for q, _, p, _ in tree if q == payload)
            row.update(mode=mode, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        if kind == "dir":
            row["mode"] = mode
        if kind == "symlink":
            row["target"] = payload
        if kind == "hardlink":
            row["target_path"] = payload
        entries.append(row)
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 if regenerated bytes differ")
    args = parser.parse_args()
    result = manifest()
    status = 0
    for name in ARCHIVES:
        target = os.path.join(FIXTURES, name)
        with tempfile.TemporaryDirectory() as tmp:
            fresh = os.path.join(tmp, name)
            build(name, fresh)
            data = Path(fresh).read_bytes()
        if args.check:
            same = os.path.exists(target) and Path(target).read_bytes() == data
            print(f"{name}: {'identical' if same else 'DIFFERENT'}")
            status |= not same
        else:
            with open(target, "wb") as f:
                f.write(data)
        result["archives"][name]["sha256"] = (hashlib.sha256(Path(target).read_bytes()).hexdigest()
                                              if os.path.exists(target) else None)
    if not args.check:
        with open(os.path.join(FIXTURES, "manifest.json"), "w") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
