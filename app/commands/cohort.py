"""`rationale-audit cohort`: generate, validate, import, export and show patient cohorts."""

import datetime as dt
import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlmodel import Session

from annotation_db import cohorts as crud
from annotation_db.provenance import code_version
from annotation_db.render import render_compact, render_text
from app.commands.db import open_engine
from app.common import config_options, user_errors
from generation.cohort_config import (
    CohortConfig,
    CohortExportConfig,
    CohortGenerateOptions,
    CohortImportConfig,
    CohortShowConfig,
    CohortValidateConfig,
)
from generation.cohort_store import store_generated_cohort

app = typer.Typer(help="Synthetic patient cohorts: generate, validate, import, export, show.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)  # paths and hashes stay copyable


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
@config_options(CohortConfig, CohortGenerateOptions)
def generate(cfg: CohortConfig, workers: int = 2, db: str | None = None) -> None:
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
@config_options(CohortValidateConfig)
def validate(cfg: CohortValidateConfig, db: str | None = None) -> None:
    """Check a cohort: incidence vs targets, recovered hazard ratios, marginals, integrity, AUC.

    Example:

        rationale-audit cohort validate --cohort synthetic-s7-n20000 --out reports/cohort
    """
    from generation.cohort_validate import render_html
    from generation.cohort_validate import validate as run_validation

    engine = open_engine(db)
    with Session(engine) as session:
        row = _resolve_cohort(session, cfg.cohort)
        name, cohort_id, stored = row.name, row.id, row.config
    made_with = stored.get("config", {})
    defaults = CohortConfig()  # what a setting missing from an older cohort's record was
    with console.status(f"reading {name}"):
        records = list(crud.iter_records(engine, cohort_id))
    with console.status("validating"):
        report = run_validation(
            records, horizon_years=made_with.get("horizon_years", defaults.horizon_years),
            age_min=made_with.get("age_min", defaults.age_min),
            gap_days=made_with.get("prediction_gap_days", defaults.prediction_gap_days))
    report["cohort"] = {"name": name, "config": made_with}
    out = Path(cfg.out)
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
@config_options(CohortImportConfig)
def import_(
    cfg: CohortImportConfig,
    path: Path = typer.Argument(..., help="A JSONL file, or a Synthea output/csv folder."),
    db: str | None = None,
) -> None:
    """Import a cohort from the documented JSONL format or a Synthea CSV export.

    The whole file is validated first; any bad line rejects it and nothing is written.

    Example:

        rationale-audit cohort import --format jsonl team_cohort.jsonl --name team
        rationale-audit cohort import --format synthea output/csv --name ma --index-date 2012-01-01
    """
    from generation.importers import read_jsonl, read_synthea

    summary: dict = {}
    if cfg.format == "jsonl":
        records = read_jsonl(path, seed=cfg.seed)
    else:
        try:
            day = dt.date.fromisoformat(cfg.index_date)
        except ValueError:
            raise typer.BadParameter(
                f"--index-date must be YYYY-MM-DD, not {cfg.index_date!r}") from None
        records, summary = read_synthea(path, index_date=day, age_min=cfg.age_min,
                                        age_max=cfg.age_max, seed=cfg.seed)
    engine = open_engine(db)
    cohort_id = crud.store_cohort(
        engine, name=cfg.name, source=cfg.format, seed=cfg.seed,
        config={"imported_from": str(path), "format": cfg.format,
                "code_version": code_version(), **summary},
        sampling=None, batches=crud.in_memory_batches(records, render_text),
    )
    with Session(engine) as session:
        splits = crud.cohort_summary(session, cohort_id)
    _print_summary({"name": cfg.name, "splits": splits, "sampling": None})
    if summary.get("excluded"):
        console.print(f"excluded: {summary['excluded']}", highlight=False)


@app.command()
@user_errors
@config_options(CohortExportConfig)
def export(
    cfg: CohortExportConfig,
    path: Path = typer.Argument(..., help="Output file."),
    db: str | None = None,
) -> None:
    """Write a cohort in the documented JSONL format (what `cohort import` reads).

    The same cohort always gives byte-identical files.

    Example:

        rationale-audit cohort export --format jsonl cohort.jsonl --cohort synthetic-s7-n5000
    """
    engine = open_engine(db)  # the only format, jsonl, is all there is to write
    with Session(engine) as session:
        row = _resolve_cohort(session, cfg.cohort)
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
@config_options(CohortShowConfig)
def show(
    cfg: CohortShowConfig,
    patient_id: str = typer.Argument(..., help="External id, e.g. P0000001."),
    db: str | None = None,
) -> None:
    """Show one patient's history as a clinician reads it, with evidence ids.

    Example:

        rationale-audit cohort show P0000001
        rationale-audit cohort show P0000001 --compact --budget 300
    """
    engine = open_engine(db)
    with Session(engine) as session:
        row = _resolve_cohort(session, cfg.cohort)
        patient = crud.get_patient(session, row.id, patient_id)
        record = crud.patient_record(session, patient)
    console.print(f"split {record['split']} · five-year ADRD label: "
                  f"{'yes' if record['label'] else 'no'}", highlight=False)
    if cfg.compact:
        rendered = render_compact(record, cfg.budget)
        console.print(rendered.text, highlight=False, markup=False)
        console.print(f"≈{rendered.tokens} tokens; omitted {len(rendered.omitted_ids)} items",
                      highlight=False)
    else:
        console.print(render_text(record), highlight=False, markup=False)
