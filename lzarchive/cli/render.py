"""CLI layer: rich rendering on stderr (messages, progress bars) and JSON Lines on stdout.

Names from an archive are the archive author's text: a newline in a file name would forge a line of output, an
escape sequence would reach the terminal. Human output shows them escaped (`printable`, `quoted`), as ls and git
do; --json keeps them exact.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress as RichBar, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.text import Text

from ..api import OutputError, Progress

JSON_SCHEMA = "lza.cli/1"

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


class StdoutUnwritable(OutputError):
    """standard output cannot be written: {reason}"""


class GuardedStdout:
    """sys.stdout (or its buffer) for the CLI: a write or flush that fails (a full disk, a device error, a closed
    descriptor) is StdoutUnwritable, reported as one line like any other error instead of a traceback. A reader that
    went away (BrokenPipeError) is left to the CLI, which ends quietly. `stream` None: the process started with
    stdout closed (`lza list a.lza >&-`), which only commands that write to it mind."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, data):
        if self._stream is None:
            raise StdoutUnwritable(reason="it is closed")
        return self._guarded(self._stream.write, data)

    def flush(self) -> None:
        if self._stream is not None:
            self._guarded(self._stream.flush)

    @property
    def buffer(self) -> GuardedStdout:
        return GuardedStdout(None if self._stream is None else self._stream.buffer)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    @staticmethod
    def _guarded(call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except UnicodeError:
            raise  # a bug (main() makes stdout escape what its encoding lacks), not the stream's fault
        except (OSError, ValueError) as exc:  # ValueError: stdout was closed
            raise StdoutUnwritable(reason=(exc.strerror or str(exc)).lower() if isinstance(exc, OSError) else
                                   "it is closed") from None


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", '"': '\\"'}


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (Python's surrogateescape): the byte
        return f"\\x{code - 0xDC00:02x}"
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def printable(text: str) -> str:
    """Text with every character a terminal would act on (controls, escape sequences, line and bidi marks) written
    as a backslash escape; printable text is unchanged."""
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def quoted(name: str) -> str:
    """A name for a listing: as it is if plain, else in double quotes with C escapes (as git quotes paths), so every
    name is one unambiguous line."""
    if name.isprintable() and "\\" not in name and '"' not in name:
        return name
    return '"' + "".join(c if c.isprintable() and c not in '\\"' else _escape(c) for c in name) + '"'


def say(text: str, *, out: Console | None = None) -> None:
    """One line of plain text (no markup, non-printables escaped) on stderr, or on `out`."""
    (out or stderr).print(Text(printable(text)), soft_wrap=True)


def emit_json(record_type: str, /, **fields: Any) -> None:
    """One JSON Lines record; every record names the schema and its type. Text as it is where stdout takes Unicode,
    else \\u escapes (the same JSON strings)."""
    unicode = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").startswith("utf")
    sys.stdout.write(json.dumps({"schema": JSON_SCHEMA, "type": record_type, **fields}, ensure_ascii=not unicode) + "\n")


# info's entry kinds ("dir", "hardlink") read as words
NOUNS = {"entry": "entries", "dir": "directories", "file": "files", "symlink": "symlinks", "hardlink": "hard links",
         "chunk": "chunks", "source file": "source files", "source path": "source paths"}


def counted(n: int, noun: str) -> str:
    """'1 entry', '3 entries', '1 directory' (for info's kind 'dir'): summaries in words."""
    singular = {"dir": "directory", "hardlink": "hard link"}.get(noun, noun)
    return f"{n} {singular if n == 1 else NOUNS[noun]}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """'1M', '256K', '65536' → bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    stripped = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (stripped[:-1], stripped[-1]) if stripped and stripped[-1] in units else (stripped, "")
    try:
        return int(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 65536, 256K, 1M)") from None


class BarProgress(Progress):
    """Progress bars on stderr; shown only on a terminal and when the user did not ask for quiet or JSON output."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and stderr.is_terminal
        self._bar: RichBar | None = None
        self._task = None

    def start(self, task: str, total: int | None) -> None:
        if not self.enabled:
            return
        self.finish()
        self._bar = RichBar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=stderr, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(task, total=total)

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def note(self, text: str) -> None:
        if self.enabled:
            stderr.print("lza: " + printable(text), soft_wrap=True, highlight=False, markup=False)

    def warn(self, text: str) -> None:
        warn(text)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def warn(text: str) -> None:
    stderr.print(Text.assemble(("lza: warning:", "yellow"), " " + printable(text)), soft_wrap=True)
