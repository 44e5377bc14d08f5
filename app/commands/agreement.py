"""`rationale-audit agreement`: inter-rater agreement and annotator-quality reports."""

from pathlib import Path

import typer
from rich.console import Console
from sqlmodel import Session

from annotation_db import judges
from annotation_db.agreement import agreement_report
from annotation_db.agreement_report import to_html, to_json, to_markdown
from annotation_db.ratings import (
    RatingsError,
    default_dimensions,
    load_campaign_ratings,
    load_ratings_csv,
)
from app.commands.db import open_engine
from app.common import DbOption, user_errors

app = typer.Typer(help="Inter-rater agreement (Krippendorff's α with CIs, Gwet's AC1/AC2, κ).",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
@user_errors
def report(
    campaign: str | None = typer.Option(None, help="Campaign name in the database."),
    ratings_csv: Path | None = typer.Option(None, help="CSV with rater,item,dimension,score."),
    format: str = typer.Option("html", "--format", help="html, md or json."),
    out: Path | None = typer.Option(None, help="Output file (default agreement.FORMAT)."),
    replicates: int = typer.Option(1000, help="Bootstrap resamples of units."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    include_simulated: bool = typer.Option(False, help="Include simulated raters' ratings."),
    include_judge: int | None = typer.Option(
        None, help="Add this judge run's scores as one more rater (left out by default)."),
    db: DbOption = None,
) -> None:
    """Write an agreement report for a campaign or a ratings CSV.

    Example:

        rationale-audit agreement report --campaign pilot --format html
        rationale-audit agreement report --ratings-csv ratings.csv --format md --out agreement.md
    """
    if (campaign is None) == (ratings_csv is None):
        raise typer.BadParameter("give exactly one of --campaign or --ratings-csv")
    if format not in ("html", "md", "json"):
        raise typer.BadParameter(f"--format must be html, md or json, not {format!r}")
    gold: set[str] = set()
    if ratings_csv is not None:
        ratings = load_ratings_csv(ratings_csv)
        design = {"source": str(ratings_csv)}
        title = f"Agreement report: {ratings_csv.name}"
    else:
        engine = open_engine(db)
        with Session(engine) as session:
            ratings, gold, design = load_campaign_ratings(session, campaign,
                                                          include_simulated=include_simulated)
            if include_judge is not None:
                run = judges.judge_run(session, campaign, include_judge)
                ratings += judges.judge_ratings(session, run)
                design["judge"] = f"judge run {run.id} ({run.model}) included as a rater"
        if not ratings:
            hint = "" if include_simulated else " (simulated ratings are left out; add " \
                                                "--include-simulated)"
            raise RatingsError(f"campaign {campaign!r} has no submitted ratings yet{hint}")
        title = f"Agreement report: campaign {campaign}"
    dimensions = default_dimensions({r.dimension for r in ratings})
    with console.status(f"computing agreement ({replicates} bootstrap resamples)"):
        result = agreement_report(ratings, dimensions, replicates=replicates, seed=seed,
                                  gold_items=gold, design=design)
        text = {"json": to_json, "md": lambda r: to_markdown(r, title),
                "html": lambda r: to_html(r, title)}[format](result)
    out = out or Path(f"agreement.{format}")
    out.write_text(text, encoding="utf-8")
    for section in result["dimensions"]:
        console.print(f"{section['dimension']}: {_alpha_summary(section)}", highlight=False)
    console.print(f"Report: {out}", highlight=False)


def _alpha_summary(section: dict) -> str:
    alpha = section.get("alpha", section)
    if not alpha.get("computable"):
        return f"not computable ({alpha['reason']})"
    ci = alpha.get("ci95")
    return f"α = {alpha['alpha']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
