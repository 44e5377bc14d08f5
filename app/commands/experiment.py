"""`rationale-audit experiment`: grids of runs, their report, and the study reproduction."""

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from app.commands.db import open_engine
from app.commands.train import say
from app.common import config_options, user_errors
from app.quiet import command_log, quiet_libraries
from training.archive_config import ArchiveRestoreConfig, ArchiveSaveConfig
from training.experiment_config import ExperimentReportConfig, ExperimentRunConfig
from training.report_comparison_config import ReportComparisonConfig
from training.reproduce_config import ReproduceConfig, ReproduceOptions

app = typer.Typer(help="Experiment grids (run, report) and `reproduce`, the whole study as "
                       "one command.", no_args_is_help=True)
console = Console(soft_wrap=True)


def _progress() -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console)


@app.command()
@user_errors
@config_options(ExperimentRunConfig)
def run(
    cfg: ExperimentRunConfig,
    grid_file: Path = typer.Argument(..., help="Grid YAML (see docs/training.md)."),
    verbose: bool = False,
    db: str | None = None,
) -> None:
    """Train and score every cell of a grid, skipping finished runs, then write the report.

    Example:

        rationale-audit experiment run experiments/grid-example.yaml
        rationale-audit experiment run grid.yaml --executor ray --max-concurrent 4
    """
    from annotation_db.command_config import ConfigError
    from training.grid.config import ExperimentGrid
    from training.grid.experiment import experiment_folder, run_experiment
    from training.grid.ray import Executor, ray_runner

    chosen = Executor(kind=cfg.executor, address=cfg.ray_address,
                      max_concurrent=cfg.max_concurrent)
    if chosen.kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise ConfigError("--executor ray needs Ray: install the project's ray "
                              "extra (docs/scale.md)") from exc
    grid = ExperimentGrid.load(grid_file)
    engine = open_engine(db)
    size = grid.size()
    console.print(f"grid {grid.name}: {size} on {chosen.kind}", highlight=False)
    log = experiment_folder(grid) / "libraries.log"
    with quiet_libraries(console, log, verbose), _progress() as progress:
        task = progress.add_task("runs", total=size["sft_runs"] + size["fewshot_runs"])
        out = run_experiment(engine, grid, on_stage=say, on_run=lambda: progress.advance(task),
                             runner=ray_runner(chosen))
    console.print(f"report: {out['folder']}/results.md", highlight=False)


@app.command("report")
@user_errors
@config_options(ExperimentReportConfig)
def report_(
    cfg: ExperimentReportConfig,
    grid_file: Path = typer.Argument(..., help="The grid YAML that was run."),
    db: str | None = None,
) -> None:
    """Rewrite a grid's tables, DeLong comparisons and figure from its finished runs.

    Example:

        rationale-audit experiment report experiments/grid-example.yaml
    """
    from training.grid.config import ExperimentGrid
    from training.grid.experiment import experiment_folder, report, saved_selection

    grid = ExperimentGrid.load(grid_file)
    out = Path(cfg.out) if cfg.out else experiment_folder(grid)
    result = report(open_engine(db), grid, saved_selection(grid), out)
    console.print(f"report: {result['folder']}/results.md", highlight=False)


@app.command()
@user_errors
@config_options(ReproduceConfig, ReproduceOptions)
def reproduce(
    cfg: ReproduceConfig,
    config: Path = Path(ReproduceConfig.DEFAULT_FILE),
    scale: str = "smoke",
    dry_run: bool = False,
    data_only: bool = False,
    verbose: bool = False,
    db: str | None = None,
) -> None:
    """Reproduce the study end to end: cohort → rationales → audit → export → grid → report.

    Every stage is reused when its output exists, so the command resumes after an
    interruption. Simulated raters stand in for clinicians unless the config names a
    campaign with real ratings; the report says which.

    Example:

        rationale-audit experiment reproduce --scale smoke
        rationale-audit experiment reproduce --scale cpu --dry-run
    """
    from annotation_db import migrate

    if dry_run:
        _print_budget(cfg, scale, _existing_database(db))
        return
    engine = open_engine(db, require_schema=False)
    migrate.upgrade(engine)  # one command from an empty database
    data_settings, grid = cfg.resolve(scale)
    with quiet_libraries(console, command_log(grid.runs_dir, f"reproduce-{scale}"), verbose):
        _reproduce(engine, cfg, scale, config, data_settings, grid, data_only)


def _reproduce(engine, cfg, scale: str, config: Path, data_settings, grid, data_only: bool):
    from training.reproduce import reproduce as run_reproduction

    if data_only:
        from training.study import prepare_dataset

        version, _ = prepare_dataset(engine, data_settings, exports_dir=cfg.exports_dir,
                                     cache_dir=grid.cache_dir, on_stage=say)
        console.print(f"dataset version {version.name} ({version.content_hash[:12]}) ready",
                      highlight=False)
        return
    size = grid.size()
    with _progress() as progress:
        task = progress.add_task("runs", total=size["sft_runs"] + size["fewshot_runs"])
        summary = run_reproduction(engine, cfg, scale, config_path=str(config), on_stage=say,
                                   on_run=lambda: progress.advance(task))
    console.print(f"wall time {summary['wall_seconds']} s; report: {summary['report']}",
                  highlight=False)


