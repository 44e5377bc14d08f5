"""A quiet console: the libraries' output goes to the named log, the command's to the user."""

import logging
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from app.quiet import libraries_to_log, quiet_libraries

SCRIPT = """
import logging, os, sys
from pathlib import Path
from rich.console import Console
from app.quiet import quiet_libraries

console = Console(soft_wrap=True)  # as the commands make it
with quiet_libraries(console, Path(sys.argv[1]), verbose=sys.argv[2] == "1"):
    console.print("✓ stage done")
    logging.getLogger("vllm.engine").warning("engine start-up noise")
    os.write(2, b"C++ layer warning\\n")   # below Python: only the descriptor sees it
    print("a library's print")
"""


def _run(tmp_path: Path, verbose: bool) -> tuple[str, str]:
    log = tmp_path / ("verbose.log" if verbose else "quiet.log")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log), "1" if verbose else "0"],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr, log.read_text() if log.exists() else ""


def test_a_process_prints_its_stages_and_logs_the_libraries(tmp_path):
    terminal, log = _run(tmp_path, verbose=False)
    assert terminal.splitlines() == [
        f"library output (vLLM, transformers, torch): {tmp_path / 'quiet.log'}", "✓ stage done"]
    for noise in ("engine start-up noise", "C++ layer warning", "a library's print"):
        assert noise in log


def test_verbose_leaves_everything_on_the_terminal(tmp_path):
    terminal, log = _run(tmp_path, verbose=True)
    assert log == "" and "library output" not in terminal
    for line in ("✓ stage done", "engine start-up noise", "C++ layer warning"):
        assert line in terminal


def test_under_a_capturing_runner_the_loggers_are_redirected_and_output_still_captured(
        tmp_path):
    import typer

    app = typer.Typer()
    console = Console()

    @app.command()
    def stage() -> None:
        with libraries_to_log(console, tmp_path / "run.log"):
            console.print("✓ captured")
            logging.getLogger("transformers.modeling").warning("weights loaded")

    library = logging.getLogger("transformers")
    before = (library.propagate, list(library.handlers))
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 0 and "✓ captured" in result.output
    assert "weights loaded" not in result.output
    assert "weights loaded" in (tmp_path / "run.log").read_text()
    # and the loggers are as they were afterwards
    assert (library.propagate, library.handlers) == before


def test_the_log_path_is_printed_once_and_only_when_quiet(tmp_path):
    console = Console(record=True, width=200)
    with quiet_libraries(console, tmp_path / "a.log"):
        pass
    with quiet_libraries(console, tmp_path / "b.log", verbose=True):
        pass
    text = console.export_text()
    assert text.count("library output") == 1 and "a.log" in text
