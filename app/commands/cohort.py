"""`rationale-audit cohort`: generate, validate, import, export and show patient cohorts."""

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlmodel import Session

from annotation_db import cohorts as crud
from annotation_db.provenance import code_version
from annotation_db.render import render_compact, render_text
from app.commands.db import open_engine
from app.common import DbOption, config_options, user_errors
from generation.cohort import CohortConfig
from generation.cohort_store import store_generated_cohort

app = typer.Typer(help="Synthetic patient cohorts: generate, validate, import, export, show.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)  # paths and hashes stay copyable

CohortOption = Annotated[
    str | None, typer.Option("--cohort", help="Cohort name (default: the newest cohort).")
]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def _resolve_cohort(session: Session, name: str | None):
    return crud.get_cohort(session, name) if name else crud.latest_cohort(session)


def store_generated(engine, cfg: CohortConfig, workers: int = 1, quiet: bool = False) -> dict:
    """Generate a cohort and store it; returns a summary (used by the CLI and the demo)."""
    started = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"writing {cfg.n} patients", total=cfg.n, visible=not quiet)
        cohort_id, sampling = store_generated_cohort(
            engine, cfg, workers=workers, on_progress=lambda k: progress.advance(task, k))
    with Session(engine) as session:
        splits = crud.cohort_summary(session, cohort_id)
    return {"cohort_id": cohort_id, "name": cfg.name, "splits": splits,
            "sampling": sampling, "seconds": round(time.perf_counter() - started, 2)}


def _print_summary(summary: dict) -> None:
    table = Table(title=f"cohort {summary['name']}")
    for column in ("split", "patients", "cases"):
        table.add_column(column, justify="right")
    for split in ("train", "validation", "test"):
        row = summary["splits"].get(split, {"patients": 0, "cases": 0})
        table.add_row(split, str(row["patients"]), str(row["cases"]))
    console.print(table)
    sampling = summary["sampling"]
    if sampling and sampling.get("mode") == "case-enriched":
        console.print(
            f"case-enriched {sampling['case_ratio']}: {sampling['simulated']:,} people simulated, "
            f"population prevalence {sampling['population_prevalence']:.4%}; sampling fractions "
            f"cases {sampling['case_fraction']:.4g}, controls {sampling['control_fraction']:.4g}",
            highlight=False,
        )


@app.command()
@user_errors
@config_options(CohortConfig)
def generate(
    cfg: CohortConfig,
    workers: int = typer.Option(2, help="Processes that build histories while one writes."),
    db: DbOption = None,
) -> None:
    """Generate synthetic UK Biobank-like patients with a calibrated five-year ADRD label.

    Without a --name (here or in the YAML) the cohort is named synthetic-s{seed}-n{n}.

    Example:

        rationale-audit cohort generate --n 5000 --seed 7 --case-ratio 1:1
        rationale-audit cohort generate --mode population --n 20000 --name pop20k
    """
    if "name" not in cfg.model_fields_set:
        cfg = cfg.model_copy(update={"name": f"synthetic-s{cfg.seed}-n{cfg.n}"})
    engine = open_engine(db)
    summary = store_generated(engine, cfg, workers=workers)
    _print_summary(summary)
    console.print(f"stored in {summary['seconds']} s", highlight=False)


@app.command()
@user_errors
def validate(
    cohort: CohortOption = None,
    out: Path = typer.Option(Path("reports/cohort"), help="Folder for report.html and .json."),
    db: DbOption = None,
) -> None:
    """Check a cohort: incidence vs targets, recovered hazard ratios, marginals, integrity, AUC.

    Example:

        rationale-audit cohort validate --cohort synthetic-s7-n20000 --out reports/cohort
    """
    from generation.cohort_validate import render_html
    from generation.cohort_validate import validate as run_validation

    engine = open_engine(db)
    with Session(engine) as session:
        row = _resolve_cohort(session, cohort)
        name, cohort_id, stored = row.name, row.id, row.config
    cfg = stored.get("config", {})
    with console.status(f"reading {name}"):
        records = list(crud.iter_records(engine, cohort_id))
    with console.status("validating"):
        report = run_validation(records, horizon_years=cfg.get("horizon_years", 5.0),
                                age_min=cfg.get("age_min", 40),
                                gap_days=cfg.get("prediction_gap_days", 0))
    report["cohort"] = {"name": name, "config": cfg}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.html").write_text(render_html(report, f"Cohort validation: {name}"))
    hr = report["hazard_ratios"]
    auc = report["discrimination"].get("full_information", float("nan"))
    bands = [r for r in report["incidence"] if r["sex"] == "all" and r["enough_cases"]]
    console.print(
        f"{report['patients']} patients, {report['cases']} cases · incidence within ±20% in "
        f"{sum(bool(r['within_20pct']) for r in bands)}/{len(bands)} bands with enough cases · "
        f"hazard ratios covered (family-wise CI): "
        f"{sum(r['covered_familywise'] for r in hr['rows'])}/{len(hr['rows'])} · "
        f"integrity violations: {sum(v['violations'] for v in report['integrity'].values())} · "
        f"full-information AUC {auc:.3f}",
        highlight=False,
    )
    console.print(f"Report: {out / 'report.html'}", highlight=False)


