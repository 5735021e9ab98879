"""CLI layer: `lza pack`."""

from __future__ import annotations

import os
import time
from typing import Annotated, Optional

import typer

from .. import api
from ..archive.writer import DEFAULT_CHUNK_SIZE
from ..errors import UsageError
from .render import BarProgress, emit_json, human_bytes, parse_size, stderr


def pack(
    sources: Annotated[list[str], typer.Argument(help="Files and directories to archive; each is stored under its own name.")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Archive to write (may also be given as the last argument ending in .lza).")] = None,
    codec: Annotated[str, typer.Option(help=f"Chunk codec: {', '.join(api.CODEC_CHOICES)}. auto keeps the smallest per chunk.")] = "auto",
    chunk_size: Annotated[str, typer.Option(help="Plaintext bytes per chunk (e.g. 256K, 1M): larger packs tighter, smaller reads one file faster.")] = str(DEFAULT_CHUNK_SIZE),
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Skip paths or names matching this glob (repeatable).")] = None,
    level: Annotated[Optional[int], typer.Option(help="zstd level, 1..22.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace OUTPUT if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON Lines.")] = False,
) -> None:
    """Pack files and directory trees into an archive (written atomically: a failed pack leaves nothing).

    Regular files, directories (empty ones too), symlinks (stored as links) and hardlinks are kept with their
    mode and mtime. Example: lza pack src/ docs/README.md -o project.lza
    """
    if output is None and len(sources) >= 2 and sources[-1].endswith(".lza") and not os.path.isdir(sources[-1]):
        sources, output = sources[:-1], sources[-1]
    if output is None:
        raise UsageError(reason="no output archive: use -o OUT.lza")
    try:
        size = parse_size(chunk_size)
    except ValueError as exc:
        raise UsageError(reason=str(exc)) from None
    progress = BarProgress(enabled=not (quiet or json_output))
    started = time.perf_counter()
    try:
        stats = api.pack(sources, output, codec=codec, chunk_size=size, excludes=exclude or (), force=force,
                         zstd_level=level, progress=progress)
    finally:
        progress.finish()
    elapsed = time.perf_counter() - started
    if json_output:
        emit_json("pack", archive=output, entries=stats.entries, chunks=stats.chunks, content_bytes=stats.raw_bytes,
                  archive_bytes=stats.archive_bytes, seconds=round(elapsed, 3),
                  codecs={k: vars(v) for k, v in stats.per_codec.items()})
    elif not quiet:
        ratio = stats.archive_bytes / stats.raw_bytes * 100 if stats.raw_bytes else 0.0
        stderr.print(f"packed {stats.entries} entries, {human_bytes(stats.raw_bytes)} → {human_bytes(stats.archive_bytes)} "
                     f"({ratio:.1f} %) in {stats.chunks} chunks, {elapsed:.1f} s: {output}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("pack", no_args_is_help=True)(pack)
