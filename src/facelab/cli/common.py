"""Options every command shares, accepted before the command and after it alike.

`facelab -w W extract src` and `facelab extract src -w W` mean the same: the root callback
stores the early values; the `command` decorator adds the same options to each command and
lets a value given there win. It also turns user errors into one line and an exit code.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer

from facelab.cli.ui import RichReporter, err, error_line
from facelab.errors import FacelabError, os_error_message
from facelab.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])

CONSENT = ("Use only footage of people who consented to having their face used and "
           "replaced. Everything facelab merges is marked as synthetic.")
DEFAULT_WORKSPACE = Path("workspace")
WORKSPACE_HELP = "Workspace folder holding data_src/, data_dst/, model/ (default: ./workspace)."
QUIET_HELP = "No progress bars: only errors and the final summary."
VERBOSE_HELP = "More detail (settings chosen, codecs, timings)."


@dataclass
class State:
    workspace: Path | None = None
    quiet: bool = False
    verbose: bool = False

    @property
    def ws(self) -> Workspace:
        return Workspace(self.workspace or DEFAULT_WORKSPACE)

    @property
    def reporter(self) -> RichReporter:
        return RichReporter(quiet=self.quiet, verbose=self.verbose)


def workspace_option() -> Any:
    return typer.Option(None, "-w", "--workspace", help=WORKSPACE_HELP, show_default=False)


def quiet_option() -> Any:
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def verbose_option() -> Any:
    return typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)


def root_state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


_COMMON = [
    inspect.Parameter("facelab_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
    inspect.Parameter("workspace", inspect.Parameter.KEYWORD_ONLY,
                      default=workspace_option(), annotation=Path | None),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY,
                      default=quiet_option(), annotation=bool),
    inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY,
                      default=verbose_option(), annotation=bool),
]


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register `fn` on `app` with the common options; `fn` reads them via `state()`."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)

        @functools.wraps(fn)
        def wrapper(*args: Any, facelab_ctx: typer.Context, workspace: Path | None = None,
                    quiet: bool = False, verbose: bool = False, **kw: Any) -> Any:
            st = root_state(facelab_ctx)
            _current.append(st)
            st.workspace = workspace or st.workspace
            st.quiet = quiet or st.quiet
            st.verbose = verbose or st.verbose
            try:
                return fn(*args, **kw)
            except FacelabError as e:
                error_line(str(e))
                cause = e.__cause__  # the underlying error on demand (a worker's traceback: no)
                if (st.verbose and cause is not None
                        and type(cause).__name__ != "_RemoteTraceback"):
                    err.print(f"  caused by {type(cause).__name__}: {cause}",
                              highlight=False, markup=False)
                raise typer.Exit(e.exit_code) from None
            except OSError as e:  # the disk itself (full, read-only, ...), from any process
                message = os_error_message(e)
                if message is None:
                    raise
                error_line(message)
                if st.verbose:
                    err.print(f"  caused by {type(e).__name__}: {e}", highlight=False,
                              markup=False)
                raise typer.Exit(1) from None
            finally:
                _current.pop()

        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[*sig.parameters.values(), *_COMMON])
        kwargs.setdefault("epilog", CONSENT)
        kwargs.setdefault("help", paragraphs(fn.__doc__ or ""))
        kwargs.setdefault("short_help", summary(kwargs["help"]))
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


_current: list[State] = []


def paragraphs(doc: str) -> str:
    """A docstring's paragraphs with their hard line breaks joined, so the command list and
    the command's help wrap them cleanly to the terminal."""
    parts = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in parts)


def summary(help: str) -> str:
    """A command's line in its group's list: its help's whole first paragraph (Click would
    cut it to the width, mid-sentence)."""
    return help.split("\n\n", 1)[0].strip()


def group(help: str) -> typer.Typer:
    """A command group whose help, like every command's, carries the consent line."""
    return typer.Typer(help=help, short_help=summary(help), epilog=CONSENT,
                       no_args_is_help=True)


def state() -> State:
    """The options of the command now running."""
    return _current[-1]


@contextlib.contextmanager
def stop_on_signals(requests: bool = False) -> Iterator[threading.Event]:
    """Ctrl-C / SIGTERM set the event: training saves and the command ends cleanly. With
    `requests`, the event is a training `RunControl` and SIGUSR1 asks for a save now,
    SIGUSR2 for the preview now, the run going on (the studio's S and P keys; `kill -USR1
    PID` from a shell)."""
    stop = threading.Event()
    handlers: dict[int, Callable[..., None]] = {
        signal.SIGINT: lambda *_: stop.set(), signal.SIGTERM: lambda *_: stop.set()}
    if requests and hasattr(signal, "SIGUSR1"):  # POSIX
        from facelab.train.loop import RunControl  # PyTorch: only for a command that trains

        control = stop = RunControl()
        handlers[signal.SIGUSR1] = lambda *_: control.save_now.set()
        handlers[signal.SIGUSR2] = lambda *_: control.preview_now.set()
    old = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
