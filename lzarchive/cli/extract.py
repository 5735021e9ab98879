"""CLI layer: `lza extract`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import api
from .render import BarProgress, counted, emit_json, say


def extract(
    archive: Annotated[str, typer.Argument(help="The archive to read.")],
    paths: Annotated[Optional[list[str]], typer.Argument(help="Entries to extract (a directory brings its contents); all if none.")] = None,
    directory: Annotated[str, typer.Option("-C", "--directory", help="Destination directory (created if missing).")] = ".",
    overwrite: Annotated[bool, typer.Option(help="Replace existing files, links and empty directories instead of refusing (never a directory that holds anything, nor the archive being read).")] = False,
    skip_unsafe: Annotated[bool, typer.Option(help="Skip refused entries (escaping symlinks, existing files) with a warning instead of stopping.")] = False,
    trust_links: Annotated[bool, typer.Option(help="Create symlinks as archived even where they are absolute or lead out of the destination: for restoring a tree of your own whole (a virtualenv's python -> /usr/bin/python3). Nothing is written through a link either way.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    device: Annotated[str, typer.Option(help="Where the model runs for lm chunks: cpu, cuda or cuda:N (a GPU needs the CUDA build of torch).")] = "cpu",
    ray: Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Run the lm codec on a Ray cluster, one worker per machine using its CPUs (per GPU with --device cuda): local (the one running on this machine, else one started for this command), auto (the one running here, started with ray start --head) or HOST:PORT. The bytes are the same as without. Needs pip install 'lzarchive[ray]'.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON Lines.")] = False,
) -> None:
    """Extract all entries, or the ones named, under a directory, safely.

    Refused before anything is written: paths leaving the destination, absolute or escaping symlinks (unless
    --trust-links), and existing files (unless --overwrite). No write ever follows a symlink. Every file's checksum
    is verified before it appears under its name. A file damaged in the archive, or one the destination refuses
    (permission denied, a name too long), is left out with a warning and the rest extracted; extract then exits 3
    (damage) or 1. Example: lza extract project.lza src/lib -C restored/
    """
    progress = BarProgress(enabled=not (quiet or json_output))
    left_out = None
    try:
        count = api.extract(archive, directory, paths or (), overwrite=overwrite, skip_unsafe=skip_unsafe, trust_links=trust_links, device=device, ray=ray, progress=progress)
    except api.NotAllExtracted as exc:  # the others are extracted: say so, as always, then the error
        left_out, count = exc, exc.extracted
    finally:
        progress.finish()
    if json_output:
        emit_json("extract", archive=archive, directory=directory, entries=count,
                  damaged=left_out.damaged if left_out else [], refused=left_out.refused if left_out else [])
    elif not quiet and not left_out:
        say(f"extracted {counted(count, 'entry')} to {directory}")
    if left_out:
        raise left_out


def register(app: typer.Typer) -> None:
    app.command("extract", no_args_is_help=True)(extract)
