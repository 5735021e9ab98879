"""Format layer: magic numbers, versions, feature flags, codec ids and the normative limits of SPEC.md."""

from __future__ import annotations

import enum

FORMAT_MAJOR = 2  # what writers write by default (format 1 on request, for readers older than 2.0)
SUPPORTED_MINOR = {1: 1, 2: 12}  # major → the highest minor version this lza implements
# 1.1 defines the lm codec; format 1 writers still write 1.0 for archives without models

HEADER_MAGIC = b"\x89LZA\r\n\x1a\n"
CHUNK_MAGIC = b"LZAC"
INDEX_MAGIC = b"LZAI"
FOOTER_MAGIC = b"\x1aLZAEND\n"

HEADER_FIXED_SIZE = 32
HASH_SIZE = 32  # the header hash, and every checksum of format 1
CHECK_SIZE = 8  # format 2's checks: blake3 cut to 64 bits (they detect damage; an unsigned archive has no use for
                # collision resistance, since whoever can change it can recompute any hash)
CHUNK_HEADER_SIZE = 80  # format 1
INDEX_HEADER_SIZE = 16  # format 1
CHUNK_MAGIC_2 = b"LC"
FOOTER_SIZES = {1: 64, 2: 24}
MIN_INDEX_SIZES = {1: INDEX_HEADER_SIZE, 2: 2}  # the fixed part of an index region

# Feature flags (SPEC.md section 4), per major version; any other set bit in an incompatible class is refused.
INCOMPAT_LM_PRIMER = 1 << 0  # 2.1: lm payloads carry the primer field (SPEC 9.6)
INCOMPAT_LM_MATCH = 1 << 1  # 2.2: lm payloads carry the adaptive field (SPEC 9.6, 9.8)
INCOMPAT_LM_SPAN = 1 << 2  # 2.3: lm payloads carry the span field (SPEC 9.5, 9.6)
INCOMPAT_LM_BIAS = 1 << 3  # 2.4: lm payloads carry the adaptive field, whose bit 1 is the bias head (SPEC 9.6, 9.9)
# 2.5: lm payloads with the bias head carry the bias group field: chunks may share one bias head (SPEC 9.6, 9.10)
INCOMPAT_LM_BIAS_GROUP = 1 << 4
# 2.6: the match model of a bias group's chunk guesses from every chunk of the group (SPEC 9.11)
INCOMPAT_LM_GROUP_MATCH = 1 << 5
# 2.7: a bias group is one chunk whose lm payload holds a stream per part (SPEC 9.12)
INCOMPAT_LM_STREAMS = 1 << 6
# 2.8: lm payloads' adaptive field may set bit 2, the neural cache (SPEC 9.6, 9.13)
INCOMPAT_LM_CACHE = 1 << 7
# 2.9: lm payloads carry the text field: their tokens may make the UTF-8 form of UTF-16 text (SPEC 9.6, 9.14)
INCOMPAT_LM_UTF16 = 1 << 8
# 2.10: the text field may set bit 2: the tokens make the text with each CR LF as LF (SPEC 9.6, 9.14; only with lm_utf16)
INCOMPAT_LM_CRLF = 1 << 9
# 2.11: the text field may be 3: the tokens make the UTF-8 form of windows-1252 text (SPEC 9.6, 9.14; only with lm_utf16)
INCOMPAT_LM_WINDOWS_1252 = 1 << 10
# 2.12: the text field may be 8-11: the UTF-8 form of text in windows-1251, KOI8-R, IBM866 or ISO-8859-7 (SPEC 9.6,
# 9.14; only with lm_windows1252)
INCOMPAT_LM_CODE_PAGES = 1 << 11
KNOWN_INCOMPAT_FLAGS = {1: 0, 2: INCOMPAT_LM_PRIMER | INCOMPAT_LM_MATCH | INCOMPAT_LM_SPAN | INCOMPAT_LM_BIAS
                        | INCOMPAT_LM_BIAS_GROUP | INCOMPAT_LM_GROUP_MATCH | INCOMPAT_LM_STREAMS | INCOMPAT_LM_CACHE
                        | INCOMPAT_LM_UTF16 | INCOMPAT_LM_CRLF | INCOMPAT_LM_WINDOWS_1252 | INCOMPAT_LM_CODE_PAGES}

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
MTIME_RANGE = (-(1 << 63), (1 << 63) - 1)  # int64 nanoseconds since 1970: 1677-09-21 .. 2262-04-11
