"""Benchmark: generate and store a cohort (target: 100k patients in under 30 s on 2 cores).

    .venv/bin/python benchmarks/cohort.py                 # 100k, both modes, plus baselines
    .venv/bin/python benchmarks/cohort.py --n 20000 --modes population

Prints one line per measurement and writes benchmarks/results/cohort.json. Baselines
measured in the same run: the same pipeline with one process (no worker overlap), and
the SQLModel ORM unit of work (session.add_all) on a subset, per patient.
"""

import sys
from pathlib import Path

# benchmarks/generation.py is named like the `generation` package: keep this folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sqlmodel import Session

from annotation_db import migrate
from annotation_db.cohorts import store_cohort
from annotation_db.models import Cohort, EvidenceItem, Patient
from annotation_db.provenance import code_version
from annotation_db.render import render_text
from annotation_db.session import make_engine
from generation.cohort import CohortSimulator
from generation.cohort_config import CohortConfig

N = 100_000  # patients per timed run
ORM_N = 5_000  # patients for the ORM baseline (it is slow)
TARGET_SECONDS = 30.0


def fresh_engine(folder: Path, name: str):
    engine = make_engine(f"sqlite:///{folder / name}")
    migrate.upgrade(engine)
    return engine


def timed_pipeline(folder: Path, n: int, mode: str, workers: int) -> dict:
    engine = fresh_engine(folder, f"{mode}-{workers}.sqlite")
    cfg = CohortConfig(n=n, mode=mode, seed=7)
    start = time.perf_counter()
    plan = CohortSimulator(cfg).plan()
    simulated = time.perf_counter()
    store_cohort(engine, name="bench", source="generator", seed=7, config={},
                 sampling=plan.sampling, batches=plan.row_batches(render_text, workers))
    total = time.perf_counter() - start
    engine.dispose()  # closing the last connection checkpoints the WAL into the file
    size = (folder / f"{mode}-{workers}.sqlite").stat().st_size
    return {"mode": mode, "n": n, "workers": workers, "seconds": round(total, 2),
            "simulate_seconds": round(simulated - start, 2),
            "patients_per_second": round(n / total), "database_mb": round(size / 1e6)}


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def orm_baseline(folder: Path, n: int) -> dict:
    engine = fresh_engine(folder, "orm.sqlite")
    cfg = CohortConfig(n=n, mode="population", seed=7)
    start = time.perf_counter()
    plan = CohortSimulator(cfg).plan()
    records = [plan.build(i) for i in range(plan.n)]
    with Session(engine) as session:
        cohort = Cohort(name="orm", source="generator", seed=7, config={})
        session.add(cohort)
        session.flush()
        for r in records:
            patient = Patient(cohort_id=cohort.id, external_id=r["external_id"], split=r["split"],
                              label=r["label"], index_date=day(r["index_date"]), sex=r["sex"],
                              birth_date=day(r["birth_date"]), age_at_index=0,
                              weight=r["weight"],
                              history={"items": len(r["items"])}, rendered_text=render_text(r),
                              outcome=r["outcome"])
            session.add(patient)
            session.flush()
            session.add_all([EvidenceItem(patient_id=patient.id, evidence_id=i["id"],
                                          kind=i["kind"], code=i["code"],
                                          code_system=i["code_system"],
                                          description=i["description"],
                                          date=day(i["date"]) if i["date"] else None,
                                          value=i["value"], unit=i["unit"], role=i["role"])
                             for i in r["items"]])
        session.commit()
    total = time.perf_counter() - start
    engine.dispose()
    return {"mode": "population", "n": n, "workers": 1, "path": "SQLModel ORM add_all",
            "seconds": round(total, 2), "patients_per_second": round(n / total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--orm-n", type=int, default=ORM_N)
    parser.add_argument("--modes", nargs="+", default=["population", "case-enriched"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ra-bench-") as tmp:
        folder = Path(tmp)
        orm = orm_baseline(folder, args.orm_n)
        print(f"baseline ORM add_all: {orm['n']} patients in {orm['seconds']} s "
              f"({orm['patients_per_second']}/s)")
        results.append(orm)
        for mode in args.modes:
            serial = timed_pipeline(folder, args.n, mode, workers=1)
            parallel = timed_pipeline(folder, args.n, mode, workers=2)
            for row in (serial, parallel):
                row["speedup_vs_orm"] = round(row["patients_per_second"]
                                              / orm["patients_per_second"], 1)
                results.append(row)
                print(f"{mode:14s} workers={row['workers']}: {row['n']} patients generated and "
                      f"stored in {row['seconds']} s (simulation {row['simulate_seconds']} s, "
                      f"{row['patients_per_second']}/s, {row['database_mb']} MB) · "
                      f"{row['speedup_vs_orm']}x the ORM baseline")
            print(f"{mode:14s} two workers vs one: "
                  f"{serial['seconds'] / parallel['seconds']:.2f}x; target < {TARGET_SECONDS} s "
                  f"for 100k: {'met' if parallel['seconds'] < TARGET_SECONDS else 'NOT met'}"
                  + ("" if args.n == 100_000 else " (n differs from 100k)"))
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "cohort.json").write_text(json.dumps({
        "results": results, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "code_version": code_version(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
