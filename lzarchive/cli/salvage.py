"""CLI layer: `lza salvage`."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import api
from ..api import EXIT_INTEGRITY
from .render import BarProgress, counted, emit_json, human_bytes, say


def salvage(
    archive: Annotated[str, typer.Argument(help="The damaged archive.")],
    output: Annotated[str, typer.Option("-o", "--output", help="The file to write the recovered bytes to.")],
    force: Annotated[bool, typer.Option(help="Replace the output file if it exists (a file: never a link, a device or a pipe).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only what is missing.")] = False,
    device: Annotated[str, typer.Option(help="Where the model runs for lm chunks: cpu, cuda or cuda:N (a GPU needs the CUDA build of torch).")] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON Lines record per missing chunk and per gap, then a summary.")] = False,
) -> None:
    """Recover the bytes of an archive whose index is damaged or gone (a copy cut short), where extract cannot.

    The chunks are found by scanning the archive, each decoded and checked against its checksum, and their bytes are
    written one after another to the output: the files' contents in the archive's order, without their names (an
    archive of one file gives that file back, less the bytes of any damaged chunk). Nothing unchecked is written: each
    damaged chunk is reported with where its bytes belong in the output. Exit 3 if anything is missing. Example:
    lza salvage cut-short.lza -o recovered.bin
    """
    progress = BarProgress(enabled=not (quiet or json_output))
    try:
        report = api.salvage(archive, output, force=force, device=device, progress=progress)
    finally:
        progress.finish()
    for chunk, at, size, reason in report.missing:
        if json_output:
            emit_json("missing", chunk=chunk, output_offset=at, bytes=size, reason=reason)
        else:
            say(f"lza: {archive}: chunk {chunk} is damaged ({reason}): missing at byte {at:,} of {output} ({size:,} "
                f"bytes, if its header is right)")
    for gap, at in report.gaps:
        if json_output:
            emit_json("gap", start=gap.start, end=gap.end, output_offset=at, searched=not gap.unsearched)
        else:
            at_end = (" (the search for chunks gave up: magics everywhere, as in crafted bytes)" if gap.unsearched else
                      " (a chunk cut short, or the index)" if gap.end == report.archive_bytes else "")
            say(f"lza: {archive}: bytes {gap.start:,} to {gap.end:,} hold no chunk that can be read{at_end}: what "
                f"they held is missing at byte {at:,} of {output}")
    if json_output:
        emit_json("salvage", archive=archive, output=output, index_whole=report.index_whole, chunks=report.chunks,
                  bytes=report.recovered, missing=len(report.missing), gaps=len(report.gaps))
    elif not quiet:
        say(f"salvaged {human_bytes(report.recovered)} from {report.chunks - len(report.missing)} of "
            f"{counted(report.chunks, 'chunk')} found: {output}")
    if report.index_whole and not json_output:
        say(f"lza: {archive}: its index is whole: lza extract gets every file that is not damaged back, with its name")
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def register(app: typer.Typer) -> None:
    app.command("salvage", no_args_is_help=True)(salvage)
