"""CLI layer: `lza verify`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import api
from ..api import EXIT_INTEGRITY
from .render import BarProgress, counted, emit_json, say


def verify(
    archive: Annotated[str, typer.Argument(help="The archive to check.")],
    full: Annotated[bool, typer.Option("--full/--quick", help="--full (default) decodes every chunk and checks every plaintext and file checksum; --quick checks structure and stored-bytes checksums only.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only problems.")] = False,
    device: Annotated[str, typer.Option(help="Where the model runs for lm chunks: cpu, cuda or cuda:N (a GPU needs the CUDA build of torch).")] = "cpu",
    ray: Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Run the lm codec on a Ray cluster, one worker per machine using its CPUs (per GPU with --device cuda): local (the one running on this machine, else one started for this command), auto (the one running here, started with ray start --head) or HOST:PORT. The bytes are the same as without. Needs pip install 'lzarchive[ray]'.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON Lines record per problem, then a summary.")] = False,
) -> None:
    """Check an archive; every damaged chunk is reported with the files it affects. Exit 3 on any problem."""
    progress = BarProgress(enabled=not (quiet or json_output))
    try:
        report = api.verify(archive, full=full, device=device, ray=ray, progress=progress)
    finally:
        progress.finish()
    for problem in report.problems:
        if json_output:
            emit_json("problem", chunk=problem.chunk, reason=problem.reason, paths=list(problem.paths))
        else:
            say(f"lza: {archive}: {problem.describe()}")
    mode = "full" if full else "quick"
    if json_output:
        emit_json("verify", archive=archive, mode=mode, ok=report.ok, chunks=report.chunks, entries=report.entries,
                  problems=len(report.problems))
    elif not quiet and report.ok:
        say(f"ok ({mode}): {counted(report.chunks, 'chunk')}, {counted(report.entries, 'entry')}: {archive}")
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def register(app: typer.Typer) -> None:
    app.command("verify", no_args_is_help=True)(verify)
