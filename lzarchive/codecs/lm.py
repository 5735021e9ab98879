"""Codec layer: the lm codec (SPEC.md section 9), the only place where the exact engine and the range coder meet.

Payload: varint model index, varint window W, varint overlap O, (with the header's lm_primer flag) the primer,
(with its lm_match or lm_bias flag) the adaptive field, (with its lm_bias_group flag, where the bias head is on) the
bias group, (with its lm_span flag) the span S, varint token count N, then the range coder's bytes. Tokens are
predicted in windows of at most W positions after a prefix: BOS and, if the payload names a primer, the first P
tokens of the primer chunk (an earlier lm chunk, or this one, which then codes them first in a window of their own).
Window 0 is [prefix, t0, t1, ...]; each later window restarts the model on [prefix, the last O tokens of the
previous windows, ...], so windows are independent forward passes. The prefix's keys and values are computed once
and copied into each window. With a span S > 0, a window's position sees the prefix and the last S positions only
(itself included), so its KV cache slides instead of growing: windows can be as long as the model's positions, and
restart far less often. The adaptive field's bit 0 mixes each token's table with the chunk's match model
(match.py); its bit 1 adds the bias head's state to the logits first, a correction per token learned from the chunk
so far (SPEC.md 9.9); the chunks of a bias group (format 2.5: consecutive chunks of one file) share one such state,
which learns from all of their tokens at once, step by step, so they are decoded together (SPEC.md 9.10); with the
lm_group_match flag (format 2.6) their match models also guess from all of their tokens (SPEC.md 9.11). With the
lm_streams flag (format 2.7) a bias group is one chunk whose payload holds a range coder stream per part (SPEC.md
9.12): the same decoding, without a chunk header, index row and payload header per part. With the lm_cache flag
(format 2.8) the adaptive field's bit 2 mixes the bias head's tables with a neural cache (neural.py, SPEC.md 9.13)
over the chunk's (its bias group's) tokens so far, before the match model. With the lm_utf16 flag (format 2.9) the
text field says whether the tokens make the chunk's bytes or the UTF-8 form of its UTF-16 text, with the lm_crlf
flag (2.10) whether each LF of that stands for CR LF, with the lm_windows1252 flag (2.11) whether they make the UTF-8
form of its windows-1252 text, and with the lm_code_pages flag (2.12) of its text in another 8-bit code page (text.py,
SPEC.md 9.14).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..engine import architectures
from ..engine.compiler import CompiledModel
from ..engine.model import KVCache
from ..engine.tokenizer import Encoder
from ..format.constants import MAX_CHUNK_RAW, CodecId
from ..format.records import ModelRef
from ..format.wire import read_varint, varint
from ..rangecoder import TOTAL, TOTAL_BITS, RangeDecodeError, RangeDecoder, RangeEncoder
from . import LM_DEFAULT_OVERLAP as DEFAULT_OVERLAP
from . import LM_DEFAULT_SPAN as DEFAULT_SPAN
from . import LM_DEFAULT_WINDOW as DEFAULT_WINDOW
from .base import JOINED, Codec, CodecError, Joined, ReadChunk
from .neural import KnownKeys, NeuralCache
from .text import (BYTES, CODE_PAGE_NAMES, CODE_PAGES, CRLF, ENCODINGS, WINDOWS_1252, chunk_bytes, coded_form,
                   coded_limit, preferred_reading, read_as)
from .match import (WEIGHT_BITS, GroupFinder, GroupMember, MatchModel, MatchWeights, group_guesses, guesses, mix_factors,
                    mix_interval)

ESCAPED_BYTE_TOTAL = 256
MAX_TEXT_FRACTION_ESCAPED = 0.05  # chunks with more raw bytes than this are left to other codecs
# Beside a cheap codec the model is run only where it may win much: a chunk that the cheap one codes to 1/RIVAL_ROOM of
# its bytes or less (zeros, repeated blocks) leaves it at most that to save, and such data makes up to a token per
# byte (4 MB of zeros: hours; the model lost to zstd there all the same).
RIVAL_ROOM = 64
# With a span, the positions a KV cache holds beyond the prefix and S - 1: those one forward adds before the cache
# slides (its last S - 1 positions moved down). Packing adds them in passes of this many; decoding slides every this
# many steps (a CPU's decoding loops skip the keys the span hides between slides; 256 measured no faster than 64).
SPAN_ROOM_PACKING = 256
SPAN_ROOM_DECODING = 64
UNLIMITED = 1 << 62  # a byte limit that never stops decoding
ADAPTIVE_MATCH, ADAPTIVE_BIAS, ADAPTIVE_CACHE = 1, 2, 4  # the adaptive field's bits (SPEC.md 9.6)
TEXT_FORMS = (BYTES, *ENCODINGS)  # the text field's values (SPEC.md 9.14), with the code pages and each also with CRLF
# where allowed
OTHER_CODE_PAGES = tuple(page for page in CODE_PAGES if page != WINDOWS_1252)  # the lm_code_pages flag's (2.12)
# The bias head's learning rate R: 0.2 logit per token seen (in 2^-32 units). Measured with the float model
# (tools/results/2026-12-03-bias-head.md): 0.1 and 0.3 gain less on lcet10.txt; Nacrith uses 0.2 as well.
BIAS_RATE = 858_993_459  # round(0.2 * 2^32)
MAX_BIAS_GROUP = 16  # chunks sharing one bias head at most (SPEC.md 9.10): 16 x 2^24 tokens x BIAS_RATE < 2^63


def window_starts(window: int, overlap: int) -> Iterator[int]:
    """Where each window's tokens start, without end: window 0 codes W-1 tokens, later ones W-1-O."""
    yield 0
    yield from itertools.count(window - 1, window - 1 - overlap)


