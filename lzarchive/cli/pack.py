"""CLI layer: `lza pack`."""

from __future__ import annotations

import os
import time
from typing import Annotated, Optional

import typer

from .. import api
from ..api import DEFAULT_CHUNK_SIZE, SourcesChanged, UsageError
from ..api import LM_MAX_CHUNK_SIZE, LM_MIN_CHUNK_SIZE
from ..api import LM_DEFAULT_WINDOW as LM_WINDOW
from .render import BarProgress, counted, emit_json, human_bytes, parse_size, say


def pack(
    sources: Annotated[list[str], typer.Argument(help="Files and directories to archive; each is stored under its own name.")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Archive to write (may also be given as the last argument ending in .lza).")] = None,
    codec: Annotated[str, typer.Option(help=f"Chunk codec: {', '.join(api.CODEC_CHOICES)}. auto keeps the smallest per chunk.")] = "auto",
    chunk_size: Annotated[Optional[str], typer.Option(help=f"Plaintext bytes per chunk (e.g. 16K, 1M): larger packs tighter, smaller reads one file faster. Default with the lm codec: the size that makes 16 chunks (they decode together), within {LM_MIN_CHUNK_SIZE // 1024}K..{LM_MAX_CHUNK_SIZE // 1024}K, each ending after a line break in its last eighth where there is one (so the next starts a line); {DEFAULT_CHUNK_SIZE // 1024}K otherwise. A size given here is kept exactly.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Skip what matches this glob, as tar does: a name (*.o), or a path at any depth (cache/*, a/b); a trailing / matches directories only (build/). Repeatable.")] = None,
    level: Annotated[Optional[int], typer.Option(help="zstd level, 1..22 (default 12).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model for the lm codec: a compiled .lzm, a GGUF file or a Hugging Face directory (default: SmolLM2-135M-Instruct).")] = None,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, cuda or cuda:N (a GPU needs the CUDA build of torch). Archives are identical either way.")] = "cpu",
    ray: Annotated[Optional[str], typer.Option(metavar="ADDRESS", help="Run the lm codec on a Ray cluster, one worker per machine using its CPUs (per GPU with --device cuda): local (the one running on this machine, else one started for this command), auto (the one running here, started with ray start --head) or HOST:PORT. The bytes are the same as without. Needs pip install 'lzarchive[ray]'.")] = None,
    window: Annotated[Optional[int], typer.Option(help=f"Positions of one lm window, after which the model restarts (lm codec; default: the model's positions, 8192 for the default model, less a primer; {LM_WINDOW} with --span 0). Measured with --span 0 on prose and Python code: 2048 with --chunk-size 32K packs 4-13 % tighter than 1024, compresses 1.5x and extracts 1.7x slower (every token attends to up to twice as many positions, and 4x fewer chunks decode together).")] = None,
    primer: Annotated[int, typer.Option(help="Tokens of the archive's first lm chunk that every later lm chunk starts from (default 0: none; format 2.1). Later chunks then meet what the archive starts with (names, style) warm: with 512, asyoulik.txt packs 2.4 % smaller, but extracts 1.4x slower (every window attends to the primer too) and packs 1.4x slower (lcet10.txt about 2x), reading any lm chunk first decodes the primer, and damage to the first lm chunk reaches every lm chunk after it.")] = api.LM_DEFAULT_PRIMER,
    match: Annotated[bool, typer.Option("--match/--no-match", help="Let each lm chunk mix the model with a match model that predicts the next token from the longest earlier repeat in the chunk, where that makes the chunk smaller (format 2.2; SPEC.md 9.8). Text that repeats further back than the model's window gains most: offline, 7.3 % fewer bits on system logs, 0.6 % on Python code, 0.2 % on a play; chunks where it does not pay are coded without it, and it costs little time.")] = True,
    bias: Annotated[bool, typer.Option("--bias/--no-bias", help="Let each lm chunk correct the model's logits with a bias head learned from the chunk so far (each token seen raises its own logit and lowers the others by what the model expected), where that makes the chunk smaller (format 2.4; SPEC.md 9.9). Names, words and identifiers that a text keeps using gain most: a book (lcet10.txt) packs 1.5 % smaller, a play in short chunks (asyoulik.txt) 0.3 %, Python code about 1.2 % offline; packing runs at 98 % of the speed without it, extraction about as fast.")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Let lm chunks with the bias head (and bias groups) mix in a neural cache, which predicts the next token from the tokens that followed earlier positions whose final hidden state resembles the current one (names and phrases the text has met, in other words too), where that makes them smaller (format 2.8; SPEC.md 9.13). A book in a bias group gains most: asyoulik.txt packs 1.2 % smaller, lcet10.txt 2.0 %, extracting at 97 % and 89 % of the speed without it (--no-cache).")] = True,
    bias_group: Annotated[Optional[int], typer.Option(min=1, max=api.LM_BIAS_GROUP, help=f"Chunks of one file that share one bias head, at most (format 2.5; SPEC.md 9.10): it learns from all of their tokens at once, counted from the file's first chunk, so every chunk after the first starts warm. Default {api.LM_BIAS_GROUP}: a book (lcet10.txt, 16 chunks) packs 1.2 % smaller than with a head per chunk, a play (asyoulik.txt) 1.2 %; reading part of a file decodes its group as far as that part needs. Files that fit in one chunk are never grouped (reading a small file costs what it did). With the match model, a group's chunks also find repeats in each other (format 2.6; SPEC.md 9.11): lcet10.txt 1.3 % smaller again, asyoulik.txt 0.6 %, at the same speed. Each group is one chunk of streams (format 2.7; SPEC.md 9.12): a chunk header, index row and payload header per group, not per part. 1: a head per chunk (format 2.4). Not with --primer, --no-bias, a format before 2.5 or --codec zstd or store.")] = None,
    span: Annotated[Optional[int], typer.Option(help=f"Positions each lm token sees besides BOS (and a primer): the model's memory slides along the chunk instead of restarting every --window tokens, so windows default to the model's positions (8192) and restart, where a chunk is longer, on the last SPAN tokens (format 2.3; SPEC.md 9.5). Default {api.LM_DEFAULT_SPAN}: against the windows of format 2.2, a book (lcet10.txt) packs 0.8 % and Python code about 1.0 % smaller at the same speed, with 28 % less memory to extract; 1024 saves 0.6 % more on the book, packing at 82 % of the speed (a decoding step 5 % slower). 0: no span (windows of 1024 restarting on 256, as format 2.2).")] = None,
    format_version: Annotated[str, typer.Option("--format", help="Archive format to write: 2 (the default: 2.12 where lm chunks may be written, with UTF-16 and legacy 8-bit text (windows-1252 or Latin-1, and Cyrillic or Greek: windows-1251, KOI8-R, IBM866, ISO-8859-7) coded as its UTF-8 form and CR LF line ends as LF, SPEC.md 9.14; else 2.0), 2.12, 2.11 (8-bit text read as windows-1252 only), 2.10 (8-bit text coded as it is), 2.9 (CR LF coded as it is too), 2.8 (UTF-16 text coded as it is too: 2.8 with lm chunks and the bias head, 2.7 with --no-cache and bias groups, each group one chunk of streams; 2.4 with --no-cache and --bias-group 1 or --primer, 2.3 with --no-bias and a span, 2.2 with the match model and --span 0, 2.1 with --primer alone, else 2.0), 2.7 (no neural cache), 2.6 (each bias group's chunks apart; 2.5 with --no-match), 2.5, 2.4, 2.3, 2.2, 2.1, 2.0, or 1 for lza releases before format 2 (SPEC.md appendix A).")] = str(api.FORMAT_VERSION),
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace OUTPUT if it is a file (never a link, a device or a pipe, nor a file also named as a source; inside a source tree it is skipped, with a warning).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON Lines.")] = False,
) -> None:
    """Pack files and directory trees into an archive (written atomically: a failed pack leaves nothing).

    Regular files, directories (empty ones too), symlinks (stored as links, never followed: name a link to a
    directory as link/ to pack what it points to) and hardlinks are kept with their mode and mtime. A file that changes while it is read is stored as read (never beyond the size first seen), one
    removed meanwhile is left out, and so is what below a source cannot be read (permission denied: a file that cannot
    be opened, a directory that cannot be listed), each with a warning, and pack exits 1 though the archive is
    written, as tar does. With --codec auto (the default) every chunk is coded by zstd and by the language model and the
    smaller wins, but zstd alone codes a chunk that it shrinks to 1/64 or less (zeros, repeated blocks: the model could
    save at most that, at up to a token per byte, hours for megabytes). Example: lza pack src/ docs/README.md -o project.lza
    """
    if output is None and len(sources) >= 2 and sources[-1].endswith(".lza") and not os.path.isdir(sources[-1]):
        sources, output = sources[:-1], sources[-1]
    if output is None:
        raise UsageError(reason="no output archive: use -o OUT.lza")
    try:
        size = parse_size(chunk_size) if chunk_size else None
    except ValueError as exc:
        raise UsageError(reason=str(exc)) from None
    progress = BarProgress(enabled=not (quiet or json_output))
    started = time.perf_counter()
    try:
        stats = api.pack(sources, output, codec=codec, chunk_size=size, excludes=exclude or (), force=force,
                         zstd_level=level, model=model, device=device, window=window, primer=primer,
                         match=match, bias=bias, cache=cache, bias_group=bias_group, span=span, format_version=format_version, ray=ray, progress=progress)
    finally:
        progress.finish()
    elapsed = time.perf_counter() - started
    if json_output:
        emit_json("pack", archive=output, entries=stats.entries, chunks=stats.chunks, content_bytes=stats.raw_bytes,
                  archive_bytes=stats.archive_bytes, seconds=round(elapsed, 3),
                  codecs={k: vars(v) for k, v in stats.per_codec.items()}, changed=stats.changed,
                  unreadable=stats.unreadable)
    elif not quiet:
        ratio = stats.archive_bytes / stats.raw_bytes * 100 if stats.raw_bytes else 0.0
        say(f"packed {counted(stats.entries, 'entry')}, {human_bytes(stats.raw_bytes)} → "
            f"{human_bytes(stats.archive_bytes)} ({ratio:.1f} %) in {counted(stats.chunks, 'chunk')}, {elapsed:.1f} s: "
            f"{output}")
    if stats.changed or stats.unreadable:  # as tar: the archive is there, but not all of the sources as they were
        said = [f"{counted(len(paths), noun)} {what}" for paths, noun, what in (
            (stats.changed, "source file", "changed or vanished while being read"),
            (stats.unreadable, "source path", "could not be read")) if paths]
        raise SourcesChanged(archive=output, sources=" and ".join(said))


def register(app: typer.Typer) -> None:
    app.command("pack", no_args_is_help=True)(pack)
