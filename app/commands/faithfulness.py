"""`rationale-audit faithfulness`: whether the evidence a rationale cites drives a prediction."""

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlmodel import Session

from annotation_db.faithfulness_report import report as build_report
from annotation_db.faithfulness_report import to_html, to_json, to_markdown
from annotation_db.faithfulness_report_config import FaithfulnessReportConfig
from app.commands.db import open_engine
from app.common import config_options, user_errors
from app.quiet import command_log, quiet_libraries
from training.evidence_ablation import run_ablation
from training.evidence_ablation_config import FaithfulnessConfig

app = typer.Typer(help="Faithfulness measured by evidence ablation (ERASER's comprehensiveness "
                       "and sufficiency against a random baseline), beside the clinicians' "
                       "and the judge's faithfulness scores.", no_args_is_help=True)
console = Console(soft_wrap=True)
FORMATS = {"md": to_markdown, "html": to_html, "json": to_json}


@app.command("run")
@user_errors
@config_options(FaithfulnessConfig)
def run(cfg: FaithfulnessConfig, verbose: bool = False, db: str | None = None) -> None:
    """Score every rationale of a generation run with its cited evidence removed, kept
    alone, and as many random uncited items removed.

    The reader is the bundled base model unless --scorer names another model or
    --scorer-run a trained adapter (say, a label-only run: does the evidence the teacher
    cited drive the student's prediction?). Scores are stored per rationale with the
    scorer's identity; running the same command again scores only what is missing.

    Example:

        rationale-audit faithfulness run --run 1
        rationale-audit faithfulness run --run 1 --scorer-run 12 --draws 10
    """
    engine = open_engine(db)
    progress = Progress(TextColumn("ablating"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    with quiet_libraries(console, command_log("runs", "faithfulness"), verbose), progress:
        task = progress.add_task("ablate", total=None)
        summary = run_ablation(engine, cfg, on_progress=lambda done, total: progress.update(
            task, completed=done, total=total))
    rate = summary.scored / summary.seconds if summary.seconds else 0.0
    console.print(f"faithfulness run {summary.run_id}: {summary.scored} rationales scored "
                  f"({summary.prompts} prompts, {summary.distinct_prompts} distinct), "
                  f"{summary.skipped} already done"
                  + (f" · {summary.seconds:.1f} s, {rate:.2f} rationales/s" if summary.seconds
                     else ""), highlight=False)


@app.command()
@user_errors
@config_options(FaithfulnessReportConfig)
def report(cfg: FaithfulnessReportConfig, db: str | None = None) -> None:
    """The distributions, the share of rationales whose cited evidence beats the random
    baseline (Wilson CI), and Spearman's ρ with the clinicians' and the judge's
    faithfulness scores (bootstrap CI); the same per claim.

    Example:

        rationale-audit faithfulness report --campaign pilot --format html
    """
    with Session(open_engine(db)) as session:
        result = build_report(session, run_id=cfg.run, campaign=cfg.campaign,
                              margin=cfg.margin, judge_run=cfg.judge_run,
                              include_simulated=cfg.include_simulated,
                              replicates=cfg.replicates)
    out = Path(cfg.out or f"faithfulness.{cfg.format}")
    out.write_text(FORMATS[cfg.format](result), encoding="utf-8")
    beats = result["beats_baseline"]
    if beats.get("n"):
        console.print(f"{beats['share']:.1%} of {beats['n']} rationales beat the random "
                      f"baseline by more than {cfg.margin:g} (95% CI {beats['ci95'][0]:.1%}–"
                      f"{beats['ci95'][1]:.1%})", highlight=False)
    console.print(f"Report: {out}", highlight=False)