@app.command("import")
@user_errors
def import_(
    path: Path = typer.Argument(..., help="A JSONL file, or a Synthea output/csv folder."),
    format: str = typer.Option(..., "--format", help="jsonl or synthea."),
    name: str = typer.Option(..., help="Name of the new cohort."),
    seed: int = typer.Option(0, help="Seed for splits of records that have none."),
    index_date: str = typer.Option("2010-01-01", help="Synthea: the index date for everyone."),
    age_min: int = typer.Option(40, help="Synthea: youngest age at the index date."),
    age_max: int = typer.Option(70, help="Synthea: oldest age at the index date."),
    db: DbOption = None,
) -> None:
    """Import a cohort from the documented JSONL format or a Synthea CSV export.

    The whole file is validated first; any bad line rejects it and nothing is written.

    Example:

        rationale-audit cohort import --format jsonl team_cohort.jsonl --name team
        rationale-audit cohort import --format synthea output/csv --name ma --index-date 2012-01-01
    """
    from generation.importers import read_jsonl, read_synthea

    summary: dict = {}
    if format == "jsonl":
        records = read_jsonl(path, seed=seed)
    elif format == "synthea":
        try:
            day = dt.date.fromisoformat(index_date)
        except ValueError:
            raise typer.BadParameter(
                f"--index-date must be YYYY-MM-DD, not {index_date!r}") from None
        records, summary = read_synthea(path, index_date=day, age_min=age_min, age_max=age_max,
                                        seed=seed)
    else:
        raise typer.BadParameter(f"--format must be jsonl or synthea, not {format!r}")
    engine = open_engine(db)
    cohort_id = crud.store_cohort(
        engine, name=name, source=format, seed=seed,
        config={"imported_from": str(path), "format": format, "code_version": code_version(),
                **summary},
        sampling=None, batches=crud.in_memory_batches(records, render_text),
    )
    with Session(engine) as session:
        splits = crud.cohort_summary(session, cohort_id)
    _print_summary({"name": name, "splits": splits, "sampling": None})
    if summary.get("excluded"):
        console.print(f"excluded: {summary['excluded']}", highlight=False)


@app.command()
@user_errors
def export(
    path: Path = typer.Argument(..., help="Output file."),
    format: str = typer.Option("jsonl", "--format", help="Only jsonl for now."),
    cohort: CohortOption = None,
    db: DbOption = None,
) -> None:
    """Write a cohort in the documented JSONL format (what `cohort import` reads).

    The same cohort always gives byte-identical files.

    Example:

        rationale-audit cohort export --format jsonl cohort.jsonl --cohort synthetic-s7-n5000
    """
    if format != "jsonl":
        raise typer.BadParameter(f"--format must be jsonl, not {format!r}")
    engine = open_engine(db)
    with Session(engine) as session:
        row = _resolve_cohort(session, cohort)
        name, cohort_id = row.name, row.id
    count = 0
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in crud.iter_records(engine, cohort_id):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)  # a reader never sees a half-written export
    console.print(f"{count} patients of {name} → {path}", highlight=False)


@app.command()
@user_errors
def show(
    patient_id: str = typer.Argument(..., help="External id, e.g. P0000001."),
    cohort: CohortOption = None,
    compact: bool = typer.Option(False, help="Show the compact prompt rendering instead."),
    budget: int | None = typer.Option(None, help="Token budget for --compact."),
    db: DbOption = None,
) -> None:
    """Show one patient's history as a clinician reads it, with evidence ids.

    Example:

        rationale-audit cohort show P0000001
        rationale-audit cohort show P0000001 --compact --budget 300
    """
    engine = open_engine(db)
    with Session(engine) as session:
        row = _resolve_cohort(session, cohort)
        patient = crud.get_patient(session, row.id, patient_id)
        record = crud.patient_record(session, patient)
    console.print(f"split {record['split']} · five-year ADRD label: "
                  f"{'yes' if record['label'] else 'no'}", highlight=False)
    if compact:
        rendered = render_compact(record, budget)
        console.print(rendered.text, highlight=False, markup=False)
        console.print(f"≈{rendered.tokens} tokens; omitted {len(rendered.omitted_ids)} items",
                      highlight=False)
    else:
        console.print(render_text(record), highlight=False, markup=False)
