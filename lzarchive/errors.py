"""Error classes shared by every layer: each class's docstring is its message template and each carries its exit code."""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_NOT_ARCHIVE = 10
EXIT_UNSUPPORTED = 11
EXIT_MODEL = 12
EXIT_INTERRUPTED = 130


class LzaError(Exception):
    """{reason}"""

    exit_code = EXIT_FAILURE

    def __init__(self, **fields: object) -> None:
        self.fields = fields
        super().__init__(self.message)

    @property
    def message(self) -> str:
        template = " ".join(line.strip() for line in (self.__doc__ or "").splitlines())  # one line however wrapped
        return template.format(**self.fields)

    def __str__(self) -> str:
        return self.message


class UsageError(LzaError):
    """{reason}"""

    exit_code = EXIT_USAGE


class NotAnArchive(LzaError):
    """{archive}: not an lza archive ({reason})"""

    exit_code = EXIT_NOT_ARCHIVE


class UnsupportedVersion(LzaError):
    """{archive}: format version {major}.{minor} is not supported (this lza reads {supported})"""

    exit_code = EXIT_UNSUPPORTED


class UnsupportedFeature(LzaError):
    """{archive}: {reason}"""

    exit_code = EXIT_UNSUPPORTED


class IntegrityError(LzaError):
    """{archive}: {reason}"""

    exit_code = EXIT_INTEGRITY


class CorruptArchive(IntegrityError):
    """{archive}: damaged or invalid archive: {reason}"""


class TruncatedArchive(IntegrityError):
    """{archive}: truncated archive: {reason}"""


def describe_paths(paths: Iterable[str], limit: int = 5) -> str:
    """Shorten a list of entry paths for a one-line message."""
    paths = list(paths)
    if not paths:
        return "no entries"
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


class ChunkCorrupt(IntegrityError):
    """{archive}: chunk {chunk} is damaged ({reason}); affects {affected}"""

    def __init__(self, *, archive: str, chunk: int, reason: str, paths: Iterable[str] = ()) -> None:
        self.paths = list(paths)
        super().__init__(archive=archive, chunk=chunk, reason=reason, affected=describe_paths(self.paths))


class EntryCorrupt(IntegrityError):
    """{archive}: {path}: content does not match its checksum ({reason})"""


class NotAllExtracted(LzaError):
    """{archive}: {missing} not extracted as archived ({why}); the other {extracted} extracted to {dest} (see the
    warnings above)"""

    def __init__(self, *, archive: str, dest: str, extracted: int, damaged: Iterable[str], refused: Iterable[str]) -> None:
        self.extracted, self.damaged, self.refused = extracted, list(damaged), list(refused)
        why = [f"{what}: {describe_paths(paths)}" for paths, what in (
            (self.damaged, "damaged in the archive"), (self.refused, "refused by the destination")) if paths]
        missing = len(self.damaged) + len(self.refused)
        super().__init__(archive=archive, dest=dest, missing=f"{missing} {'entry' if missing == 1 else 'entries'}",
                         why="; ".join(why), extracted=f"{extracted} {'was' if extracted == 1 else 'were'}")


class DamagedNotExtracted(NotAllExtracted, IntegrityError):
    __doc__ = NotAllExtracted.__doc__  # the same message, with the integrity exit code


class PathRefused(LzaError):
    """{path}: refused: {reason}"""


class ModelUnavailable(LzaError):
    """{reason}"""

    exit_code = EXIT_MODEL


class ClusterError(LzaError):
    """{reason}"""


class InputError(LzaError):
    """{path}: {reason}"""


class OutputError(LzaError):
    """{path}: {reason}"""


class SourcesChanged(LzaError):
    """{archive}: written, but {sources}; each is stored as it was read, or left out where it was gone or could not be
    read (see the warnings above)"""


class BenchmarkFailed(LzaError):
    """benchmark of {tool}: {reason}"""
