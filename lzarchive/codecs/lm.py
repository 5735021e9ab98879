"""Codec layer: the lm codec (SPEC.md section 9), the only place where the exact engine and the range coder meet.

Payload: varint model index, varint window W, varint overlap O, varint token count N, then the range coder's bytes.
Tokens are predicted in windows of at most W positions: window 0 is [BOS, t0, t1, ...]; each later window restarts
the model on [BOS, the last O tokens of the previous windows, ...], so windows are independent forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.compiler import NUMERICS, CompiledModel
from ..engine.kernels import find_symbols, symbol_starts
from ..engine.model import ExactLlama
from ..engine.tokenizer import Encoder
from ..format.constants import CodecId
from ..format.records import ModelRef
from ..format.wire import read_varint, varint
from ..rangecoder import TOTAL, TOTAL_BITS, RangeDecodeError, RangeDecoder, RangeEncoder
from . import LM_DEFAULT_OVERLAP as DEFAULT_OVERLAP
from . import LM_DEFAULT_WINDOW as DEFAULT_WINDOW
from .base import Codec, CodecError

ESCAPED_BYTE_TOTAL = 256
MAX_TEXT_FRACTION_ESCAPED = 0.05  # chunks with more raw bytes than this are left to other codecs
FREQ_ROWS = 64  # rows of frequency tables computed at once: one output-head GEMM for all chunks decoded in lockstep
DECODE_CACHE_BUDGET = 3 << 30  # bytes of KV cache for the chunks decoded in lockstep: 120 at the default model and window


def window_bodies(count: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) of the tokens each window codes; window 0 codes W-1 tokens, later ones W-1-O."""
    bodies, start = [], 0
    while start < count:
        size = window - 1 if not bodies else window - 1 - overlap
        bodies.append((start, min(count, start + size)))
        start += size
    return bodies


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(data, pos)
    except ValueError:
        raise CodecError("lm: truncated or oversized varint in the payload header") from None