@app.command()
@user_errors
@config_options(ReportComparisonConfig)
def compare(
    cfg: ReportComparisonConfig,
    report_a: Path = typer.Argument(..., help="A report folder (results.csv and "
                                    "predictions.csv), e.g. docs/reports/reproduce-cpu."),
    report_b: Path = typer.Argument(..., help="Another, scored on the same test patients."),
) -> None:
    """Compare two reproductions scored on the same test patients, seeds as the unit.

    For every setting in both reports it gives B minus A of the mean test AUROC over
    seeds. For every rationale target it also gives how its gap to label-only moved:
    (label − target) in B minus the same in A. Intervals come from a bootstrap that draws
    each report's seeds, then the patients. This is the comparison of the two teachers
    (`cpu` and `cpu-balanced`). It reads only the committed files, so anyone can
    recompute it.

    Example:

        rationale-audit experiment compare docs/reports/reproduce-cpu \\
            docs/reports/reproduce-cpu-balanced --out reports/teachers
    """
    from training.report_comparison import compare as compare_reports
    from training.report_comparison import write

    result = compare_reports(report_a, report_b, n_resamples=cfg.n_resamples, seed=cfg.seed,
                             max_one_answer_share=cfg.max_one_answer_share)
    out = write(result, cfg, report_a, report_b)
    for gap in result["gaps"]:
        if gap["primary"] and gap.get("value") is not None:
            console.print(f"{gap['target']} ({gap['scoring']}): gap to label-only "
                          f"{gap['gap_a']:+.3f} in A, {gap['gap_b']:+.3f} in B; B − A "
                          f"{gap['value']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]",
                          highlight=False)
    console.print(f"comparison: {out}/compare.md", highlight=False)


archive_app = typer.Typer(
    help="Finished runs carried between machines: a folder of small files (rows, results, "
         "predictions, metrics; weights only if asked) that git can hold.",
    no_args_is_help=True)
app.add_typer(archive_app, name="archive")


@archive_app.command("save")
@user_errors
@config_options(ArchiveSaveConfig)
def archive_save(
    cfg: ArchiveSaveConfig,
    dataset: str = typer.Argument(..., help="Dataset version whose finished runs to archive."),
    db: str | None = None,
) -> None:
    """Write every finished run of a dataset version into an archive folder.

    A grid with `archive:` in its YAML does this after every run by itself.

    Example:

        rationale-audit experiment archive save study-cpu-v1 --to experiments/archive/mine
    """
    from training.archive import save

    out = save(open_engine(db), Path(cfg.to), dataset, weights=cfg.weights)
    console.print(f"{len(out['written'])} runs written, {len(out['unchanged'])} unchanged "
                  f"in {cfg.to}", highlight=False)


@archive_app.command("restore")
@user_errors
@config_options(ArchiveRestoreConfig)
def archive_restore(
    cfg: ArchiveRestoreConfig,
    folder: Path = typer.Argument(..., help="An archive folder written by `archive save`."),
    db: str | None = None,
) -> None:
    """Put archived runs into this database, so grids reuse them instead of training.

    The database must hold the same dataset version (same content hash): run the data
    stage first (`experiment reproduce --data-only`). Runs already here are left alone.

    Example:

        rationale-audit experiment archive restore experiments/archive/reproduce-cpu
    """
    from training.archive import restore

    out = restore(open_engine(db), folder, Path(cfg.runs_dir))
    console.print(f"{len(out['restored'])} runs restored, {len(out['present'])} already "
                  "here", highlight=False)
    for reason in out["skipped"]:
        console.print(f"skipped {reason}", highlight=False)


def _existing_database(db):
    """The chosen database when it exists and is reachable (a dry run creates nothing)."""
    from annotation_db.session import database_url

    url = database_url(db)
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        return None
    try:
        return open_engine(db, require_schema=False)
    except Exception:  # noqa: BLE001 - unreachable: the budget is then without reuse
        return None


def _print_budget(cfg, scale: str, engine=None) -> None:
    from rich.table import Table

    from training.reproduce import dry_run

    try:
        budget = dry_run(cfg, scale, engine)
    except Exception as exc:  # noqa: BLE001 - a database it cannot read: no reuse counted
        if engine is None:
            raise
        console.print(f"could not read what the database holds ({type(exc).__name__}); the "
                      "budget counts nothing as reused", highlight=False)
        budget = dry_run(cfg, scale, None)
    table = Table(title=f"scale {scale}: expected cost", title_justify="left")
    for column in ("stage", "runs", "reused", "examples", "tokens", "optimizer steps",
                   "generations", "minutes"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for s in budget["stages"]:
        table.add_row(s["stage"], str(s["runs"]), str(s.get("reused", 0)),
                      f"{s['examples']:,}", f"{s['tokens']:,.0f}",
                      f"{s['steps']:,}", f"{s['generations']:,}", f"{s['seconds'] / 60:.1f}")
    console.print(table)
    console.print("finished runs and stored results in this database and the scale's "
                  "archive are counted as reused (no cost)" if budget["reuse_counted"] else
                  "nothing reused: neither the database nor an archive holds this scale's "
                  "dataset version", highlight=False)
    hours = budget["total_seconds"] / 3600
    console.print(f"total ≈ {budget['total_seconds'] / 60:.0f} min ({hours:.2f} h); training "
                  f"and scoring alone ≈ {budget['model_seconds'] / 60:.1f} min. Speeds from "
                  f"{budget['throughput']['source']}", highlight=False)
    console.print(f"data stage measured here: "
                  f"{budget['measured_data_seconds_per_patient']:.3f} s per patient",
                  highlight=False)
    per_target = ", ".join(f"{t} {v['example_tokens']:.0f}" for t, v in
                           budget["tokens"]["targets"].items())
    console.print(f"tokens per example (measured on {budget['tokens']['sample_patients']} "
                  f"sample patients): {per_target}", highlight=False)
    if budget["pool_warning"]:
        console.print(f"warning: {budget['pool_warning']}", highlight=False)
