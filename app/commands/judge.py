"""`rationale-audit judge`: an LLM judge on a campaign's rationales, and how far to trust it."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlmodel import Session

from annotation_db.judge_estimates_config import JudgeEstimateConfig
from annotation_db.judges import calibration_report, to_markdown
from annotation_db.judges_config import JudgeReportConfig
from app.commands.db import open_engine
from app.common import config_options, user_errors
from app.quiet import command_log, quiet_libraries
from app.views import load_guidelines
from generation.judge import run_judge
from generation.judge_config import JudgeConfig

app = typer.Typer(help="An LLM judge scored with the clinicians' rubric, calibrated against "
                       "the panel (weighted κ, Krippendorff's α, the alt-test).",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("run")
@user_errors
@config_options(JudgeConfig)
def run(cfg: JudgeConfig, api_key: str | None = None, verbose: bool = False,
        db: str | None = None) -> None:
    """Score every rationale of a campaign with a model given the clinicians' guidelines.

    Judge scores are stored apart from clinician ratings: exports and the agreement report
    leave them out, and annotators never see them. Re-running resumes the same run.

    Example:

        rationale-audit judge run --campaign pilot
        rationale-audit judge run --campaign pilot --server-url http://127.0.0.1:8000/v1
    """
    engine = open_engine(db)
    with Session(engine) as session:
        from annotation_db.campaigns import get_campaign

        version = get_campaign(session, cfg.campaign).guidelines_version
    progress = Progress(TextColumn("judging"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    with quiet_libraries(console, command_log("runs", "judge"), verbose), progress:
        task = progress.add_task("judge", total=None)
        summary = run_judge(engine, cfg, load_guidelines(version), api_key=api_key,
                            on_progress=lambda n: progress.update(task, advance=n))
    console.print(
        f"judge run {summary.run_id}: {summary.scored} scored ({summary.failed} unparsable, "
        f"{summary.with_probabilities} with score probabilities), {summary.skipped} already "
        f"done" + (f" · {summary.seconds:.1f} s" if summary.seconds else ""), highlight=False)


@app.command()
@user_errors
@config_options(JudgeReportConfig)
def report(cfg: JudgeReportConfig, db: str | None = None) -> None:
    """Judge vs panel: weighted κ per clinician and vs consensus, α with and without the
    judge (the clinicians' own α is the ceiling), and the alt-test. The judge is labelled
    "may pre-screen" only when the alt-test passes on every dimension.

    Example:

        rationale-audit judge report --campaign pilot --epsilon 0.2
    """
    with Session(open_engine(db)) as session:
        result = calibration_report(session, cfg.campaign, run_id=cfg.run, epsilon=cfg.epsilon,
                                    q=cfg.q, min_items=cfg.min_items,
                                    include_simulated=cfg.include_simulated,
                                    replicates=cfg.replicates)
    text = json.dumps(result, indent=2) if cfg.format == "json" else to_markdown(result)
    out = Path(cfg.out or f"judge-calibration.{cfg.format}")
    out.write_text(text, encoding="utf-8")
    for d in result["dimensions"]:
        alt = d.get("alt_test") or {}
        kappa = (d.get("kappa_vs_consensus") or {}).get("kappa")
        console.print(f"{d['dimension']}: κ vs consensus "
                      f"{'—' if kappa is None else f'{kappa:.3f}'}, alt-test winning rate "
                      f"{alt.get('winning_rate', float('nan')):.2f}", highlight=False)
    console.print(result["verdict"], highlight=False)
    console.print(f"Report: {out}", highlight=False)


@app.command()
@user_errors
@config_options(JudgeEstimateConfig)
def estimate(cfg: JudgeEstimateConfig, db: str | None = None) -> None:
    """Campaign quantities (mean accuracy and faithfulness, share approved, share of claims
    not in the record) from clinicians alone and with the judge (prediction-powered
    inference, PPI++), the ratings a target CI width needs either way, and the share of
    items the judge can be trusted on (trust or escalate, with a held-out check).

    Example:

        rationale-audit judge estimate --campaign pilot --target-ci-width 0.2
    """
    from annotation_db.judge_estimates import estimates
    from annotation_db.judge_estimates import to_markdown as estimates_markdown

    with Session(open_engine(db)) as session:
        result = estimates(session, cfg.campaign, run_id=cfg.run,
                           include_simulated=cfg.include_simulated,
                           target_width=cfg.target_ci_width,
                           target_agreement=cfg.target_agreement, delta=cfg.delta)
    text = json.dumps(result, indent=2) if cfg.format == "json" else estimates_markdown(result)
    out = Path(cfg.out or f"judge-estimates.{cfg.format}")
    out.write_text(text, encoding="utf-8")
    for name, q in result["quantities"].items():
        if q.get("computable") and q.get("prediction_powered"):
            ratio = q.get("width_ratio")
            console.print(f"{name}: clinicians {q['clinicians_only']['estimate']:.3f}, with the "
                          f"judge {q['prediction_powered']['estimate']:.3f} (CI width ratio "
                          f"{'—' if ratio is None else f'{ratio:.2f}'})", highlight=False)
    if not result["random_subset"]:
        console.print(result["validity"], highlight=False)
    console.print(f"Report: {out}", highlight=False)
