"""CLI layer: `lza list` and `lza info`."""

from __future__ import annotations

import stat
import sys
import time
from typing import Annotated, Optional

import typer

from .. import api
from ..api import EntryType
from .render import counted, emit_json, human_bytes, printable, quoted, say, stdout

_TYPE_BITS = {EntryType.FILE: stat.S_IFREG, EntryType.HARDLINK: stat.S_IFREG, EntryType.DIR: stat.S_IFDIR,
              EntryType.SYMLINK: stat.S_IFLNK}


def list_command(
    archive: Annotated[str, typer.Argument(help="The archive to read.")],
    paths: Annotated[Optional[list[str]], typer.Argument(help="Entries to list (a directory brings its contents); all if none.")] = None,
    long: Annotated[bool, typer.Option("--long", "-l", help="Mode, size, mtime and link targets too.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON Lines record per entry, names exactly as stored.")] = False,
) -> None:
    """List the entries of an archive, or those at or below the paths given (reads only the index). Names that hold
    control characters or other characters a terminal would act on are shown quoted, with backslash escapes ("a\\nb");
    --json gives them exactly. Example: lza list -l docs.lza docs/guide"""
    out = sys.stdout
    for entry in api.list_entries(archive, paths or ()):
        if json_output:
            emit_json("entry", path=entry.path, kind=entry.type.name.lower(), mode=entry.mode, mtime_ns=entry.mtime_ns,
                      size=entry.size, hash=entry.content_hash.hex() if entry.content_hash else None,
                      target=entry.target, chunks=[[r.chunk, r.offset, r.length] for r in entry.chunks])
        elif long:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime_ns / 1e9))
            arrow = {EntryType.SYMLINK: " -> ", EntryType.HARDLINK: " link to "}.get(entry.type, "")
            line = f"{stat.filemode(_TYPE_BITS[entry.type] | entry.mode)} {entry.size:>12} {when} {quoted(entry.path)}"
            out.write(line + (arrow + quoted(entry.target) if arrow else "") + "\n")
        else:
            out.write(quoted(entry.path) + "\n")


def info_command(
    archive: Annotated[str, typer.Argument(help="The archive to read.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print as one JSON Lines record.")] = False,
) -> None:
    """Show the header (format version, flags, models), entry counts, per-codec statistics and the ratio."""
    result = api.info(archive)
    if json_output:
        emit_json("info", archive=result.path, format_version=result.version, flags=result.flags, models=result.models,
                  entries=result.entries, codecs=result.codecs, content_bytes=result.content_bytes,
                  archive_bytes=result.archive_bytes, ratio=round(result.ratio, 6))
        return
    say(f"archive      {result.path}", out=stdout)
    say(f"format       lza {result.version}  flags {result.flags}", out=stdout)
    for model in result.models:  # the archive's own words: escaped like names
        tokenizer = f" tokenizer {model['tokenizer_hash'][:16]}…" if model["tokenizer_hash"] else ""
        say(f"model        {model['name']} ({model['source']}) {model['numerics']} "
            f"hash {model['model_hash'][:16]}…{tokenizer}", out=stdout)
    say("entries      " + (", ".join(counted(n, k) for k, n in sorted(result.entries.items())) or "none"), out=stdout)
    say(f"content      {human_bytes(result.content_bytes)} → archive {human_bytes(result.archive_bytes)}"
        f" ({result.ratio * 100:.2f} %)", out=stdout)
    say(f"{'codec':<8} {'chunks':>8} {'raw':>12} {'stored':>12} {'stored/raw':>10}", out=stdout)
    for name, row in sorted(result.codecs.items()):
        share = row["stored_bytes"] / row["raw_bytes"] * 100 if row["raw_bytes"] else 0.0
        say(f"{printable(name):<8} {row['chunks']:>8} {human_bytes(row['raw_bytes']):>12} "
            f"{human_bytes(row['stored_bytes']):>12} {share:>9.1f} %", out=stdout)


def register(app: typer.Typer) -> None:
    app.command("list", no_args_is_help=True)(list_command)
    app.command("info", no_args_is_help=True)(info_command)
