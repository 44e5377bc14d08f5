"""`rationale-audit judge`: an LLM judge on a campaign's rationales, and how far to trust it."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlmodel import Session

from annotation_db.judges import calibration_report, to_markdown
from app.commands.db import open_engine
from app.common import DbOption, VerboseOption, config_options, user_errors
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
def run(
    cfg: JudgeConfig,
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="OPENAI_API_KEY", show_default=False,
        help="Bearer token for a --server-url that needs one (or OPENAI_API_KEY); never "
        "stored or printed."),
    verbose: VerboseOption = False,
    db: DbOption = None,
) -> None:
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
def report(
    campaign: str = typer.Option(..., help="Campaign name."),
    run_id: int | None = typer.Option(None, "--run", help="Judge run id (default: the newest)."),
    epsilon: float = typer.Option(
        0.2, help="The alt-test's cost-benefit margin ε: 0.2 for experts, 0.15 for trained "
        "raters, 0.1 for crowd workers (Calderon et al. 2025)."),
    q: float = typer.Option(0.05, help="False discovery rate over clinicians (BY)."),
    min_items: int = typer.Option(30, help="Items per clinician the t-test needs."),
    include_simulated: bool = typer.Option(False, help="Compare with simulated raters too."),
    format: str = typer.Option("md", "--format", help="md or json."),
    out: Path | None = typer.Option(None, help="Output file (default judge-calibration.FORMAT)."),
    replicates: int = typer.Option(1000, help="Bootstrap resamples of items."),
    db: DbOption = None,
) -> None:
    """Judge vs panel: weighted κ per clinician and vs consensus, α with and without the
    judge (the clinicians' own α is the ceiling), and the alt-test. The judge is labelled
    "may pre-screen" only when the alt-test passes on every dimension.

    Example:

        rationale-audit judge report --campaign pilot --epsilon 0.2
    """
    if format not in ("md", "json"):
        raise typer.BadParameter(f"--format must be md or json, not {format!r}")
    with Session(open_engine(db)) as session:
        result = calibration_report(session, campaign, run_id=run_id, epsilon=epsilon, q=q,
                                    min_items=min_items, include_simulated=include_simulated,
                                    replicates=replicates)
    text = json.dumps(result, indent=2) if format == "json" else to_markdown(result)
    out = out or Path(f"judge-calibration.{format}")
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
def estimate(
    campaign: str = typer.Option(..., help="Campaign name."),
    run_id: int | None = typer.Option(
        None, "--run", help="Judge run id (default: the one an escalation or adaptive campaign "
        "was created with, else the campaign's newest)."),
    target_ci_width: float | None = typer.Option(
        None, min=0.0001, help="Also plan: rated items each quantity needs for a CI this wide, "
        "with the judge and without."),
    target_agreement: float = typer.Option(
        0.9, min=0.5, max=0.999, help="Trust or escalate: the agreement with the panel's "
        "approval decision the judge must be certified to reach on the items it is trusted on."),
    delta: float = typer.Option(0.05, min=0.001, max=0.5,
                                help="Trust or escalate: the certificate's error level."),
    include_simulated: bool = typer.Option(False, help="Count simulated raters too."),
    format: str = typer.Option("md", "--format", help="md or json."),
    out: Path | None = typer.Option(None, help="Output file (default judge-estimates.FORMAT)."),
    db: DbOption = None,
) -> None:
    """Campaign quantities (mean accuracy and faithfulness, share approved, share of claims
    not in the record) from clinicians alone and with the judge (prediction-powered
    inference, PPI++), the ratings a target CI width needs either way, and the share of
    items the judge can be trusted on (trust or escalate, with a held-out check).

    Example:

        rationale-audit judge estimate --campaign pilot --target-ci-width 0.2
    """
    from annotation_db.judge_estimates import estimates
    from annotation_db.judge_estimates import to_markdown as estimates_markdown

    if format not in ("md", "json"):
        raise typer.BadParameter(f"--format must be md or json, not {format!r}")
    with Session(open_engine(db)) as session:
        result = estimates(session, campaign, run_id=run_id, include_simulated=include_simulated,
                           target_width=target_ci_width, target_agreement=target_agreement,
                           delta=delta)
    text = json.dumps(result, indent=2) if format == "json" else estimates_markdown(result)
    out = out or Path(f"judge-estimates.{format}")
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
