"""lza: a verifiable, random-access archive format whose main codec is a language model (see SPEC.md)."""

__version__ = "0.1.0"
