"""CLI layer: `lza cat`."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Optional

import typer

from .. import api
from ..api import UsageError


# ASCII digits only: int() would also take '1_0', ' 1' and other scripts' digits
RANGE = re.compile(r"([0-9]*):([0-9]*)")


def parse_range(text: str) -> tuple[int, int | None]:
    """'START:END', 'START:' or ':END' → (start, end); END is exclusive."""
    match = RANGE.fullmatch(text)
    if not match:
        raise UsageError(reason=f"invalid --range {text!r}: use START:END, START: or :END (bytes, END exclusive)")
    start, end = int(match[1] or 0), (int(match[2]) if match[2] else None)
    if end is not None and end < start:
        raise UsageError(reason=f"invalid --range {text!r}: END is before START")
    return start, end


def cat(
    archive: Annotated[str, typer.Argument(help="The archive to read.")],
    path: Annotated[str, typer.Argument(help="The file inside the archive.")],
    byte_range: Annotated[Optional[str], typer.Option("--range", help="Only bytes START:END (END exclusive).")] = None,
    device: Annotated[str, typer.Option(help="Where the model runs for lm chunks: cpu, cuda or cuda:N (a GPU needs the CUDA build of torch).")] = "cpu",
) -> None:
    """Write one file (or a byte range of it) to stdout, decoding only the chunks that hold it, and the last of them
    only up to where the file ends. Nothing is written before it is checked: by the file's hash, or for a range of a
    file spread over several chunks, by each chunk's checksum."""
    start, end = parse_range(byte_range) if byte_range is not None else (0, None)
    out = sys.stdout.buffer
    for piece in api.cat(archive, path, start, end, device=device):
        out.write(piece)
    out.flush()


def register(app: typer.Typer) -> None:
    app.command("cat", no_args_is_help=True)(cat)
