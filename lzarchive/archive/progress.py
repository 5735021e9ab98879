"""Container layer: the progress callback protocol; the library never prints, the CLI renders these calls."""

from __future__ import annotations


class Progress:
    """Receives progress from long operations. The base class ignores everything."""

    def start(self, task: str, total: int | None) -> None:
        """A phase begins; total is in bytes where known."""

    def advance(self, amount: int) -> None:
        """Work done since the last call, in the unit of the current phase."""

    def note(self, text: str) -> None:
        """A step the user would otherwise wait through without a word (compiling a model on first use)."""

    def warn(self, text: str) -> None:
        """Something the user should know that does not stop the operation (a skipped special file)."""

    def finish(self) -> None:
        """The current phase is complete."""


NULL_PROGRESS = Progress()
