"""Codec layer: the registry. Every codec id read from an archive maps to exactly one implementation, here."""

from __future__ import annotations

from ..format.constants import CodecId
from .base import Codec, CodecError
from .store import StoreCodec
from .zstd import ZstdCodec

__all__ = ["Codec", "CodecError", "StoreCodec", "ZstdCodec", "CODEC_NAMES", "codec_name", "LM_DEFAULT_WINDOW",
           "LM_DEFAULT_OVERLAP", "LM_DEFAULT_PRIMER", "LM_DEFAULT_SPAN", "LM_BIAS_GROUP", "LM_MIN_CHUNK_SIZE", "LM_MAX_CHUNK_SIZE", "LM_LOCKSTEP", "lm_chunk_size"]

CODEC_NAMES = {CodecId.STORE: "store", CodecId.ZSTD: "zstd", CodecId.LM: "lm"}

# The lm codec's defaults (SPEC 9.5), here so that reading them does not load the engine (codecs/lm.py: torch).
LM_DEFAULT_WINDOW = 1024
LM_DEFAULT_OVERLAP = 256
# Tokens of the archive's first lm chunk that every later lm chunk's windows start from (format 2.1): none unless asked.
# Measured (tools/results/2026-12-01-decode-attention.md): 512 tokens pack asyoulik.txt 2.4 % and lcet10.txt 1.7 %
# smaller, but every window also attends to them: lcet10.txt packs about 2x and extracts 1.4x slower, below the speed
# floor for a default (80 % of format 1's speed).
LM_DEFAULT_PRIMER = 0
# Positions a token sees besides the prefix (format 2.3, SPEC 9.5), or its window's less one if fewer. With a span,
# windows default to the model's positions and restart (where a chunk is longer) on the last S tokens. Measured
# (tools/results/2026-12-03-span.md), against windows of 1024 restarting on 256: lcet10.txt 0.8 % and Python code
# 1.0 % smaller at the same speed (asyoulik.txt's 8 KiB chunks: unchanged). 1024 saves 0.6 % more on the whole of
# lcet10.txt but packs it at 80 % of format 1's speed, the floor (tools/results/2026-12-03-lcet10-pairs-span1024.md).
LM_DEFAULT_SPAN = 768
# Chunks of one file that share one bias head (format 2.5, SPEC 9.10), from the file's first chunk: its maximum.
# Measured with the float model (tools/results/2026-12-04-adaptive-candidates.md): lcet10.txt in 16 chunks 1.3 %
# smaller than with a head per chunk, asyoulik.txt 1.3 %; reading any of them decodes the group as far as it needs.
LM_BIAS_GROUP = 16
# Chunks as large as keeps LM_LOCKSTEP of them decoding together, between 8 and 32 KiB. Measured on asyoulik.txt
# (tools/results/2026-11-29-chunk-policy-asyoulik.md): 32 KiB chunks cost 2.8 % fewer bytes than 8 KiB, but a chunk
# decodes token by token, so 4 chunks in lockstep extract at half the speed of 16 (the GEMM's rows are the chunks).
LM_MIN_CHUNK_SIZE = 8 * 1024
LM_MAX_CHUNK_SIZE = 32 * 1024
LM_LOCKSTEP = 16


def lm_chunk_size(content_bytes: int) -> int:
    """The lm codec's default chunk size for this much content: the largest (in KiB) that still makes LM_LOCKSTEP
    chunks, within LM_MIN_CHUNK_SIZE .. LM_MAX_CHUNK_SIZE."""
    per_chunk = -(-content_bytes // LM_LOCKSTEP)
    return min(LM_MAX_CHUNK_SIZE, max(LM_MIN_CHUNK_SIZE, -(-per_chunk // 1024) * 1024))


def codec_name(codec_id: int) -> str:
    return CODEC_NAMES.get(codec_id, f"unknown({codec_id})")
