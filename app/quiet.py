"""A quiet console: the libraries' own output goes to a log file, ours to the terminal.

vLLM and transformers log at INFO, torch's C++ layer prints warnings, and progress
bars for weight loading go to stderr — about thirty lines per engine start. While a
command's stages run, :func:`libraries_to_log` sends the libraries' Python loggers to
a log file and, when the process writes to real file descriptors, points stdout and
stderr (descriptors 1 and 2, so C++ output is caught too) at it as well, keeping the
command's rich console on the terminal. ``--verbose`` leaves everything on the
terminal. Under a harness that captures ``sys.stdout`` (Typer's ``CliRunner``) the
descriptors are left alone, so what the command prints is still captured.
"""

import datetime as dt
import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console

LIBRARY_LOGGERS = ("vllm", "transformers", "torch", "peft", "accelerate", "datasets", "trl",
                   "xgrammar", "httpx", "huggingface_hub", "filelock")


def command_log(runs_dir: str | Path, command: str) -> Path:
    """Where a command's library output goes: ``<runs_dir>/logs/<command>-<UTC time>.log``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(runs_dir) / "logs" / f"{command}-{stamp}.log"


@contextmanager
def libraries_to_log(console: Console, log_path: Path, verbose: bool = False) -> Iterator[Path]:
    """Within the block, everything but ``console`` writes to ``log_path`` (appended)."""
    if verbose:
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:  # opened first: a failure here changes nothing
        with _loggers_to(log), _descriptors_to(log, console):
            yield log_path


def quiet_libraries(console: Console, log_path: Path, verbose: bool = False):
    """:func:`libraries_to_log`, after telling the user, once, where that output goes."""
    if not verbose:
        console.print(f"library output (vLLM, transformers, torch): {log_path}",
                      highlight=False)
    return libraries_to_log(console, log_path, verbose)


@contextmanager
def _loggers_to(log: TextIO) -> Iterator[None]:
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate


def _writes_to_descriptors() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


@contextmanager
def _descriptors_to(log: TextIO, console: Console) -> Iterator[None]:
    if not _writes_to_descriptors():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_out, terminal_err = os.dup(1), os.dup(2)
    previous_file = console.file
    terminal = os.fdopen(os.dup(terminal_out), "w", buffering=1)
    console.file = terminal
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(terminal_out, 1)
        os.dup2(terminal_err, 2)
        os.close(terminal_out)
        os.close(terminal_err)
        console.file = previous_file
        terminal.close()


class StageStatus:
    """A spinner with a message, as ``console.status`` draws, that leaves ``sys.stdout``
    and ``sys.stderr`` alone. rich's own status swaps them for proxies that print
    through the console on a terminal, which would send the libraries' output back
    to the terminal inside :func:`libraries_to_log`."""

    def __init__(self, console: Console, message: str):
        from rich.live import Live
        from rich.spinner import Spinner

        self._spinner = Spinner("dots", message)
        self._live = Live(self._spinner, console=console, transient=True,
                          redirect_stdout=False, redirect_stderr=False)

    def update(self, message: str) -> None:
        self._spinner.update(text=message)

    def __enter__(self) -> "StageStatus":
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)
