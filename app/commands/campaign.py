"""`rationale-audit campaign`: create rating campaigns, follow them, simulate raters."""

import json

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from annotation_db import campaigns as crud
from annotation_db.campaigns_config import (
    CampaignCreateConfig,
    CampaignSimulateConfig,
    CampaignStatusConfig,
)
from annotation_db.planner import campaign_plan
from annotation_db.planner_config import PlanConfig
from annotation_db.simulate import simulate as run_simulation
from annotation_db.simulate import simulated_raters
from app.commands.db import open_engine
from app.common import cli_actor, config_options, user_errors

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
@config_options(CampaignSimulateConfig)
def simulate(cfg: CampaignSimulateConfig, name: str, db: str | None = None) -> None:
    """Create a campaign rated entirely by simulated raters (marked simulated everywhere).

    Example:

        rationale-audit campaign simulate dry-run --run 1 --raters 4 --noise 0.6
    """
    with Session(open_engine(db)) as session:
        names = simulated_raters(session, cfg.raters)
        campaign = crud.create_campaign(
            session, name=name, run_ids=cfg.run, annotators=names, k=cfg.k,
            calibration=cfg.calibration, gold_share=cfg.gold_share, seed=cfg.seed,
            actor=cli_actor(), address="cli", claim_review=cfg.claim_review)
        added = run_simulation(session, campaign, noise=cfg.noise, leniency_spread=cfg.leniency,
                               seed=cfg.seed, claim_error=cfg.claim_error)
    console.print(f"campaign {name}: {added} simulated ratings by {cfg.raters} raters",
                  highlight=False)


@app.command()
@user_errors
@config_options(PlanConfig)
def plan(cfg: PlanConfig,
         name: str | None = typer.Argument(None, help="Campaign whose ratings so far are the "
                                                      "pilot."),
         db: str | None = None) -> None:
    """How many items × raters reach a target width of α's 95% CI, and the clinician hours.

    Simulates campaigns from the pilot's coincidence matrix (or a stated α and score
    distribution), checks the size by direct simulation, and prints Krippendorff's
    closed-form minimum beside it.

    Example:

        rationale-audit campaign plan pilot --target-ci-width 0.1
        rationale-audit campaign plan --expected-alpha 0.7 --distribution 0.05,0.1,0.2,0.35,0.3
    """
    try:
        counts, shares = cfg.rater_counts(), cfg.score_shares()
    except ValueError:
        raise typer.BadParameter("--raters takes whole numbers and --distribution numbers, "
                                 "comma-separated") from None
    engine = open_engine(db)
    with Session(engine) as session, console.status("simulating campaigns"):
        result = campaign_plan(session, name, target_width=cfg.target_ci_width, raters=counts,
                               expected_alpha=cfg.expected_alpha, distribution=shares,
                               seconds_per_rating=cfg.seconds_per_rating,
                               include_simulated=cfg.include_simulated, seed=cfg.seed)
    if cfg.as_json:
        console.print_json(json.dumps(result))
        return
    table = Table("raters per item", "items", "ratings", "more ratings", "clinician hours more",
                  "checked median width", "binding dimension",
                  title=f"α's 95% CI width ≤ {cfg.target_ci_width}")
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
