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


def _finished_sft_configs(engine: Engine, grid: ExperimentGrid) -> list[tuple[dict, str]]:
    """(stored config, where it is) of every finished SFT run this grid could meet: the
    database's, and its archive's (restored only once the runner starts)."""
    from sqlalchemy import select
    from sqlmodel import Session

    from annotation_db.models import RunStatus, TrainingRun

    out = []
    if engine is not None:
        with Session(engine) as session:
            for run in session.execute(select(TrainingRun).where(
                    TrainingRun.kind == "sft",
                    TrainingRun.status == RunStatus.finished)).scalars():
                out.append((run.config or {}, Path(run.run_dir).name))
    if grid.archive and Path(grid.archive).is_dir():
        for record in sorted(Path(grid.archive).glob("*/run.json")):
            try:
                stored = json.loads(record.read_text())
            except (OSError, ValueError):
                continue
            if stored.get("kind") == "sft":
                out.append((stored.get("config") or {}, f"{record.parent.name} (archive)"))
    return out


def check_preregistration(engine: Engine, grid: ExperimentGrid) -> None:
    """Refuse to start a grid with a reading rule when finished SFT runs of its cells (the
    same configuration in all but the digest) were made under another pre-registration
    digest: its rule or scoring settings changed after runs existed, and running on would
    silently train them again under the new one. The rule's ``amends`` lists the digests
    it knowingly replaces (the report prints them). Runs made under no rule are not
    counted: they are never read under a rule (the report refuses them), and a new grid
    that shares cells with a rule-less one is not an amendment."""
    from pydantic import ValidationError

    from training.sft_config import SFTRunConfig

    wanted = grid.preregistration()
    if wanted is None:
        return

    def key(config: SFTRunConfig) -> str:
        return json.dumps(config.identity_data(), sort_keys=True, default=str)

    mine = {key(c) for _, candidates in grid.sft_cells() for c in candidates}
    earlier: dict[str, list[str]] = {}
    for stored, where in _finished_sft_configs(engine, grid):
        made = stored.get("reading_rule")
        if not made or made == wanted or grid.reading.amended(made):
            continue
        try:
            config = SFTRunConfig.from_stored(stored)
        except ValidationError:
            continue
        if key(config.model_copy(update={"reading_rule": wanted})) in mine:
            earlier.setdefault(made, []).append(where)
    if earlier:
        found = "; ".join(f"{len(w)} under `{made}` ({', '.join(sorted(w)[:3])}"
                          + (", …" if len(w) > 3 else "") + ")"
                          for made, w in sorted(earlier.items()))
        raise runs.RunError(
            f"grid {grid.name!r}: finished runs of its cells were made under another "
            f"pre-registration digest than its own, `{wanted}` (its reading rule or scoring "
            f"settings changed after runs existed): {found}. Put the rule and scoring "
            "settings back to read those runs; or, to amend the rule, list the earlier "
            "digest under `reading.amends` (the grid's digest moves again with it; the "
            "report then says the rule was amended after runs existed, and every run is "
            "made again under the new digest)")


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
    that writes more of the report first. A grid whose reading rule or scoring settings
    changed after runs of its cells were finished is refused first
    (:func:`check_preregistration`)."""
    check_preregistration(engine, grid)  # before any run: a changed rule is refused
    if runner is None:
        from training.grid.local import run_grid as runner
    result = runner(engine, grid, on_stage=on_stage, on_run=on_run)
    selection = result.selection()
    folder = experiment_folder(grid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    out = report(engine, grid, selection, out_dir or folder)
    out["failure"] = runs.RunError(
        f"{len(result.failed)} of the grid's cells or scorings failed (the report in "
        f"{out['folder']} holds the others): " + "; ".join(
            f"{report_files.describe_failed(f.factors)}: {f.error}" for f in result.failed)) \
        if result.failed else None
    if out["failure"] and raise_failed:
        raise out["failure"]
    return out
