"""Codec layer: the registry. Every codec id read from an archive maps to exactly one implementation, here."""

from __future__ import annotations

from ..format.constants import CodecId
from .base import Codec, CodecError
from .store import StoreCodec
from .zstd import ZstdCodec

__all__ = ["Codec", "CodecError", "StoreCodec", "ZstdCodec", "CODEC_NAMES", "codec_name", "LM_DEFAULT_WINDOW",
           "LM_DEFAULT_OVERLAP", "LM_DEFAULT_CHUNK_SIZE"]

CODEC_NAMES = {CodecId.STORE: "store", CodecId.ZSTD: "zstd", CodecId.LM: "lm"}

# The lm codec's defaults (SPEC 9.5), here so that reading them does not load the engine (codecs/lm.py: torch).
LM_DEFAULT_WINDOW = 1024
LM_DEFAULT_OVERLAP = 256
LM_DEFAULT_CHUNK_SIZE = 8 * 1024  # measured: same ratio as 16 KiB on real text, half the cost of reading one chunk


def codec_name(codec_id: int) -> str:
    return CODEC_NAMES.get(codec_id, f"unknown({codec_id})")
