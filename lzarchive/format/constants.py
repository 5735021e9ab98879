"""Format layer: magic numbers, versions, feature flags, codec ids and the normative limits of SPEC.md."""

from __future__ import annotations

import enum

FORMAT_MAJOR = 1
FORMAT_MINOR = 1  # 1.1 defines the lm codec; writers still write 1.0 for archives without models

HEADER_MAGIC = b"\x89LZA\r\n\x1a\n"
CHUNK_MAGIC = b"LZAC"
INDEX_MAGIC = b"LZAI"
FOOTER_MAGIC = b"\x1aLZAEND\n"

HEADER_FIXED_SIZE = 32
HASH_SIZE = 32
CHUNK_HEADER_SIZE = 80
INDEX_HEADER_SIZE = 16
FOOTER_SIZE = 64

# Feature flags (SPEC.md "Feature flags"). v1 defines none; any set bit in an incompatible class is refused.
KNOWN_INCOMPAT_FLAGS = 0
KNOWN_WRITE_INCOMPAT_FLAGS = 0
KNOWN_COMPAT_FLAGS = 0

# blake3 derive-key contexts, one per purpose, so a hash of one kind never validates another.
CONTEXT_HEADER = "lza v1 header"
CONTEXT_CHUNK_STORED = "lza v1 chunk stored"
CONTEXT_CHUNK_PLAIN = "lza v1 chunk plaintext"
CONTEXT_ENTRY = "lza v1 entry content"
CONTEXT_INDEX = "lza v1 index"


class CodecId(enum.IntEnum):
    STORE = 0
    ZSTD = 1
    LM = 2


class EntryType(enum.IntEnum):
    FILE = 0
    DIR = 1
    SYMLINK = 2
    HARDLINK = 3


class IndexEncoding(enum.IntEnum):
    MSGPACK = 0
    MSGPACK_ZSTD = 1


# Normative limits: a writer never exceeds them, a reader refuses archives that do.
MAX_HEADER_BODY = 64 * 1024
MAX_MODELS = 16
MAX_CHUNK_RAW = 16 * 1024 * 1024
MAX_CHUNKS = 1 << 26
MAX_ENTRIES = 1 << 24
MAX_INDEX_RAW = 1 << 30
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_LINK_TARGET_BYTES = 4096
MODE_MASK = 0o7777
