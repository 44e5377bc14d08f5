"""`rationale-audit campaign`: create rating campaigns, follow them, simulate raters."""

import json

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from annotation_db import campaigns as crud
from annotation_db.simulate import simulate as run_simulation
from annotation_db.simulate import simulated_raters
from app.commands.db import open_engine
from app.common import DbOption, cli_actor, user_errors

app = typer.Typer(help="Rating campaigns: create, status, simulate.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
@user_errors
def create(
    name: str,
    run: list[int] = typer.Option(..., "--run", help="Generation run id(s) whose rationales "
                                                      "are rated (repeatable)."),
    annotators: str = typer.Option(..., help="Comma-separated usernames."),
    k: int = typer.Option(2, help="Independent ratings per rationale."),
    calibration: int = typer.Option(0, help="Items that every annotator rates first."),
    gold_share: float = typer.Option(0.0, help="Gold (flawed) items per original item."),
    guidelines_version: str = typer.Option("1.0", help="Guidelines shown to raters."),
    show_grounding: bool = typer.Option(False, help="Show automatic check results to raters."),
    seed: int = typer.Option(0, help="Seed of the assignment and orders."),
    db: DbOption = None,
) -> None:
    """Create a campaign and assign its items (balanced, randomized per annotator).

    Example:

        rationale-audit campaign create pilot --run 1 --annotators ann,bob,cat --calibration 10
    """
    with Session(open_engine(db)) as session:
        campaign = crud.create_campaign(
            session, name=name, run_ids=run, annotators=[a.strip() for a in
                                                         annotators.split(",") if a.strip()],
            k=k, calibration=calibration, gold_share=gold_share,
            guidelines_version=guidelines_version, blind_grounding=not show_grounding,
            actor=cli_actor(), address="cli",
            seed=seed)
        state = crud.status(session, campaign)
    console.print(f"campaign {name}: {state['items']} items, k = {k}, "
                  f"{len(state['annotators'])} annotators", highlight=False)


@app.command()
@user_errors
def status(name: str, as_json: bool = typer.Option(False, "--json", help="Print JSON."),
           db: DbOption = None) -> None:
    """Progress per annotator (done / assigned, skipped, reclaimed, mean seconds on task).

    Example:

        rationale-audit campaign status pilot
    """
    with Session(open_engine(db)) as session:
        campaign = crud.get_campaign(session, name)
        crud.reclaim_abandoned(session, campaign)
        state = crud.status(session, campaign)
    if as_json:
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
                                        seed=seed, actor=cli_actor(), address="cli")
        added = run_simulation(session, campaign, noise=noise, leniency_spread=leniency,
                               seed=seed)
    console.print(f"campaign {name}: {added} simulated ratings by {raters} raters", highlight=False)
