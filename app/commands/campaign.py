"""`rationale-audit campaign`: create rating campaigns, follow them, simulate raters."""

import json

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from annotation_db import campaigns as crud
from annotation_db.campaigns_config import CampaignCreateConfig, CampaignStatusConfig
from annotation_db.planner import campaign_plan
from annotation_db.simulate import simulate as run_simulation
from annotation_db.simulate import simulated_raters
from app.commands.db import open_engine
from app.common import DbOption, cli_actor, config_options, user_errors

app = typer.Typer(help="Rating campaigns: create, status, simulate.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
@user_errors
@config_options(CampaignCreateConfig)
def create(cfg: CampaignCreateConfig, name: str, db: str | None = None) -> None:
    """Create a campaign and assign its items (balanced, randomized per annotator, or
    adaptive).

    Example:

        rationale-audit campaign create pilot --run 1 --annotators ann,bob,cat --calibration 10
    """
    with Session(open_engine(db)) as session:
        campaign = crud.create_campaign(
            session, name=name, run_ids=cfg.run, annotators=cfg.annotator_names(), k=cfg.k,
            calibration=cfg.calibration, gold_share=cfg.gold_share,
            guidelines_version=cfg.guidelines_version, blind_grounding=not cfg.show_grounding,
            actor=cli_actor(), address="cli", seed=cfg.seed, assignment=cfg.assignment,
            max_ratings=cfg.max_ratings, judge_run=cfg.judge_run,
            claim_review=cfg.claim_review, rate_corrections=cfg.rate_corrections)
        state = crud.status(session, campaign)
    console.print(f"campaign {name}: {state['items']} items, k = {cfg.k}, "
                  f"{len(state['annotators'])} annotators", highlight=False)


@app.command()
@user_errors
@config_options(CampaignStatusConfig)
def status(cfg: CampaignStatusConfig, name: str, db: str | None = None) -> None:
    """Progress per annotator (done / assigned, skipped, reclaimed, mean seconds on task).

    Example:

        rationale-audit campaign status pilot
    """
    with Session(open_engine(db)) as session:
        campaign = crud.get_campaign(session, name)
        crud.reclaim_abandoned(session, campaign)
        state = crud.status(session, campaign)
    if cfg.as_json:
        console.print_json(json.dumps(state))
        return
    table = Table("annotator", "done", "assigned", "skipped", "reclaimed", "mean seconds",
                  title=f"{name}: {state['items']} items, k = {state['k']}")
    for user, row in state["annotators"].items():
        table.add_row(user, str(row["done"]), str(row["assigned"]), str(row["skipped"]),
                      str(row["reclaimed"]), str(row["mean_seconds"] or "—"))
    console.print(table)


@app.command()
@user_errors
def simulate(
    name: str,
    run: list[int] = typer.Option(..., "--run", help="Generation run id(s) to rate."),
    raters: int = typer.Option(4, help="Number of simulated raters."),
    k: int = typer.Option(2, help="Ratings per rationale."),
    noise: float = typer.Option(0.6, help="SD of each rating's noise (scale points)."),
    leniency: float = typer.Option(0.4, help="SD of the raters' leniency (scale points)."),
    calibration: int = typer.Option(0, help="Items every simulated rater rates."),
    gold_share: float = typer.Option(0.0, help="Gold items per original item."),
    seed: int = typer.Option(0, help="Seed."),
    claim_review: bool = typer.Option(True, help="Each rating gives a verdict per claim."),
    claim_error: float = typer.Option(
        0.15, min=0.0, max=1.0, help="Chance that a simulated rater's verdict on a claim is "
        "another one than its cited lines imply."),
    db: DbOption = None,
) -> None:
    """Create a campaign rated entirely by simulated raters (marked simulated everywhere).

    Example:

        rationale-audit campaign simulate dry-run --run 1 --raters 4 --noise 0.6
    """
    with Session(open_engine(db)) as session:
        names = simulated_raters(session, raters)
        campaign = crud.create_campaign(session, name=name, run_ids=run, annotators=names, k=k,
                                        calibration=calibration, gold_share=gold_share,
                                        seed=seed, actor=cli_actor(), address="cli",
                                        claim_review=claim_review)
        added = run_simulation(session, campaign, noise=noise, leniency_spread=leniency,
                               seed=seed, claim_error=claim_error)
    console.print(f"campaign {name}: {added} simulated ratings by {raters} raters", highlight=False)


@app.command()
@user_errors
def plan(
    name: str | None = typer.Argument(None, help="Campaign whose ratings so far are the pilot."),
    target_ci_width: float = typer.Option(0.1, help="Width of α's 95% CI to reach."),
    raters: str = typer.Option("2,3,4", help="Raters per item to compare (comma-separated)."),
    expected_alpha: float | None = typer.Option(
        None, help="For a new campaign: the α you expect (with --distribution)."),
    distribution: str | None = typer.Option(
        None, help="For a new campaign: expected shares of scores 1–5, e.g. "
        "0.05,0.1,0.2,0.35,0.3."),
    seconds_per_rating: float | None = typer.Option(
        None, help="Seconds one rating takes (default: measured in the campaign)."),
    include_simulated: bool = typer.Option(False, help="Use simulated ratings as the pilot."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    seed: int = typer.Option(0, help="Simulation seed."),
    db: DbOption = None,
) -> None:
    """How many items × raters reach a target width of α's 95% CI, and the clinician hours.

    Simulates campaigns from the pilot's coincidence matrix (or a stated α and score
    distribution), checks the size by direct simulation, and prints Krippendorff's
    closed-form minimum beside it.

    Example:

        rationale-audit campaign plan pilot --target-ci-width 0.1
        rationale-audit campaign plan --expected-alpha 0.7 --distribution 0.05,0.1,0.2,0.35,0.3
    """
    try:
        counts = [int(x) for x in raters.split(",") if x.strip()]
        shares = ([float(x) for x in distribution.split(",")] if distribution else None)
    except ValueError:
        raise typer.BadParameter("--raters takes whole numbers and --distribution numbers, "
                                 "comma-separated") from None
    engine = open_engine(db)
    with Session(engine) as session, console.status("simulating campaigns"):
        result = campaign_plan(session, name, target_width=target_ci_width, raters=counts,
                               expected_alpha=expected_alpha, distribution=shares,
                               seconds_per_rating=seconds_per_rating,
                               include_simulated=include_simulated, seed=seed)
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table("raters per item", "items", "ratings", "more ratings", "clinician hours more",
                  "checked median width", "binding dimension",
                  title=f"α's 95% CI width ≤ {target_ci_width}")
    for row in result["options"]:
        checked = row["dimensions"][row["binding_dimension"]]["checked_median_width"]
        hours = "—" if row["hours_more"] is None else f"{row['hours_more']:.1f}"
        table.add_row(str(row["raters_per_item"]), str(row["items"]), str(row["ratings"]),
                      str(row["more_ratings"]), hours, f"{checked:.3f}", row["binding_dimension"])
    console.print(table)
    for dim, source in result["models"].items():
        floor = result["closed_form_units"][dim]
        console.print(f"{dim}: model from {source}; Krippendorff's closed-form minimum "
                      f"(p_c = {floor['p_c']:.3f}, p = 0.05): {floor['alpha_min_0.8']} units "
                      f"for α > 0.800, {floor['alpha_min_0.667']} for α > 0.667", markup=False,
                      highlight=False)
    console.print(f"seconds per rating: {result['seconds_per_rating'] or '—'} "
                  f"({result['seconds_source']})", highlight=False)
