"""Codec layer: the registry. Every codec id read from an archive maps to exactly one implementation, here."""

from __future__ import annotations

from ..format.constants import CodecId
from .base import Codec, CodecError
from .store import StoreCodec
from .zstd import ZstdCodec

__all__ = ["Codec", "CodecError", "StoreCodec", "ZstdCodec", "CODEC_NAMES", "codec_name"]

CODEC_NAMES = {CodecId.STORE: "store", CodecId.ZSTD: "zstd", CodecId.LM: "lm"}


def codec_name(codec_id: int) -> str:
    return CODEC_NAMES.get(codec_id, f"unknown({codec_id})")
