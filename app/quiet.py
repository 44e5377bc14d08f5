"""A quiet console: the libraries' own output goes to a log file, ours to the terminal.

vLLM and transformers log at INFO, torch's C++ layer prints warnings, and progress
bars for weight loading go to stderr — about thirty lines per engine start. While a
command's stages run, :func:`libraries_to_log` points the process's stdout and
stderr (file descriptors 1 and 2, so C++ output is caught too) at a log file and
keeps the command's rich console on the terminal. ``--verbose`` leaves everything
on the terminal.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console


@contextmanager
def libraries_to_log(console: Console, log_path: Path, verbose: bool = False) -> Iterator[Path]:
    """Within the block, everything but ``console`` writes to ``log_path`` (appended)."""
    if verbose:
        yield log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:  # opened first: a failure here changes nothing
        sys.stdout.flush()
        sys.stderr.flush()
        terminal_out, terminal_err = os.dup(1), os.dup(2)
        previous_file = console.file
        terminal = os.fdopen(os.dup(terminal_out), "w", buffering=1)
        console.file = terminal
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield log_path
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
