"""`rationale-audit agreement`: inter-rater agreement and annotator-quality reports."""

from pathlib import Path

import typer
from rich.console import Console
from sqlmodel import Session

from annotation_db import judges
from annotation_db.agreement import agreement_report
from annotation_db.agreement_config import AgreementReportConfig
from annotation_db.agreement_report import to_html, to_json, to_markdown
from annotation_db.ratings import (
    RatingsError,
    default_dimensions,
    load_campaign_ratings,
    load_ratings_csv,
)
from app.commands.db import open_engine
from app.common import config_options, user_errors

app = typer.Typer(help="Inter-rater agreement (Krippendorff's α with CIs, Gwet's AC1/AC2, κ).",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
@user_errors
@config_options(AgreementReportConfig)
def report(cfg: AgreementReportConfig, db: str | None = None) -> None:
    """Write an agreement report for a campaign or a ratings CSV.

    Example:

        rationale-audit agreement report --campaign pilot --format html
        rationale-audit agreement report --ratings-csv ratings.csv --format md --out agreement.md
    """
    if (cfg.campaign is None) == (cfg.ratings_csv is None):
        raise typer.BadParameter("give exactly one of --campaign or --ratings-csv")
    gold: set[str] = set()
    if cfg.ratings_csv is not None:
        ratings_csv = Path(cfg.ratings_csv)
        ratings = load_ratings_csv(ratings_csv)
        design = {"source": str(ratings_csv)}
        title = f"Agreement report: {ratings_csv.name}"
    else:
        ratings, gold, design = _campaign_ratings(cfg, db)
        title = f"Agreement report: campaign {cfg.campaign}"
    dimensions = default_dimensions({r.dimension for r in ratings})
    with console.status(f"computing agreement ({cfg.replicates} bootstrap resamples)"):
        result = agreement_report(ratings, dimensions, replicates=cfg.replicates,
                                  seed=cfg.seed, gold_items=gold, design=design)
        text = {"json": to_json, "md": lambda r: to_markdown(r, title),
                "html": lambda r: to_html(r, title)}[cfg.format](result)
    out = Path(cfg.out or f"agreement.{cfg.format}")
    out.write_text(text, encoding="utf-8")
    for section in result["dimensions"]:
        console.print(f"{section['dimension']}: {_alpha_summary(section)}", highlight=False)
    console.print(f"Report: {out}", highlight=False)


def _campaign_ratings(cfg: AgreementReportConfig, db: str | None) -> tuple[list, set, dict]:
    """The campaign's ratings (and the judge's, if asked), its gold items and design;
    a campaign without submitted ratings is an error that says why."""
    with Session(open_engine(db)) as session:
        ratings, gold, design = load_campaign_ratings(
            session, cfg.campaign, include_simulated=cfg.include_simulated)
        if cfg.include_judge is not None:
            run = judges.judge_run(session, cfg.campaign, cfg.include_judge)
            ratings += judges.judge_ratings(session, run)
            design["judge"] = f"judge run {run.id} ({run.model}) included as a rater"
    if not ratings:
        hint = "" if cfg.include_simulated else " (simulated ratings are left out; add " \
                                                "--include-simulated)"
        raise RatingsError(f"campaign {cfg.campaign!r} has no submitted ratings yet{hint}")
    return ratings, gold, design


def _alpha_summary(section: dict) -> str:
    alpha = section.get("alpha", section)
    if not alpha.get("computable"):
        return f"not computable ({alpha['reason']})"
    ci = alpha.get("ci95")
    return f"α = {alpha['alpha']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
