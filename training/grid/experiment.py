"""The "run a grid" stage: run it (either runner), keep its selection, write its report.

Called by the CLI, the job runner and ``experiment reproduce`` alike. The report is
made from the collected rows (:mod:`.results`) and written without the database
(:mod:`.report`), so ``experiment report`` rebuilds it from finished or archived runs.
"""

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from training import runs
from training.grid import report_files
from training.grid.cells import GridResult
from training.grid.config import ExperimentGrid
from training.grid.results import collect, references


def experiment_folder(grid: ExperimentGrid) -> Path:
    """Where a grid's ``selection.json`` and (by default) its report live."""
    return Path(grid.runs_dir) / "experiments" / grid.name


def saved_selection(grid: ExperimentGrid) -> dict:
    """The selection a finished :func:`run_experiment` of ``grid`` wrote."""
    path = experiment_folder(grid) / "selection.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run the grid first "
                                "(`rationale-audit experiment run GRID`)")
    return json.loads(path.read_text())


def report(engine: Engine, grid: ExperimentGrid, selection: dict, out_dir: str | Path) -> dict:
    """Write results.csv/.md, comparisons.csv, predictions.csv and the figure."""
    every_row = collect(engine, grid, selection)
    own = [r for r in every_row if not r.extra_scoring]  # what the references pair with
    refs = references(engine, grid, own) if grid.baseline else []
    return report_files.write(grid, every_row, refs, selection, Path(out_dir))


def run_experiment(engine: Engine, grid: ExperimentGrid, *, out_dir: str | Path | None = None,
                   on_stage: Callable[[str], None] | None = None,
                   on_run: Callable[[], None] | None = None,
                   runner: Callable[..., GridResult] | None = None,
                   raise_failed: bool = True) -> dict:
    """Every run (finished ones reused), its ``selection.json``, then its report in
    ``out_dir`` (default :func:`experiment_folder`). ``runner`` executes the runs
    (default :func:`training.grid.local.run_grid`; :func:`training.grid.ray.ray_runner`
    makes them Ray tasks); the cells it reports failed are listed in the report, left
    out of its tables, and raised after it (the CLI exits non-zero). With
    ``raise_failed=False`` the error is returned instead (``failure``), for a caller
    that writes more of the report first."""
    if runner is None:
        from training.grid.local import run_grid as runner
    result = runner(engine, grid, on_stage=on_stage, on_run=on_run)
    selection = result.selection()
    folder = experiment_folder(grid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    out = report(engine, grid, selection, out_dir or folder)
    out["failure"] = runs.RunError(
        f"{len(result.failed)} of the grid's cells failed (the report in "
        f"{out['folder']} holds the others): " + "; ".join(
            f"{f.factors.get('target', 'few-shot')} seed {f.factors.get('seed')}: "
            f"{f.error}" for f in result.failed)) if result.failed else None
    if out["failure"] and raise_failed:
        raise out["failure"]
    return out
