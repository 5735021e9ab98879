"""CLI layer: rich rendering on stderr (messages, progress bars) and JSON Lines on stdout."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress as RichBar, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..archive.progress import Progress

JSON_SCHEMA = "lza.cli/1"

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
stdout = Console(highlight=False, soft_wrap=True)


def emit_json(record_type: str, /, **fields: Any) -> None:
    """One JSON Lines record; every record names the schema and its type."""
    sys.stdout.write(json.dumps({"schema": JSON_SCHEMA, "type": record_type, **fields}, ensure_ascii=False) + "\n")


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

    def warn(self, text: str) -> None:
        stderr.print(f"[yellow]lza: warning:[/] {text}", markup=True, highlight=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
