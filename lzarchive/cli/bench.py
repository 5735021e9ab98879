"""CLI layer: `lza bench`, a quick estimate of what lza achieves on the user's own files against xz and zstd."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from .. import api
from ..api import UsageError
from .render import emit_json, human_bytes, parse_size, say, stdout

COMPARED = ("xz -9e", "zstd -19")


def bench_files(
    files: Annotated[list[str], typer.Argument(help="Files and directories to sample.")],
    sample: Annotated[str, typer.Option(help="Bytes to sample in all (on 2 CPU cores the lm codec packs ~500 tokens/s and unpacks a few chunks at ~40-100: 64K takes several minutes).")] = "64K",
    per_file: Annotated[str, typer.Option(help="At most this many bytes from the start of each file, so the sample spans many files.")] = "16K",
    codec: Annotated[str, typer.Option(help="The lza codec to try: auto, lm, zstd or store.")] = "auto",
    chunk_size: Annotated[Optional[str], typer.Option(help="Passed to lza pack (e.g. 32K).")] = None,
    window: Annotated[Optional[int], typer.Option(help="Passed to lza pack: the lm codec's context in tokens (e.g. 2048 with --chunk-size 32K: tighter, slower).")] = None,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, cuda or cuda:N (a GPU needs the CUDA build of torch).")] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON Lines record per tool.")] = False,
) -> None:
    """Estimate lza's ratio and speed on a sample of your files, next to xz -9e and zstd -19 on the same bytes.

    Every tool's output is decompressed and compared with the sample. Example: lza bench ~/notes --sample 256K
    """
    try:
        budget, per_file_bytes = parse_size(sample), parse_size(per_file)
    except ValueError as exc:
        raise UsageError(reason=str(exc)) from None
    if budget < 1 or per_file_bytes < 1:
        raise UsageError(reason=f"--sample and --per-file are sizes of at least 1 byte, got {sample} and {per_file}")
    api.check_device(device)  # before sampling: an unusable device fails at once
    chosen = api.bench_sample(files, budget, per_file_bytes)
    size = sum(map(len, chosen.values()))
    if not json_output:
        say(f"sampled {human_bytes(size)} from {len(chosen)} files; packing with lza --codec {codec} ...")
    options = ["--codec", codec] + (["--chunk-size", chunk_size] if chunk_size else []) + (["--window", str(window)] if window is not None else [])
    results = api.bench_measure(chosen, options, COMPARED, device=device)
    if json_output:
        for m in results:
            emit_json("bench", tool=m.tool, raw_bytes=m.raw_bytes, stored_bytes=m.stored_bytes,
                      bits_per_byte=round(m.bits_per_byte, 4), compress_seconds=round(m.compress_s, 3),
                      decompress_seconds=round(m.decompress_s, 3))
        return
    table = Table(title=f"{human_bytes(size)} sampled from {len(chosen)} files (round trips checked)")
    for column in ("tool", "size", "bits/byte", "vs xz", "compress", "decompress"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    xz = next((m for m in results if m.tool == "xz -9e"), None)
    for m in results:
        table.add_row(Text(m.tool), human_bytes(m.stored_bytes), f"{m.bits_per_byte:.3f}",
                      f"{m.stored_bytes / xz.stored_bytes:.2f}x" if xz else "-", f"{m.compress_s:.1f} s",
                      f"{m.decompress_s:.1f} s")
    stdout.print(table)
    loading = "lza's times include loading the model (a few seconds); " if codec in ("auto", "lm") else ""
    say(f"{loading}lza's size includes the archive's header and index, which weigh more on a small sample.")


def register(app: typer.Typer) -> None:
    app.command("bench", no_args_is_help=True)(bench_files)
