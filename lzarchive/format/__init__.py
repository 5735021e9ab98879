"""Format layer: the bytes on disk (SPEC.md), with no knowledge of files, codecs or models."""