@dataclass
class LmCodec(Codec):
    model: CompiledModel
    model_index: int = 0
    device: str = "cpu"
    window: int | None = None  # default: DEFAULT_WINDOW, or the model's positions if fewer
    overlap: int | None = None  # default: DEFAULT_OVERLAP scaled to the window
    batch_tokens: int = 1024  # tokens per forward when compressing; 2 x 1024 falls out of cache: 2.7x slower

    codec_id = CodecId.LM
    name = "lm"
    batch_chunks = 64  # chunks per lockstep decode at most (measured per token: 1.9 ms at 64, 2.1 at 32, 8 at 3); fewer
    # where their KV caches would exceed DECODE_CACHE_BUDGET

    def __post_init__(self) -> None:
        cfg = self.model.config
        if self.window is None:
            self.window = min(DEFAULT_WINDOW, cfg.max_positions)
        if self.overlap is None:
            self.overlap = DEFAULT_OVERLAP * self.window // DEFAULT_WINDOW
        if not 2 <= self.window <= cfg.max_positions or not 0 <= self.overlap < self.window - 1:
            raise ValueError(f"lm window {self.window}/{self.overlap} does not fit the model ({cfg.max_positions} positions)")
        self.engine = ExactLlama(cfg, self.model.tensors, self.device)
        self.encoder = Encoder(self.model.token_table, self.model.tokenizer_json, cfg.escape_token)

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(self.model.name, self.model.source, self.model.model_hash, self.model.tokenizer_hash, NUMERICS)

    # ------------------------------------------------------------------------------------------ encode

    def encode_batch(self, chunks: Sequence[bytes]) -> list[bytes | None]:
        encoded = [self.encoder.encode(bytes(c)) for c in chunks]
        accepted = [e if e and len(e[1]) <= MAX_TEXT_FRACTION_ESCAPED * max(1, len(e[0])) else None for e in encoded]
        # every window of every chunk is an independent forward pass: run them all, batched by length
        jobs = []  # (chunk, body start, body end, input tokens)
        for i, item in enumerate(accepted):
            if item is None:
                continue
            tokens = item[0]
            for start, end in window_bodies(len(tokens), self.window, self.overlap):
                primer = tokens[max(0, start - self.overlap) : start] if start else []
                jobs.append((i, start, end, [self.model.config.bos_token] + primer + tokens[start:end]))
        intervals: dict[int, list[tuple[int, int]]] = {i: [] for i, a in enumerate(accepted) if a}
        results: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for group in _length_groups(jobs, self.batch_tokens):
            for (i, start, end, _), coded in zip(group, self._code_windows(group)):
                results[(i, start)] = coded
        for (i, _start), coded in sorted(results.items()):
            intervals[i].extend(coded)
        payloads: list[bytes | None] = []
        for i, item in enumerate(accepted):
            if item is None:
                payloads.append(None)
                continue
            tokens, escaped = item
            coder = RangeEncoder()
            for position, (start, size) in enumerate(intervals[i]):
                coder.encode(start, size)
                if position in escaped:
                    coder.encode(escaped[position], 1, ESCAPED_BYTE_TOTAL)
            header = varint(self.model_index) + varint(self.window) + varint(self.overlap) + varint(len(tokens))
            payloads.append(header + coder.finish())
        return payloads

    def _code_windows(self, group) -> list[list[tuple[int, int]]]:
        """One batched full-sequence forward; for each window, (cumulative start, frequency) of each body token."""
        longest = max(len(job[3]) for job in group)
        pad = self.model.config.bos_token
        inputs = torch.tensor([job[3] + [pad] * (longest - len(job[3])) for job in group], device=self.engine.device)
        hidden_q, hidden_s = self.engine.forward(inputs, self.engine.new_cache(len(group), longest))  # right padding is inert
        rows, targets = [], []
        for b, (_, start, end, window_input) in enumerate(group):
            first = len(window_input) - (end - start) - 1  # position whose output predicts the first body token
            for offset in range(end - start):
                rows.append((b, first + offset))
                targets.append(window_input[first + offset + 1])
        coded = []
        for lo in range(0, len(rows), FREQ_ROWS):
            index = torch.tensor(rows[lo : lo + FREQ_ROWS], device=self.engine.device)
            freq = self.engine.frequencies(hidden_q[index[:, 0], index[:, 1]], hidden_s[index[:, 0], index[:, 1]], TOTAL_BITS)
            freq, symbols = freq.cpu().numpy(), np.array(targets[lo : lo + FREQ_ROWS], dtype=np.int64)
            starts = np.empty_like(symbols)
            symbol_starts(freq, symbols, starts)
            coded.extend(zip(starts.tolist(), freq[np.arange(len(symbols)), symbols].tolist()))
        out, position = [], 0
        for _, start, end, _ in group:
            out.append(coded[position : position + end - start])
            position += end - start
        return out

    # ------------------------------------------------------------------------------------------ decode

    def decode_batch(self, payloads: Sequence[bytes], raw_sizes: Sequence[int],
                     limits: Sequence[int] | None = None) -> list[bytes | CodecError]:
        """Decodes every chunk whole, or, with limits, each until its first `limit` bytes are out: reading one small
        file stops where it ends instead of decoding the rest of its chunk token by token. A damaged chunk gets its
        error and leaves the lockstep group; the others go on."""
        limits = raw_sizes if limits is None else limits
        results: list[bytes | CodecError | None] = [None] * len(payloads)
        parsed: dict[int, tuple[int, int, int, bytes]] = {}
        for i, (payload, raw_size) in enumerate(zip(payloads, raw_sizes)):
            try:
                parsed[i] = self._parse(bytes(payload), raw_size)
            except CodecError as exc:
                results[i] = exc
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (window, overlap, _, _) in parsed.items():
            groups.setdefault((window, overlap), []).append(i)
        for (window, overlap), members in groups.items():
            most = max(1, min(self.batch_chunks, DECODE_CACHE_BUDGET // self.engine.cache_bytes(window)))
            # groups as even as the limit allows (35 chunks: one group, not 32 and then 3 decoded nearly alone), with
            # chunks of similar token counts together, since a group takes as many steps as its longest chunk
            members.sort(key=lambda i: parsed[i][2], reverse=True)
            lockstep = -(-len(members) // -(-len(members) // most))
            for lo in range(0, len(members), lockstep):
                part = members[lo : lo + lockstep]
                decoded = self._decode_group(window, overlap, [parsed[i] for i in part], [limits[i] for i in part])
                for i, data in zip(part, decoded):
                    results[i] = data
        return results  # type: ignore[return-value]

    def _parse(self, payload: bytes, raw_size: int) -> tuple[int, int, int, bytes]:
        model_index, pos = _read_varint(payload, 0)
        window, pos = _read_varint(payload, pos)
        overlap, pos = _read_varint(payload, pos)
        count, pos = _read_varint(payload, pos)
        if model_index != self.model_index:
            raise CodecError(f"lm: chunk names model {model_index}, this codec holds model {self.model_index}")
        if not 2 <= window <= self.model.config.max_positions or not 0 <= overlap < window - 1:
            raise CodecError(f"lm: window {window} / overlap {overlap} outside what the model supports")
        if count > raw_size:  # every token yields at least one byte
            raise CodecError(f"lm: {count} tokens for {raw_size} bytes")
        return window, overlap, count, payload[pos:]

    def _decode_group(self, window: int, overlap: int, items, limits) -> list[bytes | CodecError]:
        """Lockstep decoding: every chunk advances one token per step; window restarts fall on the same steps. A chunk
        is done after its last token, once it has produced `limit` bytes, or when its payload turns out damaged."""
        cfg = self.model.config
        count = [item[2] for item in items]
        decoders = [RangeDecoder(item[3]) for item in items]
        tokens: list[list[int]] = [[] for _ in items]
        escaped: list[dict[int, int]] = [{} for _ in items]
        produced = [0] * len(items)
        failed: dict[int, CodecError] = {}

        def unfinished(i: int) -> bool:
            return len(tokens[i]) < count[i] and produced[i] < limits[i] and i not in failed

        restarts = {start for start, _ in window_bodies(max(count, default=0), window, overlap)}
        # rows: the chunks in the cache, in order; finished chunks keep their row (computing unused values) until the
        # next window restart or until half the rows are finished, since dropping rows copies the whole cache
        rows = [i for i in range(len(items)) if unfinished(i)]
        active = rows
        cache = None
        step = 0
        while active:
            if step in restarts:
                rows = active
                primer = [[cfg.bos_token] + tokens[i][max(0, step - overlap) : step] for i in rows] if step else [[cfg.bos_token]] * len(rows)
                cache = None  # free the old cache first: two at once doubled the peak memory of extraction
                # positions this window can still fill: the primer, then one per token left (short chunks need less)
                capacity = min(window, len(primer[0]) + max(count[i] for i in rows) - step)
                cache = self.engine.new_cache(len(rows), capacity)
                inputs = torch.tensor(primer, device=self.engine.device)
            else:
                if 2 * len(active) <= len(rows):
                    still = set(active)
                    keep = [row for row, i in enumerate(rows) if i in still]
                    cache.select(torch.tensor(keep, dtype=torch.long, device=self.engine.device))
                    rows = active
                inputs = torch.tensor([[tokens[i][-1]] for i in rows], device=self.engine.device)
            hidden_q, hidden_s = self.engine.forward(inputs, cache)
            pending = [(row, i) for row, i in enumerate(rows) if unfinished(i)]
            for lo in range(0, len(pending), FREQ_ROWS):
                block = pending[lo : lo + FREQ_ROWS]
                index = torch.tensor([row for row, _ in block], device=self.engine.device)
                freq = self.engine.frequencies(hidden_q[index, -1], hidden_s[index, -1], TOTAL_BITS).cpu().numpy()
                targets = np.zeros(len(block), dtype=np.int64)
                for j, (_, i) in enumerate(block):
                    try:
                        targets[j] = decoders[i].target(TOTAL)
                    except RangeDecodeError as exc:
                        failed[i] = CodecError(f"lm: {exc}")
                symbols, starts = np.empty_like(targets), np.empty_like(targets)
                find_symbols(freq, targets, symbols, starts)
                for (_, i), row_freq, token, start in zip(block, freq, symbols.tolist(), starts.tolist()):
                    if i in failed:
                        continue
                    try:
                        decoders[i].consume(start, int(row_freq[token]))
                        if token == cfg.escape_token:
                            byte = decoders[i].target(ESCAPED_BYTE_TOTAL)
                            decoders[i].consume(byte, 1)
                            escaped[i][len(tokens[i])] = byte
                    except RangeDecodeError as exc:
                        failed[i] = CodecError(f"lm: {exc}")
                        continue
                    produced[i] += 1 if token == cfg.escape_token else len(self.encoder.table.piece(token))
                    tokens[i].append(token)
            step += 1
            active = [i for i in rows if unfinished(i)]
        for i, decoder in enumerate(decoders):
            if i not in failed and len(tokens[i]) == count[i]:
                try:
                    decoder.check_end()
                except RangeDecodeError as exc:
                    failed[i] = CodecError(f"lm: {exc}")
        return [failed.get(i) or self.encoder.decode(t, e) for i, (t, e) in enumerate(zip(tokens, escaped))]


def _length_groups(jobs, batch_tokens: int):
    """Windows of similar length together, each group within the token budget (padding wastes little)."""
    ordered = sorted(jobs, key=lambda job: len(job[3]))
    group: list = []
    for job in ordered:
        if group and (len(group) + 1) * len(job[3]) > batch_tokens:
            yield group
            group = []
        group.append(job)
    if group:
        yield group