def window_bodies(count: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of the tokens each window codes, for a chunk of `count` tokens."""
    starts = window_starts(window, overlap)
    bodies, start = [], next(starts)
    for end in starts:
        if start >= count:
            return bodies
        bodies.append((start, min(count, end)))
        start = end


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(data, pos)
    except ValueError:
        raise CodecError("lm: truncated or oversized varint in the payload header") from None


@dataclass(frozen=True)
class Primer:
    """The first tokens of an lm chunk of the archive, which every later window of that chunk and of the lm chunks
    after it starts from."""

    chunk: int  # its archive index
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Payload:
    window: int
    overlap: int
    primer_chunk: int | None  # the chunk whose first primer_size tokens the windows start from, or None
    primer_size: int
    match: bool  # the tables mixed with the match model (the adaptive field's bit 0)
    bias: bool  # the logits corrected by the bias head (its bit 1)
    cache: bool  # the bias head's tables mixed with the neural cache (its bit 2, only with bit 1)
    group_first: int | None  # the first chunk of the bias group whose head it shares, or None: a head of its own
    group_size: int  # that group's chunks (0: none)
    span: int  # 0: a window's positions see all earlier ones
    count: int  # tokens (of all its streams)
    data: bytes  # the range coder's bytes (of all its streams)
    streams: tuple[tuple[int, bytes], ...] = ()  # a bias group in one chunk (format 2.7): each stream's tokens and bytes
    text: int = BYTES  # what its tokens make (format 2.9): the chunk's bytes, or the UTF-8 form of its UTF-16 text
    # (2.11: or of its windows-1252 text); with the CRLF bit (2.10), each LF of those standing for CR LF

    def group(self) -> tuple[int, ...]:
        """The chunks of its bias group; none without one."""
        return () if self.group_first is None else tuple(range(self.group_first, self.group_first + self.group_size))


@dataclass(eq=False)
class Stream:
    """One chunk being decoded (or one stream of a chunk of streams, format 2.7): its range decoder, the tokens (escape
    tokens included) and escaped bytes out so far, the bytes they make, and where to stop: after `count` tokens in all
    or once `limit` bytes are out, unless a chunk sharing its bias head (mates, itself included) still needs its
    tokens. The adaptive models' states, where the payload has them: the match model, the bias head's (V,) int64, the
    neural cache (a bias group's streams share one)."""

    decoder: RangeDecoder
    count: int
    limit: int
    match: MatchModel | None = None
    bias: torch.Tensor | None = None
    cache: NeuralCache | None = None
    chunk: int | None = None  # its archive index, where known
    part: int | None = None  # its place among its chunk's streams (format 2.7), where it is one
    mates: list[Stream] = field(default_factory=list, repr=False)  # its bias group's streams, or none: its own head
    history: GroupMember | None = None  # its side of its bias group's match finder (format 2.6), which its tokens join
    tokens: list[int] = field(default_factory=list)
    escaped: dict[int, int] = field(default_factory=dict)
    produced: int = 0
    error: CodecError | None = None
    text: int = BYTES  # what its tokens make (its payload's text field)

    def copy(self) -> Stream:
        assert not self.mates, "a stream of a bias group is decoded with its group"
        return Stream(self.decoder.copy(), self.count, self.limit, self.match.copy() if self.match else None,
                      None if self.bias is None else self.bias.clone(), self.cache and self.cache.copy(), self.chunk,
                      tokens=list(self.tokens),
                      escaped=dict(self.escaped), produced=self.produced, error=self.error, text=self.text)

    def needs(self) -> bool:
        """Whether its own bytes want more tokens."""
        return len(self.tokens) < self.count and self.produced < self.limit and self.error is None

    def unfinished(self) -> bool:
        """Whether it takes another token: its own bytes want it, or a chunk sharing its bias head needs the state
        that its tokens update."""
        going = len(self.tokens) < self.count and self.error is None
        return self.needs() or (going and any(mate.needs() for mate in self.mates))


@dataclass
class Prefix:
    """What every window of a chunk starts from, [BOS, primer tokens...], evaluated once: its keys and values (copied
    into each window's cache) and the output at its last position (the table of a window's first token when no
    overlap follows)."""

    tokens: list[int]
    cache: KVCache
    hidden_q: torch.Tensor  # (1, 1, d)
    hidden_s: torch.Tensor  # (1, 1, 1)


@dataclass
class LmCodec(Codec):
    model: CompiledModel
    model_index: int = 0
    device: str = "cpu"
    window: int | None = None  # default: DEFAULT_WINDOW, or the model's positions if fewer; with a span, all of them
    overlap: int | None = None  # default: DEFAULT_OVERLAP scaled to the window; with a span, that or the span if less
    primer_field: bool = False  # payloads carry the primer field (the header's lm_primer flag, format 2.1)
    primer_tokens: int = 0  # when coding: tokens of the archive's first lm chunk that the later ones start from
    match_field: bool = False  # payloads carry the adaptive field, its bit 0 allowed (the header's lm_match flag,
    # format 2.2); when coding, each chunk then takes the match model where that makes it smaller
    bias_field: bool = False  # the same with bit 1, the bias head (the lm_bias flag, format 2.4)
    group_field: bool = False  # payloads with the bias head carry the bias group field (the lm_bias_group flag, 2.5)
    bias_group: int = 1  # when coding: chunks of one file that share a bias head at most (> 1 needs group_field)
    group_match: bool = False  # a bias group's match models guess from all of its chunks' tokens (lm_group_match, 2.6)
    streams_field: bool = False  # a bias group is one chunk of streams (the lm_streams flag, 2.7; only with group_field)
    cache_field: bool = False  # the adaptive field's bit 2 allowed, the neural cache (the lm_cache flag, 2.8; only with
    # bias_field); when coding, chunks and groups with the bias head then take it where that makes them smaller
    span_field: bool = False  # payloads carry the span field (the header's lm_span flag, format 2.3)
    utf16_field: bool = False  # payloads carry the text field (the lm_utf16 flag, 2.9); when coding, chunks of UTF-16
    # text are then coded as their UTF-8 form where that is shorter
    crlf_field: bool = False  # the text field's CRLF bit allowed (the lm_crlf flag, 2.10; only with utf16_field); when
    # coding, text whose line breaks are all CR LF is then coded with LF
    windows_1252_field: bool = False  # the text field's form 3 allowed (the lm_windows1252 flag, 2.11; only with
    # utf16_field); when coding, legacy 8-bit text is then coded as the UTF-8 form of its windows-1252 characters
    code_pages_field: bool = False  # the text field's forms 8-11 allowed (the lm_code_pages flag, 2.12; only with
    # windows_1252_field); when coding, 8-bit text is then read through the code page text.preferred_reading chooses
    span: int | None = 0  # when coding: the span S (0: none; None: DEFAULT_SPAN, or W - 1 if less; needs span_field)
    primer: Primer | None = field(default=None, init=False)  # chosen by the first encode_batch that accepts a chunk

    codec_id = CodecId.LM
    name = "lm"
    costly = True

    def __post_init__(self) -> None:
        cfg = self.model.config
        if self.span != 0 and not self.span_field:
            raise ValueError("an lm span needs format 2.3 payloads")
        if self.window is None and self.span != 0:  # a span's windows cost no more for being long: they restart less often
            if self.primer_tokens > cfg.max_positions - 2:  # the default window is what the primer leaves
                raise ValueError(f"lm primer {self.primer_tokens}: choose 0 .. {cfg.max_positions - 2} tokens (the "
                                 f"primer and a window of at least 2 share the model's {cfg.max_positions} positions)")
            self.window = cfg.max_positions - self.primer_tokens
        elif self.window is None:
            self.window = min(DEFAULT_WINDOW, cfg.max_positions)
        if self.span is None:
            self.span = min(DEFAULT_SPAN, self.window - 1)
        if self.overlap is None:
            self.overlap = DEFAULT_OVERLAP * self.window // DEFAULT_WINDOW
            self.overlap = min(self.overlap, self.span) if self.span else self.overlap
        if not 2 <= self.window <= cfg.max_positions:
            raise ValueError(f"lm window {self.window}: choose 2 .. {cfg.max_positions} tokens (the model's positions)")
        if not 0 <= self.overlap < self.window - 1:
            raise ValueError(f"lm overlap {self.overlap}: choose 0 .. {self.window - 2} tokens (below the window)")
        if not 0 <= self.span < self.window:
            raise ValueError(f"lm span {self.span}: choose 0 (none) .. {self.window - 1} tokens (below the window)")
        if not 1 <= self.bias_group <= MAX_BIAS_GROUP or (self.bias_group > 1 and not self.group_field):
            raise ValueError(f"lm bias group {self.bias_group}: choose 1 .. {MAX_BIAS_GROUP} chunks (more than 1 needs "
                             f"format 2.5 payloads)")
        if self.cache_field and not self.bias_field:
            raise ValueError("the lm neural cache needs format 2.4's bias head")
        if self.crlf_field and not self.utf16_field:
            raise ValueError("lm CR LF forms need format 2.9's text field")
        if self.windows_1252_field and not self.utf16_field:
            raise ValueError("the lm windows-1252 form needs format 2.9's text field")
        if self.code_pages_field and not self.windows_1252_field:
            raise ValueError("the lm code page forms need format 2.11's windows-1252 form")
        if self.primer_tokens < 0 or (self.primer_tokens and not self.primer_field):
            raise ValueError("an lm primer needs format 2.1 payloads and a token count >= 0")
        if self.primer_tokens > cfg.max_positions - self.window:  # the primer and a window share the positions
            raise ValueError(f"lm primer {self.primer_tokens}: choose 0 .. {cfg.max_positions - self.window} tokens "
                             f"(the model's {cfg.max_positions} positions less the window, {self.window}; a smaller "
                             f"--window leaves more)")
        self.engine = architectures.engine(self.model, self.device)
        # chunks per batch and per lockstep decode at most (fewer where their KV caches would exceed the device's
        # budget), and tokens per forward when compressing: the device's sizes (model.Batching)
        self.batch_chunks, self.batch_tokens = self.engine.batching.chunks, self.engine.batching.forward_tokens
        self.encoder = Encoder(self.model.token_table, self.model.tokenizer_json, cfg.escape_token)
        self._decoded_primer: tuple[tuple[int, int, bytes], Stream] | None = None  # the last primer decoded

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(self.model.name, self.model.source, self.model.model_hash, self.model.tokenizer_hash, self.model.numerics)

    def contends(self, chunk: bytes, rival: int) -> bool:
        return rival * RIVAL_ROOM > len(chunk)

    def keeps(self, chunk: int, payload: bytes) -> bool:
        """The primer's chunk, and the chunks of a bias group (their tokens teach the others' shared bias head), or the
        chunk holding one as streams."""
        if self.primer is not None and chunk == self.primer.chunk:
            return True
        try:
            parsed = self._parse(payload, None)
            return parsed.group_first is not None or bool(parsed.streams)
        except CodecError:
            return False

    def _prefix(self, primer: Sequence[int]) -> Prefix:
        tokens = [self.model.config.bos_token, *primer]
        cache = self.engine.new_cache(1, len(tokens))
        hidden_q, hidden_s = self.engine.forward(torch.tensor([tokens], device=self.engine.device), cache)
        return Prefix(tokens, cache, hidden_q[:, -1:], hidden_s[:, -1:])

    # ------------------------------------------------------------------------------------------ encode

    def encode_batch(self, chunks: Sequence[bytes], first_chunk: int = 0,
                     runs: Sequence[int] | None = None) -> list[bytes | Joined | None]:
        forms = [coded_form(bytes(c), self.crlf_field, self.windows_1252_field) if self.utf16_field
                 else (BYTES, bytes(c)) for c in chunks]
        encoded = [self.encoder.encode(coded) for _, coded in forms]
        for i, (form, _) in enumerate(forms):
            if self.code_pages_field and form & ~CRLF == WINDOWS_1252 and encoded[i]:
                forms[i], encoded[i] = self._reading(bytes(chunks[i]), forms[i], encoded[i])
        for i, (form, _) in enumerate(forms):  # N <= raw_size (SPEC.md 9.6), which only the code pages' forms can break
            if form & ~CRLF in CODE_PAGES and encoded[i] and len(encoded[i][0]) > len(chunks[i]):
                forms[i] = coded_form(bytes(chunks[i]), self.crlf_field)
                encoded[i] = self.encoder.encode(forms[i][1])
        if self.windows_1252_field and runs is not None:
            forms = _runs_in_one_form(forms, runs)
        texts = [text for text, _ in forms]
        accepted = [e if e and len(e[1]) <= MAX_TEXT_FRACTION_ESCAPED * max(1, len(e[0])) else None for e in encoded]
        payloads: list[bytes | Joined | None] = [None] * len(chunks)
        if self.primer is not None and first_chunk <= self.primer.chunk:
            self.primer = None  # chunks numbered from the primer's or before: another archive
        size = self.primer_tokens
        if size > 0 and self.primer is None:
            # the primer chunk is the first whose payload the writer can keep (not larger than the chunk); a candidate
            # that fails is still a valid chunk with a primer of its own
            for i, item in enumerate(accepted):
                if item is not None:
                    candidate = Primer(first_chunk + i, tuple(item[0][:size]))
                    payloads[i] = self._encode([item], [candidate.chunk], [texts[i]], candidate)[0]
                    if len(payloads[i]) <= len(chunks[i]):
                        self.primer = candidate
                        break
        rest = [i for i, item in enumerate(accepted) if item is not None and payloads[i] is None]
        grouping = self.bias_group > 1 and self.primer_tokens == 0 and runs is not None
        groups = self._bias_groups(rest, runs, [len(c) for c in chunks], texts) if grouping else []
        coded = self._encode([accepted[i] for i in rest], [first_chunk + i for i in rest], [texts[i] for i in rest],
                             self.primer,
                             [[rest.index(i) for i in group] for group in groups], [len(chunks[i]) for i in rest])
        for i, payload in zip(rest, coded):
            payloads[i] = payload
        return payloads

    def _reading(self, chunk: bytes, latin: tuple[int, bytes], tokens: tuple[list[int], dict[int, int]]
                 ) -> tuple[tuple[int, bytes], tuple[list[int], dict[int, int]]]:
        """8-bit text's form and tokens: those of its windows-1252 form (latin: the form and the bytes its tokens
        make) or of another code page's with the same CRLF bit, as text.preferred_reading chooses by token counts."""
        crlf = latin[0] & CRLF
        forms = {page: read_as(chunk, page | crlf) for page in OTHER_CODE_PAGES}
        encoded = {page: self.encoder.encode(coded) for page, coded in forms.items()}
        counts = {page: len(page_tokens[0]) for page, page_tokens in encoded.items() if page_tokens}
        page = preferred_reading({WINDOWS_1252: len(tokens[0]), **counts})
        return (latin, tokens) if page == WINDOWS_1252 else ((page | crlf, forms[page]), encoded[page])

    def _bias_groups(self, coded: Sequence[int], runs: Sequence[int], sizes: Sequence[int],
                     texts: Sequence[int]) -> list[list[int]]:
        """The chunks to code (indices in the batch) that share a bias head: where a file goes on from chunk to chunk,
        the run's chunks in groups of self.bias_group from its first (whatever the batch: ArchiveWriter and RayCodec
        cut batches between groups), less the chunks this codec declines. Never chunks of files that each fit in one:
        reading a small file decodes its chunk alone, as before. As streams of one chunk (format 2.7) a group also
        ends before its bytes would pass a chunk's most, and where the text form changes (one field holds a chunk's)."""
        groups: list[list[int]] = []
        keys: list[tuple[int, int]] = []
        held = 0
        for i in coded:
            key = (i - runs[i], runs[i] // self.bias_group, texts[i])
            room = not self.streams_field or held + sizes[i] <= MAX_CHUNK_RAW
            if groups and keys[-1] == key and groups[-1][-1] == i - 1 and room:
                held += sizes[i]
                groups[-1].append(i)
            else:
                groups.append([i])
                keys.append(key)
                held = sizes[i]
        return [group for group in groups if len(group) > 1]

    def _encode(self, items: Sequence[tuple[list[int], dict[int, int]]], indices: Sequence[int], texts: Sequence[int],
                primer: Primer | None, groups: Sequence[Sequence[int]] = (),
                sizes: Sequence[int] = ()) -> list[bytes | Joined]:
        """Payloads of tokenized chunks at these archive indices (texts: what their tokens make, SPEC.md 9.14): chunks
        after the primer's start every window from it; the primer's own chunk codes its first P tokens in a window of
        their own, then the rest as the others do.
        groups: chunks (indices in items, consecutive in the archive; their plaintexts' sizes: sizes) that share a bias
        head where that makes them smaller together than each would be without one, stored where smaller (with
        streams_field: the first one's payload holds them all, the others are JOINED to it)."""
        prefixes = {None: self._prefix([])}
        if primer is not None:
            prefixes[primer] = self._prefix(primer.tokens)
        # every window of every chunk is an independent forward pass after its prefix: run them all, batched by length
        jobs: dict[Primer | None, list] = {key: [] for key in prefixes}  # (item, start, end, tokens after the prefix)
        for i, ((tokens, _), index) in enumerate(zip(items, indices)):
            key = primer if primer is not None and index >= primer.chunk else None
            base = len(primer.tokens) if key is not None and index == primer.chunk else 0
            if base:  # the primer's own chunk: its first P tokens in a window of their own
                jobs[None].append((i, 0, base, tokens[:base]))
            body = tokens[base:]
            for start, end in window_bodies(len(body), self.window, self.overlap):
                after_prefix = body[max(0, start - self.overlap) : end] if start else body[:end]
                jobs[key].append((i, base + start, base + end, after_prefix))
        pieces: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # with a span a window's forward takes its positions in passes of SPAN_ROOM_PACKING: rows cost that many
        per_row = SPAN_ROOM_PACKING if self.span else None
        for key, prefix in prefixes.items():
            for group in _length_groups(jobs[key], self.batch_tokens, per_row):
                for (i, start, _, _), outputs in zip(group, self._code_windows(prefix, group)):
                    pieces[(i, start)] = outputs
        outputs = [[] for _ in items]
        for (i, _start), window_outputs in sorted(pieces.items()):
            outputs[i].extend(window_outputs)
        outputs = [(torch.cat([q for q, _ in rows]), torch.cat([s for _, s in rows])) for rows in outputs]
        guessed = [guesses(tokens) if self.match_field else None for tokens, _ in items]
        group_guessed = list(guessed)  # with a group's shared head: the guesses of its match model (SPEC.md 9.11)
        row_of = list(range(len(items)))  # each chunk's bias head: its own, or its group's first chunk's
        for group in groups:
            for i in group:
                row_of[i] = group[0]
            if self.group_match:
                for i, chunk_guesses in zip(group, group_guesses([items[i][0] for i in group])):
                    group_guessed[i] = chunk_guesses
        grouped = {i for group in groups for i in group}
        plain, biased, cached = self._tables([tokens for tokens, _ in items], outputs, guessed, row_of, group_guessed)

        def fields(index: int, adaptive: int, group_field: bytes, text: int) -> bytes:
            """A payload's fields before its token counts (SPEC.md 9.6): model, W, O, and the primer, adaptive, bias
            group (group_field), span and text fields where the header's flags have them."""
            header = varint(self.model_index) + varint(self.window) + varint(self.overlap)
            if self.primer_field:
                named = primer is not None and index >= primer.chunk
                header += varint(primer.chunk + 1) + varint(len(primer.tokens)) if named else varint(0)
            if self.match_field or self.bias_field:
                header += varint(adaptive)
            if self.group_field and adaptive & ADAPTIVE_BIAS:
                header += group_field
            header += varint(self.span) if self.span_field else b""
            return header + (varint(text) if self.utf16_field else b"")

        def payload(i: int, group: Sequence[int] | None = None) -> bytes:
            """Chunk i's smallest payload: with a head of its own (the adaptive models only where they make the chunk
            smaller, the first of equals), or with its group's shared head (with or without the match model)."""
            tokens, escaped = items[i]
            codings = [] if group else [(0, plain[i], None)]
            if self.match_field and not group:
                codings.append((ADAPTIVE_MATCH, plain[i], guessed[i]))
            if self.bias_field and (group or i not in grouped):
                # a group's chunks all with the neural cache or none: only its streams (format 2.7) choose it
                options = [(0, biased[i])] + ([(ADAPTIVE_CACHE, cached[i])] if self.cache_field and not group else [])
                for cache, tables in options:
                    codings.append((ADAPTIVE_BIAS | cache, tables, None))
                    if self.match_field:
                        codings.append((ADAPTIVE_MATCH | ADAPTIVE_BIAS | cache, tables,
                                        group_guessed[i] if group else guessed[i]))
            bodies = [(value, self._range_code(tokens, escaped, coded, chunk_guesses))
                      for value, coded, chunk_guesses in codings]
            adaptive, body = min(bodies, key=lambda coding: len(coding[1]))
            group_field = varint(len(group)) + varint(indices[group[0]]) if group else varint(0)
            return fields(indices[i], adaptive, group_field, texts[i]) + varint(len(tokens)) + body

        def streams(group: Sequence[int]) -> list[bytes | Joined]:
            """The group as one chunk of streams (format 2.7, SPEC.md 9.12), all with the match model or none, and all
            with the neural cache or none, whichever is smallest (the first of equals)."""
            adaptives = [ADAPTIVE_BIAS | match | cache for cache in (0, ADAPTIVE_CACHE)[: 1 + self.cache_field]
                         for match in (0, ADAPTIVE_MATCH)[: 1 + self.match_field]]
            options = [(adaptive, [self._range_code(*items[i], cached[i] if adaptive & ADAPTIVE_CACHE else biased[i],
                                                    group_guessed[i] if adaptive & ADAPTIVE_MATCH else None)
                                   for i in group])
                       for adaptive in adaptives]
            adaptive, bodies = min(options, key=lambda option: sum(map(len, option[1])))
            header = fields(indices[group[0]], adaptive, varint(len(group)), texts[group[0]])
            header += b"".join(varint(len(items[i][0])) for i in group) + b"".join(map(varint, map(len, bodies[:-1])))
            return [header + b"".join(bodies)] + [JOINED] * (len(group) - 1)

        payloads: list[bytes | Joined] = [payload(i) for i in range(len(items))]
        for group in groups:
            # the shared head where the group is smaller with it than its chunks are without any, or stored; never a
            # payload larger than its plaintext (the writer keeps a group's payloads, and stores none larger: SPEC 3.3)
            shared = streams(group) if self.streams_field else [payload(i, group) for i in group]
            held = [sum(sizes[i] for i in group)] if self.streams_field else [sizes[i] for i in group]
            coded = [data for data in shared if not isinstance(data, Joined)]
            fits = all(len(data) <= size for data, size in zip(coded, held))
            if fits and sum(map(len, coded)) < sum(min(len(payloads[i]), sizes[i]) for i in group):
                for i, data in zip(group, shared):
                    payloads[i] = data
        return payloads

    def _range_code(self, tokens: list[int], escaped: dict[int, int], coded: list[tuple[int, int, int]],
                    guessed: list[tuple[int, int] | None] | None = None) -> bytes:
        """The range coder's bytes for a chunk's tokens, given each one's (start, frequency) in the model's table and
        the model's frequency of the match model's guess there; with the guesses, in the mixed tables."""
        coder = RangeEncoder()
        vocab = self.model.config.vocab_size
        weights = MatchWeights(TOTAL_BITS)
        for position, (token, (start, size, guess_freq)) in enumerate(zip(tokens, coded)):
            if guessed is not None and guessed[position] is not None:
                guess, length = guessed[position]
                weight = weights.weight(length, guess_freq)
                if weight:
                    start, size = mix_interval(start, size, token, guess, weight, vocab, TOTAL_BITS)
                weights.update(length, guess_freq, token == guess)
            coder.encode(start, size)
            if position in escaped:
                coder.encode(escaped[position], 1, ESCAPED_BYTE_TOTAL)
        return coder.finish()

    def _code_windows(self, prefix: Prefix, group) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """One batched forward after the shared prefix; for each window, the outputs that give its body tokens'
        tables, as pieces (q (n, d) int16, scale (n,)) in order. The table of a body token is the output at the
        position before it: the prefix's last for a window that starts with no overlap. With a span the forward runs
        in pieces of SPAN_ROOM_PACKING positions (a group's rows cost that much each, _length_groups) whose other
        outputs are dropped."""
        longest = max(len(job[3]) for job in group)
        pad = self.model.config.bos_token
        inputs = torch.tensor([job[3] + [pad] * (longest - len(job[3])) for job in group], device=self.engine.device)
        cache = self.engine.new_cache(len(group), _capacity(len(prefix.tokens), longest, self.span, SPAN_ROOM_PACKING),
                                      self.span)
        cache.start_from(prefix.cache)
        piece = SPAN_ROOM_PACKING if self.span else longest
        before_q = prefix.hidden_q.expand(len(group), 1, -1)  # the output before input lo of a piece starting at lo
        before_s = prefix.hidden_s.expand(len(group), 1, -1)
        out: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in group]
        for lo in range(0, longest, piece):
            hidden_q, hidden_s = self.engine.forward(inputs[:, lo : lo + piece], cache)  # right padding is inert
            # output k of these is the one before input lo + k
            hidden_q, hidden_s = torch.cat([before_q, hidden_q], dim=1), torch.cat([before_s, hidden_s], dim=1)
            before_q, before_s = hidden_q[:, -1:].clone(), hidden_s[:, -1:].clone()
            for b, (_, start, end, after_prefix) in enumerate(group):
                first = len(after_prefix) - (end - start)  # index of the first body token in after_prefix
                k_lo, k_hi = max(first, lo) - lo, min(len(after_prefix), lo + piece) - lo
                if k_lo < k_hi:  # |q| <= QMAX: int16 holds it
                    out[b].append((hidden_q[b, k_lo:k_hi].to(torch.int16), hidden_s[b, k_lo:k_hi, 0].clone()))
        return out

    def _tables(self, chunks: Sequence[list[int]], outputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                guessed: Sequence[list[tuple[int, int] | None] | None], row_of: Sequence[int],
                biased_guessed: Sequence[list[tuple[int, int] | None] | None]
                ) -> tuple[list[list], list[list] | None, list[list] | None]:
        """(cumulative start, frequency, frequency of the match model's guess or 0) of each token of each chunk, in
        the model's tables and, with the bias field, in the bias head's, and with the cache field, in those mixed with
        the neural cache (None without; row_of also names the chunks that share a cache). outputs: each chunk's output
        rows, one per token; guessed: each chunk's guesses, or None (biased_guessed: those coded with the bias head's
        tables); row_of: each chunk's bias head (chunks naming the same one share it: SPEC.md 9.10). The bias head
        makes a chunk's tables depend on its (and its group's) earlier tokens: positions go in order, with the chunks
        as the rows of each table computation."""
        ops = self.engine.ops
        plain: list[list] = [[] for _ in chunks]
        biased: list[list] | None = None
        if self.bias_field:
            biased = [[] for _ in chunks]
            bias = torch.zeros(len(chunks), self.model.config.vocab_size, dtype=torch.int64, device=self.engine.device)
        cached: list[list] | None = None
        if self.cache_field:
            cached = [[] for _ in chunks]
            heads = set(row_of)
            neural_caches = {row: KnownKeys(ops, [outputs[c][0] for c in range(len(chunks)) if row_of[c] == row],
                                            [chunks[c] for c in range(len(chunks)) if row_of[c] == row], len(heads))
                             for row in heads}
        longest = max((len(tokens) for tokens in chunks), default=0)
        per_block = max(1, self.engine.batching.frequency_rows // max(1, len(chunks)))  # positions per output-head GEMM
        for lo in range(0, longest, per_block):
            # rows position-major: each position's chunks (those that reach it) together
            positions = range(lo, min(longest, lo + per_block))
            members = [[c for c, tokens in enumerate(chunks) if p < len(tokens)] for p in positions]
            rows = [(c, p) for p, at in zip(positions, members) for c in at]
            logits = self.engine.logits(torch.stack([outputs[c][0][p] for c, p in rows]).to(torch.float64),
                                        torch.stack([outputs[c][1][p] for c, p in rows])[:, None])
            targets = np.array([chunks[c][p] for c, p in rows], dtype=np.int64)
            guess = _guessed_tokens(guessed, rows)
            for (c, _), coded in zip(rows, self._entries(ops.frequencies(logits, TOTAL_BITS), targets, guess)):
                plain[c].append(coded)
            if biased is None:
                continue
            guess = _guessed_tokens(biased_guessed, rows)
            end = 0
            for p, at in zip(positions, members):  # one position at a time: its tables need the state after the last
                sel = slice(end, end + len(at))
                end += len(at)
                bias_rows = np.array([row_of[c] for c in at], dtype=np.int64)
                freq = ops.frequencies(logits[sel], TOTAL_BITS, bias, bias_rows)
                for c, coded in zip(at, self._entries(freq, targets[sel], guess[sel])):
                    biased[c].append(coded)
                if cached is not None:
                    caches = [neural_caches[row_of[c]] for c in at]
                    table, mixed = self._cached_tables(
                        freq, caches, lambda cache, _, rows: cache.tables_at(ops, p, rows, TOTAL_BITS))
                    for c, coded in zip(at, self._entries(table, targets[sel], guess[sel])):
                        cached[c].append(coded)
                    self._cache_learns(freq, table, targets[sel], caches, mixed, range(len(at)))
                    for neural in {id(neural): neural for neural in caches}.values():
                        neural.commit()
                ops.update_bias(bias, bias_rows, freq, targets[sel], BIAS_RATE, TOTAL_BITS)
        return plain, biased, cached

    def _entries(self, freq: torch.Tensor, symbols: np.ndarray, guess: np.ndarray) -> list[tuple[int, int, int]]:
        """(cumulative start, frequency, frequency of the guess or 0 where it is -1) of each row's symbol."""
        ops = self.engine.ops
        guess_freq = np.where(guess >= 0, ops.table_entries(freq, np.maximum(guess, 0)), 0)
        return list(zip(ops.symbol_starts(freq, symbols).tolist(), ops.table_entries(freq, symbols).tolist(),
                        guess_freq.tolist()))

    # ------------------------------------------------------------------------------------------ decode

    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int], limits: Sequence[int] | None = None,
                     chunks: Sequence[int] | None = None, read_chunk: ReadChunk | None = None) -> list[bytes | CodecError]:
        """Decodes every chunk whole, or, with limits, each until its first `limit` bytes are out: reading one small
        file stops where it ends instead of decoding the rest of its chunk token by token. A damaged chunk gets its
        error and leaves the lockstep group; the others go on. A payload with a primer needs its archive index
        (chunks) and, unless the primer's chunk is in the batch, read_chunk to read it; so does one in a bias group,
        whose chunks decode together (those not in the batch, read with read_chunk, as far as the others need)."""
        limits = raw_sizes if limits is None else limits
        # by batch index; a bias group's chunk read for it: len(payloads) + its index; a chunk of streams': parts
        streams: dict[int | tuple[int, int], Stream] = {}
        errors: dict[int, CodecError] = {}
        parsed: dict[int, Payload] = {}
        for i, (payload, raw_size) in enumerate(zip(payloads, raw_sizes)):
            try:
                parsed[i] = self._parse(bytes(payload), raw_size)
                if parsed[i].primer_chunk is not None and chunks is None:
                    raise CodecError("lm: the chunk starts from a primer, and was given without its archive")
                if parsed[i].primer_chunk is not None and parsed[i].primer_chunk > chunks[i]:
                    raise CodecError(f"lm: the primer names chunk {parsed[i].primer_chunk}, after this chunk")
                first, size = parsed[i].group_first, parsed[i].group_size
                if first is not None and chunks is None:
                    raise CodecError("lm: the chunk shares a bias head with other chunks, and was given without its "
                                     "archive")
                if first is not None and not first <= chunks[i] < first + size:
                    raise CodecError(f"lm: its bias group, chunks {first} .. {first + size - 1}, does not hold it")
            except CodecError as exc:
                errors[i] = exc
                parsed.pop(i, None)
        # primers first: P tokens of the primer's chunk, decoded alone; that chunk, if asked for, then goes on
        primers: dict[tuple[int, int], list[int] | CodecError] = {}
        for i, p in parsed.items():
            if p.primer_chunk is not None and (p.primer_chunk, p.primer_size) not in primers:
                key = (p.primer_chunk, p.primer_size)
                own = next((j for j in parsed if chunks[j] == p.primer_chunk), None)
                try:
                    primers[key], stream = self._primer(*key, parsed.get(own), read_chunk)
                except CodecError as exc:
                    primers[key] = exc
                    continue
                if own is not None:  # _primer checked that it names itself with this primer
                    stream.count, stream.limit = parsed[own].count, coded_limit(parsed[own].text, limits[own])
                    streams[own] = stream
        # bias groups: their chunks' streams by key (a batch index; the chunks read for them: len(payloads) + chunk)
        bias_groups: dict[tuple[int, int], list[int] | CodecError] = {}
        helpers: dict[int, Payload] = {}
        for i, p in parsed.items():
            if p.group_first is not None:
                key = (p.group_first, p.group_size)
                if key not in bias_groups:
                    bias_groups[key] = self._bias_group(p, parsed, chunks, read_chunk, len(payloads), helpers)
                if isinstance(bias_groups[key], CodecError):
                    errors[i] = bias_groups[key]
        groups: dict[tuple[int, int, int | None, int], list] = {}
        parts: dict[int, list[tuple[int, int]]] = {}  # a chunk of streams' keys: (its batch index, the stream's place)
        for i, p in [*parsed.items(), *helpers.items()]:
            primer = primers.get((p.primer_chunk, p.primer_size), [])
            if isinstance(primer, CodecError):
                errors[i] = primer
            if i in errors:
                continue
            lockstep = groups.setdefault((p.window, p.overlap, p.span, p.primer_chunk, p.primer_size), [])
            # a chunk read for a bias group's sake produces no bytes (its tokens go on as far as its mates need)
            limit = coded_limit(p.text, limits[i]) if i < len(payloads) else 0
            if p.streams:  # each stream never needs more than the chunk's first `limit` bytes
                parts[i] = [(i, part) for part in range(len(p.streams))]
                for key, (count, data) in zip(parts[i], p.streams):
                    streams[key] = self._stream(p, count, limit, data)
                    streams[key].part = key[1]
                lockstep += parts[i]
                continue
            streams.setdefault(i, self._stream(p, p.count, limit))
            streams[i].chunk = None if chunks is None else chunks[i] if i < len(payloads) else i - len(payloads)
            lockstep.append(i)
        unit_of: dict = {}  # each bias group's streams (a chunk of streams': its parts), decoded in one lockstep group
        for keys in [*bias_groups.values(), *parts.values()]:
            if not isinstance(keys, CodecError):
                # grown as tokens come (not sized by the payloads' token counts, which a hostile archive inflates)
                finder = GroupFinder(len(keys)) if self.group_match else None
                cache = streams[keys[0]].cache  # _bias_group checked that all or none have one: theirs, shared
                for member, k in enumerate(keys):
                    streams[k].mates = [streams[m] for m in keys]
                    streams[k].cache = cache
                    unit_of[k] = tuple(keys)
                    if finder is not None:  # every chunk's tokens join the history, with the match model or not
                        streams[k].history = finder.view(member)
                        if streams[k].match:
                            streams[k].match.finder = streams[k].history
        for (window, overlap, span, primer_chunk, primer_size), members in groups.items():
            primer = primers[(primer_chunk, primer_size)] if primer_chunk is not None else []
            prefix = self._prefix(primer)
            budget = self.engine.batching.cache_budget
            capacity = _capacity(len(prefix.tokens), window - 1, span, SPAN_ROOM_DECODING)
            most = max(1, min(self.batch_chunks, budget // self.engine.cache_bytes(capacity)))
            # groups as even as the limit allows (35 chunks: one group, not 32 and then 3 decoded nearly alone), with
            # chunks of similar token counts together, since a group takes as many steps as its longest chunk; a bias
            # group's chunks together (beyond the limit if they must: at most MAX_BIAS_GROUP)
            units = list(dict.fromkeys(unit_of.get(i, (i,)) for i in members))
            units.sort(key=lambda unit: max(streams[i].count - len(streams[i].tokens) for i in unit), reverse=True)
            lockstep = -(-len(members) // -(-len(members) // most))
            batch: list[int] = []
            for unit in units:
                if batch and len(batch) + len(unit) > lockstep:
                    self._decode_group(prefix, window, overlap, span, [streams[i] for i in batch])
                    batch = []
                batch += unit
            if batch:
                self._decode_group(prefix, window, overlap, span, [streams[i] for i in batch])
        results: list[bytes | CodecError] = []
        for i in range(len(payloads)):
            if i in parts:
                results.append(self._joined([streams[key] for key in parts[i]]))
                continue
            stream = streams.get(i)
            error = errors.get(i) or (self._ended(stream) if stream else None)
            results.append(error if error else self._plaintext(stream))
        return results

    @staticmethod
    def _ended(stream: Stream) -> CodecError | None:
        """Its error, where decoding it failed, or where it is complete and its range coder's stream does not end
        where it should."""
        if stream.error is None and len(stream.tokens) == stream.count:
            try:
                stream.decoder.check_end()
            except RangeDecodeError as exc:
                stream.error = CodecError(f"lm: {exc}")
        return stream.error

    def _joined(self, parts: Sequence[Stream]) -> bytes | CodecError:
        """A chunk of streams' bytes: its streams' in order, up to the first that stopped early at its limit."""
        out = []
        for part in parts:
            data = self._ended(part) or self._plaintext(part)
            if isinstance(data, CodecError):
                return CodecError(f"lm: stream {part.part} of the chunk: {str(data).removeprefix('lm: ')}")
            out.append(data)
            if len(part.tokens) < part.count:
                break
        return b"".join(out)

    def _plaintext(self, stream: Stream) -> bytes | CodecError:
        """The bytes a decoded stream makes: its tokens' and escaped bytes, or with a text form, those with CR LF for
        LF, or the UTF-16 text of which they are the UTF-8 form (SPEC.md 9.14; where it stopped at its limit, of the
        characters they complete)."""
        coded = self.encoder.decode(stream.tokens, stream.escaped)
        try:
            return chunk_bytes(stream.text, coded, final=len(stream.tokens) == stream.count)
        except UnicodeDecodeError as exc:
            return CodecError(f"lm: the tokens make no UTF-8 text (text form {stream.text}): {exc.reason} at byte "
                              f"{exc.start}")
        except UnicodeEncodeError as exc:
            return CodecError(f"lm: the tokens make U+{ord(exc.object[exc.start]):04X}, which no "
                              f"{CODE_PAGE_NAMES[stream.text & ~CRLF]} byte stands for (text form {stream.text})")

    def _primer(self, chunk: int, size: int, source: Payload | None, read_chunk: ReadChunk | None) -> tuple[list[int], Stream]:
        """The first `size` tokens of the primer's chunk (whose payload names itself with the same count), decoded in
        their own window from its payload (`source`, or read with read_chunk); and that chunk's decoding stream."""
        try:
            if source is None:
                source = self._read_payload(chunk, read_chunk)
            if (source.primer_chunk, source.primer_size) != (chunk, size):
                raise CodecError(f"its own payload does not hold a primer of {size} tokens")
            if size > source.count:
                raise CodecError(f"it holds {source.count} tokens, fewer than the primer's {size}")
            key = (chunk, size, source.data)
            if self._decoded_primer is not None and self._decoded_primer[0] == key:
                stream = self._decoded_primer[1].copy()
            else:
                stream = self._stream(source, size, UNLIMITED)
                self._decode_group(self._prefix([]), size + 1, 0, source.span, [stream])  # one window of the P tokens
                if stream.error is not None:
                    raise stream.error
                self._decoded_primer = (key, stream.copy())
        except CodecError as exc:
            raise CodecError(f"lm: its primer, the first {size} tokens of chunk {chunk}, cannot be read: {exc}") from None
        return list(stream.tokens), stream

    def _read_payload(self, chunk: int, read_chunk: ReadChunk | None) -> Payload:
        """Another lm chunk's payload, read from the archive (a primer's, a bias group's chunk)."""
        if read_chunk is None:
            raise CodecError("it is not in the batch and there is no archive to read it from")
        codec_id, payload = read_chunk(chunk)
        if codec_id != CodecId.LM:
            raise CodecError(f"it is not an lm chunk (codec {codec_id})")
        return self._parse(payload, None)

    def _bias_group(self, named: Payload, parsed: dict[int, Payload], chunks: Sequence[int], read_chunk: ReadChunk | None,
                    batch: int, helpers: dict[int, Payload]) -> list[int] | CodecError:
        """The stream keys of the bias group a payload names, each chunk's payload checked to name the same group with
        the same windows (SPEC.md 9.10): batch indices where the batch holds the chunk, else batch + its index, whose
        payload, read with read_chunk, goes to helpers."""
        first, size = named.group_first, named.group_size
        in_batch = {chunks[i]: i for i in parsed}
        keys, read = [], {}
        try:
            for chunk in range(first, first + size):
                if chunk in in_batch:
                    key, payload = in_batch[chunk], parsed[in_batch[chunk]]
                else:
                    try:
                        payload = self._read_payload(chunk, read_chunk)
                    except CodecError as exc:
                        raise CodecError(f"chunk {chunk}: {str(exc).removeprefix('lm: ')}") from None
                    key = batch + chunk
                    read[key] = payload
                if (payload.group_first, payload.group_size) != (first, size):
                    raise CodecError(f"chunk {chunk} does not name the same group")
                if (payload.window, payload.overlap, payload.span) != (named.window, named.overlap, named.span):
                    raise CodecError(f"chunk {chunk} has another window, overlap or span")
                if payload.cache != named.cache:
                    raise CodecError(f"chunk {chunk} {'lacks' if named.cache else 'has'} the neural cache")
                keys.append(key)
        except CodecError as exc:
            return CodecError(f"lm: its bias group, chunks {first} .. {first + size - 1}, cannot be decoded: {exc}")
        helpers.update(read)
        return keys

    def _stream(self, payload: Payload, count: int, limit: int, data: bytes | None = None) -> Stream:
        """A chunk's decoding stream (or one of its streams': data) at its start: the adaptive models its payload
        names, empty."""
        match = MatchModel(TOTAL_BITS) if payload.match else None
        vocab = self.model.config.vocab_size
        bias = torch.zeros(vocab, dtype=torch.int64, device=self.engine.device) if payload.bias else None
        cache = NeuralCache(self.model.config.hidden, self.engine.device) if payload.cache else None
        return Stream(RangeDecoder(payload.data if data is None else data), count, limit, match, bias, cache,
                      text=payload.text)

    def dependencies(self, payload: bytes) -> tuple[int, ...]:
        """The primer's chunk, or the chunks of the bias group (itself among them)."""
        try:
            parsed = self._parse(payload, None)
        except CodecError:
            return ()  # decoding reports it
        return parsed.group() or (() if parsed.primer_chunk is None else (parsed.primer_chunk,))

    def mates(self, chunk: int, payload: bytes) -> tuple[int, ...]:
        """The chunks of its bias group."""
        try:
            group = self._parse(payload, None).group()
        except CodecError:
            return (chunk,)  # decoding reports it
        return group if chunk in group else (chunk,)

    def _parse(self, payload: bytes, raw_size: int | None) -> Payload:
        model_index, pos = _read_varint(payload, 0)
        window, pos = _read_varint(payload, pos)
        overlap, pos = _read_varint(payload, pos)
        primer_chunk, primer_size = None, 0
        if self.primer_field:
            named, pos = _read_varint(payload, pos)
            if named:
                primer_chunk = named - 1
                primer_size, pos = _read_varint(payload, pos)
        adaptive = 0
        if self.match_field or self.bias_field:
            adaptive, pos = _read_varint(payload, pos)
            allowed = ((ADAPTIVE_MATCH if self.match_field else 0) | (ADAPTIVE_BIAS if self.bias_field else 0)
                       | (ADAPTIVE_CACHE if self.cache_field else 0))
            if adaptive & ~allowed:
                names = "".join(f", {bit}: {name}" for bit, name in ((ADAPTIVE_MATCH, "match"), (ADAPTIVE_BIAS, "bias head"),
                                                                      (ADAPTIVE_CACHE, "neural cache")) if allowed & bit)
                raise CodecError(f"lm: adaptive model {adaptive} is not one this archive's flags allow (0: none{names}"
                                 f"{', 3: both' if allowed == 3 else ', or their sums' if allowed > 3 else ''})")
            if adaptive & ADAPTIVE_CACHE and not adaptive & ADAPTIVE_BIAS:
                raise CodecError(f"lm: adaptive model {adaptive} has the neural cache (4) without the bias head (2)")
        group_first, group_size = None, 0
        if self.group_field and adaptive & ADAPTIVE_BIAS:
            group_size, pos = _read_varint(payload, pos)
            if group_size and not 2 <= group_size <= MAX_BIAS_GROUP:
                raise CodecError(f"lm: a bias group of {group_size} {'streams' if self.streams_field else 'chunks'} "
                                 f"(2 .. {MAX_BIAS_GROUP}, or 0 for none)")
            if group_size and not self.streams_field:
                group_first, pos = _read_varint(payload, pos)
        span = 0
        if self.span_field:
            span, pos = _read_varint(payload, pos)
        text = BYTES
        if self.utf16_field:
            text, pos = _read_varint(payload, pos)
            pages = ((WINDOWS_1252,) if self.windows_1252_field else ()) + (OTHER_CODE_PAGES if self.code_pages_field
                                                                             else ())
            if text & ~(CRLF if self.crlf_field else 0) not in TEXT_FORMS + pages:
                named = "".join(f", {page}: {CODE_PAGE_NAMES[page]}" for page in pages)
                crlf = ", each + 4 with CR LF as LF" if self.crlf_field else ""
                raise CodecError(f"lm: text form {text} (0: bytes, 1: UTF-16LE, 2: UTF-16BE{named}{crlf})")
        streams: tuple[tuple[int, bytes], ...] = ()
        if self.streams_field and group_size:  # the group's streams: their token counts, then all lengths but the last
            counts, lengths = [], []
            for field_values, fields in ((counts, group_size), (lengths, group_size - 1)):
                for _ in range(fields):
                    value, pos = _read_varint(payload, pos)
                    field_values.append(value)
            if not all(counts):
                raise CodecError(f"lm: stream {counts.index(0)} of the chunk holds no tokens")
            if sum(lengths) > len(payload) - pos:
                raise CodecError(f"lm: the streams' lengths add up to {sum(lengths)} bytes, past the payload's end")
            ends = list(itertools.accumulate(lengths, initial=pos)) + [len(payload)]
            streams = tuple((n, payload[lo:hi]) for n, lo, hi in zip(counts, ends, ends[1:]))
            count = sum(counts)
        else:
            count, pos = _read_varint(payload, pos)
        if model_index != self.model_index:
            raise CodecError(f"lm: chunk names model {model_index}, this codec holds model {self.model_index}")
        positions = self.model.config.max_positions
        if not 2 <= window <= positions or not 0 <= overlap < window - 1:
            raise CodecError(f"lm: window {window} / overlap {overlap} outside what the model supports")
        if not 0 <= span < window:
            raise CodecError(f"lm: span {span} is not below the window, {window}")
        if primer_chunk is not None and not 1 <= primer_size <= positions - window:
            raise CodecError(f"lm: a primer of {primer_size} tokens does not fit the model's {positions} positions "
                             f"with window {window}")
        if raw_size is not None and count > raw_size:  # every token yields at least one byte
            raise CodecError(f"lm: {count} tokens for {raw_size} bytes")
        if group_size and primer_chunk is not None:
            raise CodecError("lm: the chunk names both a primer and a bias group")
        return Payload(window, overlap, primer_chunk, primer_size, bool(adaptive & ADAPTIVE_MATCH),
                       bool(adaptive & ADAPTIVE_BIAS), bool(adaptive & ADAPTIVE_CACHE), group_first, group_size, span, count,
                       payload[pos:], streams, text)

    def _decode_group(self, prefix: Prefix, window: int, overlap: int, span: int, streams: Sequence[Stream]) -> None:
        """Lockstep decoding of chunks after the same prefix: every stream advances one token per step; window
        restarts fall on the same steps, counted from each stream's first token here. A stream is done after `count`
        tokens in all, once it has produced `limit` bytes (and no chunk sharing its bias head needs its tokens), or
        when its payload turns out damaged; then the chunks sharing its bias head that still need tokens fail too.
        A bias group's streams are all here, from their first tokens."""
        cfg = self.model.config
        base = [len(s.tokens) for s in streams]  # tokens decoded before (a primer's chunk: its primer)

        def unfinished(i: int) -> bool:
            return streams[i].unfinished()

        # walked step by step, never listed up to a count: a helper's count is not bounded by its chunk's size (9.10)
        restarts = window_starts(window, overlap)
        restart = next(restarts)
        # rows: the streams in the cache, in order; finished ones keep their row (computing unused values) until the
        # next window restart or until half the rows are finished, since dropping rows copies the whole cache
        rows = [i for i in range(len(streams)) if unfinished(i)]
        active = rows
        cache = None
        step = 0
        # the bias head's states where a stream has it: a row per stream (a bias group's: its first stream's), and a
        # zero row for streams without it (written back at the end)
        biased = [i for i, s in enumerate(streams) if s.bias is not None]
        position = {id(s): i for i, s in enumerate(streams)}
        head = [position[id(s.mates[0])] if s.mates else i for i, s in enumerate(streams)]
        finders = list({id(s.history.group): s.history.group for s in streams if s.history}.values())
        bias = None
        if biased:
            bias = torch.zeros(len(streams) + 1, cfg.vocab_size, dtype=torch.int64, device=self.engine.device)
            for i in biased:
                bias[head[i]] = streams[i].bias
        while active:
            if step == restart:
                restart = next(restarts)
                rows = active
                before = [streams[i].tokens[base[i] + max(0, step - overlap) : base[i] + step] for i in rows]
                cache = None  # free the old cache first: two at once doubled the peak memory of extraction
                # positions this window can still fill: the prefix, the overlap, one per token left (short chunks need less)
                left = max(streams[i].count - base[i] for i in rows) - step
                capacity = _capacity(len(prefix.tokens), min(window - 1, len(before[0]) + left), span, SPAN_ROOM_DECODING)
                cache = self.engine.new_cache(len(rows), capacity, span)
                cache.start_from(prefix.cache)
                if before[0]:
                    hidden_q, hidden_s = self.engine.forward(torch.tensor(before, device=self.engine.device), cache)
                else:
                    hidden_q, hidden_s = prefix.hidden_q.expand(len(rows), 1, -1), prefix.hidden_s.expand(len(rows), 1, -1)
            else:
                if 2 * len(active) <= len(rows):
                    still = set(active)
                    keep = [row for row, i in enumerate(rows) if i in still]
                    cache.select(torch.tensor(keep, dtype=torch.long, device=self.engine.device))
                    rows = active
                # a row whose stream failed on its first token has none: any token will do, its outputs go unused
                inputs = torch.tensor([[streams[i].tokens[-1] if streams[i].tokens else cfg.bos_token] for i in rows],
                                      device=self.engine.device)
                hidden_q, hidden_s = self.engine.forward(inputs, cache)
            pending = [(row, streams[i]) for row, i in enumerate(rows) if unfinished(i)]
            updates = []  # the bias heads learn after the step: every table of a step uses the state before it
            for lo in range(0, len(pending), self.engine.batching.frequency_rows):
                block = pending[lo : lo + self.engine.batching.frequency_rows]
                index = torch.tensor([row for row, _ in block], device=self.engine.device)
                bias_rows = None if bias is None else np.array(
                    [head[i] if streams[i].bias is not None else len(streams) for i in (rows[row] for row, _ in block)],
                    dtype=np.int64)
                freq = self.engine.frequencies(hidden_q[index, -1], hidden_s[index, -1], TOTAL_BITS, bias, bias_rows)
                caches = [s.cache for _, s in block]
                keys = self.engine.ops.cache_keys(hidden_q[index, -1]) if any(caches) else None
                table, cached = self._cached_tables(freq, caches, lambda cache, at, rows: cache.tables(
                    self.engine.ops, keys[0][at], keys[1][at], rows, TOTAL_BITS) if cache.count else None)
                guessed = [s.match.guess() if s.match else None for _, s in block]
                # the model's frequency of each stream's match guess (0: no guess)
                guess_freq = [0 if guess is None else int(f) for guess, f in
                              zip(guessed, self.engine.ops.table_entries(table, np.array([g or 0 for g in guessed])))]
                targets = np.zeros(len(block), dtype=np.int64)
                # each row's guess mixed in where its weight is not 0 (keep 2^16: the model's table as it is)
                mixed_guess, given = np.zeros_like(targets), np.zeros_like(targets)
                keep = np.full_like(targets, 1 << WEIGHT_BITS)
                for j, (_, s) in enumerate(block):
                    if guessed[j] is not None:
                        weight = s.match.weight(guess_freq[j])
                        if weight:
                            mixed_guess[j] = guessed[j]
                            keep[j], given[j] = mix_factors(weight, cfg.vocab_size, TOTAL_BITS)
                    try:
                        targets[j] = s.decoder.target(TOTAL)
                    except RangeDecodeError as exc:
                        s.error = CodecError(f"lm: {exc}")
                symbols, starts, sizes = self.engine.ops.find_symbols(table, targets, mixed_guess, keep, given, WEIGHT_BITS)
                decoded = zip(block, symbols.tolist(), starts.tolist(), sizes.tolist(), guess_freq)
                learned = []  # the block's rows whose stream has the bias head and took a token
                took = []  # the block's rows that took a token
                for j, ((_, s), token, start, size, known) in enumerate(decoded):
                    if s.error is not None:
                        continue
                    if s.bias is not None:
                        learned.append(j)
                    if s.match:
                        s.match.update(token, known)
                    elif s.history is not None:
                        s.history.push(token)
                    try:
                        s.decoder.consume(start, size)
                        if token == cfg.escape_token:
                            byte = s.decoder.target(ESCAPED_BYTE_TOTAL)
                            s.decoder.consume(byte, 1)
                            s.escaped[len(s.tokens)] = byte
                    except RangeDecodeError as exc:
                        s.error = CodecError(f"lm: {exc}")
                        continue
                    s.produced += 1 if token == cfg.escape_token else len(self.encoder.table.piece(token))
                    s.tokens.append(token)
                    took.append(j)
                self._cache_learns(freq, table, symbols, caches, cached, took, keys)
                if learned:
                    taken = freq if len(learned) == len(block) else freq[torch.tensor(learned, device=freq.device)]
                    updates.append((bias_rows[learned], taken, symbols[learned]))
            for bias_rows, taken, symbols in updates:
                self.engine.ops.update_bias(bias, bias_rows, taken, symbols, BIAS_RATE, TOTAL_BITS)
            for finder in finders:  # the step's tokens join the group's history together, as the bias head learns
                finder.commit()
            for neural in {id(streams[i].cache): streams[i].cache for i in rows if streams[i].cache}.values():
                neural.commit()
            for i in rows:  # a damaged chunk's group cannot learn its tokens: those that still need tokens fail
                failed = streams[i].error is None and next((m for m in streams[i].mates if m.error is not None), None)
                if failed and streams[i].needs():
                    which = f"chunk {failed.chunk}" if failed.part is None else f"stream {failed.part}"
                    streams[i].error = CodecError(f"lm: {which}, which shares its bias head, cannot be decoded: "
                                                  f"{str(failed.error).removeprefix('lm: ')}")
            step += 1
            active = [i for i in rows if unfinished(i)]
        for i in biased:
            streams[i].bias = bias[head[i]].clone()

    @staticmethod
    def _cached_tables(freq: torch.Tensor, caches: Sequence[NeuralCache | None], tables):
        """The tables rows code with: freq (the bias head's), mixed with each row's neural cache where it has one
        (SPEC.md 9.13) and tables(cache, its rows, their freq) gives (mixed tables, its table, the rows' buckets),
        not None; and for each cache that mixed, (it, its rows, its table, their buckets)."""
        table, cached = freq, []
        for cache in {id(c): c for c in caches if c is not None}.values():
            rows = [j for j, c in enumerate(caches) if c is cache]
            at = torch.tensor(rows, device=freq.device)
            whole = len(rows) == len(freq)  # one cache for all rows (a bias group): no copies
            out = tables(cache, at, freq if whole else freq[at])
            if out is not None:
                if whole:
                    table = out[0]
                else:
                    table = freq.clone() if table is freq else table
                    table[at] = out[0]
                cached.append((cache, rows, *out[1:]))
        return table, cached

    def _cache_learns(self, freq: torch.Tensor, table: torch.Tensor, symbols: np.ndarray,
                      caches: Sequence[NeuralCache | None], cached, took: Sequence[int], keys=None) -> None:
        """The neural caches' lessons from the rows that took a token (symbols): each weight's step from the row's
        tables (the bias head's freq, its cache's, the mixed one), and, when decoding, the rows' keys (ops.cache_keys
        of all rows); both count at commit()."""
        took = set(took)
        for cache, rows, cache_table, buckets in cached:
            learned = [k for k, j in enumerate(rows) if j in took]
            at = np.array([rows[k] for k in learned], dtype=np.int64)
            if not len(at):
                continue
            chosen = torch.as_tensor(symbols[at], device=freq.device)
            at_rows = torch.as_tensor(at, device=freq.device)
            entries = zip(freq[at_rows, chosen].tolist(), table[at_rows, chosen].tolist(),
                          cache_table[torch.as_tensor(learned, device=freq.device), chosen].tolist())
            for k, (model, mixed, in_cache) in zip(learned, entries):
                cache.learn(int(buckets[k]), model, in_cache, mixed, TOTAL_BITS)
        for cache in {id(c): c for c in caches if c is not None}.values() if keys is not None else ():
            rows = [j for j, c in enumerate(caches) if c is cache and j in took]
            if rows:
                at = torch.tensor(rows, device=freq.device)
                cache.add(keys[0][at], keys[1][at], symbols[rows].tolist())


def _runs_in_one_form(forms: list[tuple[int, bytes]], runs: Sequence[int]) -> list[tuple[int, bytes]]:
    """A chunk of ASCII makes the same tokens as bytes and in a code page's form: where it goes on a file's run from
    a chunk in such a form, or leads the run into one (with the same CRLF bit), it takes that form too, so that a
    stretch of a file without a byte above 0x7F does not cut its bias group (SPEC.md 9.10: a group holds chunks of one
    form)."""
    forms = list(forms)

    def joins(i: int, neighbour: int) -> bool:
        form, coded = forms[i]
        other = forms[neighbour][0]
        return form & ~CRLF == BYTES and other & ~CRLF in CODE_PAGES and other & CRLF == form & CRLF and coded.isascii()

    for i in range(1, len(forms)):  # forwards: after such a chunk of the run
        if runs[i] > 0 and joins(i, i - 1):
            forms[i] = (forms[i - 1][0], forms[i][1])
    for i in range(len(forms) - 2, -1, -1):  # backwards: the run's ASCII chunks before its first such chunk
        if runs[i + 1] > 0 and joins(i, i + 1):
            forms[i] = (forms[i + 1][0], forms[i][1])
    return forms


def _guessed_tokens(guessed: Sequence[list[tuple[int, int] | None] | None], rows: Sequence[tuple[int, int]]) -> np.ndarray:
    """The guessed token at each (chunk, position) row, or -1 where there is none."""
    at = [guessed[c][p] if guessed[c] is not None else None for c, p in rows]
    return np.array([-1 if g is None else g[0] for g in at], dtype=np.int64)


def _capacity(prefix: int, positions: int, span: int, room: int) -> int:
    """Slots of a KV cache for a prefix and up to `positions` after it: with a span, no more than the prefix, S - 1
    and the room to add positions between slides."""
    return prefix + (min(positions, span - 1 + room) if span else positions)


def _length_groups(jobs, batch_tokens: int, per_row: int | None = None):
    """Windows of similar length together, each group within the token budget (padding wastes little); a window
    costs its length, or at most per_row where its forward takes its positions in passes."""
    ordered = sorted(jobs, key=lambda job: len(job[3]))
    group: list = []
    for job in ordered:
        if group and (len(group) + 1) * min(len(job[3]), per_row or len(job[3])) > batch_tokens:
            yield group
            group = []
        group.append(job)
    if group:
        yield group
