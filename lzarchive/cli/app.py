"""CLI layer: the typer application, its one error handler (errors → exit codes) and the entry point."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import api
from ..api import EXIT_INTERRUPTED, LzaError
from . import bench, cat, extract, inspect, model, pack, salvage, verify
from .render import GuardedStdout, StdoutUnwritable, say, stdout, warn


class Terminated(KeyboardInterrupt):
    """A request to stop (SIGTERM: kill, timeout, a service manager; SIGHUP: the terminal closed), raised wherever the
    command is, so that it stops as after Ctrl-C: temporary files removed, nothing half-written left behind."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> None:
    """SIGINT raises KeyboardInterrupt, SIGTERM and SIGHUP Terminated, wherever the command is (but in the JIT)."""
    if _inside_the_jit(frame):
        return _deliver_again(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    for other in (signal.SIGTERM, signal.SIGHUP):  # a second request must not cut the cleanup short
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def fail(exc: LzaError) -> None:
    say(f"lza: error: {exc}")  # names from the archive are escaped: one line, nothing for the terminal to act on
    if isinstance(exc, StdoutUnwritable):  # what is still buffered for it goes nowhere, not into a second error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # no descriptor to redirect: nothing is buffered either
            pass


def _inside_the_jit(frame) -> bool:
    """Whether numba is compiling or loading a kernel: an exception raised there is swallowed by the ctypes callback
    it lands in (the command then ran on to its end, exit 0) or unwinds through LLVM's state (a crash at exit)."""
    while frame is not None:
        if any(f"{os.sep}{package}{os.sep}" in frame.f_code.co_filename for package in ("numba", "llvmlite")):
            return True
        frame = frame.f_back
    return False


def _deliver_again(signum: int) -> None:
    """The same signal again shortly, until it arrives outside the JIT."""
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
    timer.daemon = True  # never what keeps the process alive
    timer.start()


class LzaGroup(TyperGroup):
    """Maps library errors to one clear line and their exit codes, for every command in one place."""

    def invoke(self, ctx):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a stdout that cannot take the output fails here, as an error, not at exit
            return result
        except LzaError as exc:
            fail(exc)
            raise typer.Exit(exc.exit_code) from None
        except Terminated as exc:
            say(f"lza: terminated by {signal.Signals(exc.signum).name}")
            raise typer.Exit(128 + exc.signum) from None  # the shell's code for a death by that signal
        except KeyboardInterrupt:
            say("lza: interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            sys.stderr.close()  # the reader of our stdout went away (lza cat | head): not an error
            raise typer.Exit(0) from None


app = typer.Typer(
    cls=LzaGroup,
    name="lza",
    help="Archive files with a language model: compact, verifiable, random access, safe to extract.\n\n"
    "Examples:\n\n"
    "  lza pack docs/ -o docs.lza          pack a tree\n\n"
    "  lza list -l docs.lza                see what is inside\n\n"
    "  lza cat docs.lza docs/README.md     read one file without extracting\n\n"
    "  lza verify docs.lza                 decode everything and check every checksum\n\n"
    "  lza extract docs.lza -C restored/   extract safely\n\n"
    "  lza salvage cut.lza -o cut.bin      recover the bytes of an archive whose index is lost\n\n"
    "  lza bench ~/notes                   estimate lza against xz and zstd on your own files\n\n"
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 integrity failure, 10 not an lza archive, "
    "11 unsupported version or feature, 12 model missing or mismatched, 130 interrupted (Ctrl-C), "
    "143 terminated (SIGTERM; 129 SIGHUP): partial output is removed either way.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(asked: bool) -> None:
    if asked:
        readable = " and ".join(f"{major}.0-{major}.{minor}" for major, minor in sorted(api.READABLE_FORMATS.items()))
        say(f"lza {api.VERSION}: reads archive formats {readable}; writes {api.FORMAT_VERSION}.x, the oldest minor "
            f"version that holds what it stores (format 1 with pack --format 1)", out=stdout)
        raise typer.Exit()


@app.callback()
def options(version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                                  help="Show lza's version and the archive formats it reads and writes.")] = False) -> None:
    pass


for command in (pack, extract, inspect, verify, cat, salvage, model, bench):
    command.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The library's warnings (a read-only cache, say) as one line each, not Python's file:line form."""
    warn(str(message))


def main() -> None:
    warnings.showwarning = _show_warning
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(signum) != signal.SIG_IGN:  # nohup's ignored SIGHUP stays ignored
            signal.signal(signum, _stop)
    if sys.stdout is not None:  # names the encoding (a Latin-1 or ASCII locale) cannot write come out escaped
        sys.stdout.reconfigure(errors="backslashreplace")
    sys.stdout = GuardedStdout(sys.stdout)
    try:
        app()
    except StdoutUnwritable as exc:  # outside a command: its --help
        fail(exc)
        sys.exit(exc.exit_code)
