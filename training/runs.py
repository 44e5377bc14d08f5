"""Run bookkeeping: one folder and one ``training_run`` row per configuration.

A run's identity is the content hash of its resolved configuration (locations
such as ``runs_dir`` left out), so the same configuration always maps to the same
folder and row: finished runs are reused, interrupted ones resume.
"""

import json
import traceback
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.errors import UserError
from annotation_db.models import EvaluationResult, RunStatus, TrainingRun

DONE = "DONE"


class RunError(UserError):
    """A run that cannot be found or used as asked; the message says why."""


def run_folder(runs_dir: str | Path, kind: str, target: str, config_hash: str) -> Path:
    return Path(runs_dir) / f"{kind}-{target}-{config_hash[:12]}"


def get_run(session: Session, config_hash: str) -> TrainingRun | None:
    return session.execute(select(TrainingRun).where(TrainingRun.config_hash == config_hash)
                           ).scalars().first()


def find_run(session: Session, ref: str) -> TrainingRun:
    """A run by id, by config-hash prefix, or by its folder path."""
    if ref.isdigit() and (run := session.get(TrainingRun, int(ref))) is not None:
        return run
    rows = session.execute(select(TrainingRun).where(
        TrainingRun.config_hash.startswith(ref.lower()))).scalars().all() if len(ref) >= 6 else []
    if len(rows) == 1:
        return rows[0]
    resolved = str(Path(ref).resolve())
    for run in session.execute(select(TrainingRun)).scalars():
        if str(Path(run.run_dir).resolve()) == resolved:
            return run
    raise RunError(f"no training run matches {ref!r} (give its id, a config-hash prefix "
                      "of at least 6 characters, or its folder)")


def begin(session: Session, *, kind: str, target: str, base_model: str, config: dict,
          config_hash: str, run_dir: Path, dataset_version_id: int | None) -> TrainingRun:
    """The run's row, created or moved back to ``running`` (resume), committed."""
    run = get_run(session, config_hash)
    if run is None:
        run = TrainingRun(kind=kind, target=target, base_model=base_model, config=config,
                          config_hash=config_hash, run_dir=str(run_dir.resolve()),
                          dataset_version_id=dataset_version_id)
        session.add(run)
    run.status = RunStatus.running
    run.error = None
    run.finished_at = None
    session.commit()
    session.refresh(run)
    return run


def finish(session: Session, run: TrainingRun) -> None:
    run.status = RunStatus.finished
    run.finished_at = datetime.now(UTC)
    session.add(run)
    session.commit()
    (Path(run.run_dir) / DONE).write_text(run.finished_at.isoformat(timespec="seconds") + "\n")


def fail(session: Session, run: TrainingRun, exc: BaseException) -> None:
    """Record why a run stopped; ``KeyboardInterrupt`` counts as cancelled."""
    session.rollback()
    cancelled = isinstance(exc, KeyboardInterrupt)
    run.status = RunStatus.cancelled if cancelled else RunStatus.failed
    run.error = "interrupted" if cancelled else f"{type(exc).__name__}: {exc}"
    run.finished_at = datetime.now(UTC)
    session.add(run)
    session.commit()
    log = Path(run.run_dir) / "error.log"
    if log.parent.is_dir():
        log.write_text("".join(traceback.format_exception(exc)))


def result_for(session: Session, run_id: int, split: str,
               settings_hash: str | None = None, scoring: str = "auto"
               ) -> EvaluationResult | None:
    """The run's stored result on ``split`` under ``scoring``; with ``settings_hash``,
    only if it was scored with those evaluation settings."""
    row = session.execute(select(EvaluationResult).where(
        EvaluationResult.training_run_id == run_id, EvaluationResult.split == split,
        EvaluationResult.scoring == scoring)).scalars().first()
    if row is not None and settings_hash is not None \
            and (row.metrics or {}).get("settings_hash") != settings_hash:
        return None
    return row


def forget_evaluations(session: Session, config_hash: str) -> None:
    """Delete a run's stored results (its weights are about to be retrained)."""
    run = get_run(session, config_hash)
    if run is None:
        return
    for row in session.execute(select(EvaluationResult).where(
            EvaluationResult.training_run_id == run.id)).scalars():
        session.delete(row)
    session.commit()


def record_evaluation(session: Session, run: TrainingRun, *, split: str, metrics: dict,
                      predictions_path: Path, scoring: str = "auto") -> EvaluationResult:
    """Insert or replace the run's result on ``split`` under ``scoring``."""
    row = session.execute(select(EvaluationResult).where(
        EvaluationResult.training_run_id == run.id, EvaluationResult.split == split,
        EvaluationResult.scoring == scoring)).scalars().first() \
        or EvaluationResult(training_run_id=run.id, split=split, scoring=scoring, n=0)
    row.n = metrics["n"]
    row.auroc = metrics["auroc"]["value"]
    row.auprc = metrics["auprc"]["value"]
    row.brier = metrics["brier"]["value"]
    row.metrics = json.loads(json.dumps(metrics))
    row.predictions_path = str(predictions_path.resolve())
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


def paired(pa: dict[str, tuple[int, float]], pb: dict[str, tuple[int, float]], name_a,
           name_b) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The one rule for comparing two runs patient by patient: (patient ids, labels, scores
    of each run), refusing runs scored on other patients or with other labels."""
    if set(pa) != set(pb):
        raise RunError(f"runs {name_a} and {name_b} were scored on different patients "
                            f"({len(set(pa) ^ set(pb))} differ); a paired comparison needs the "
                            "same test set")
    ids = sorted(pa)
    if any(pa[i][0] != pb[i][0] for i in ids):
        raise RunError(f"runs {name_a} and {name_b} disagree on patients' labels; they "
                            "were not scored on the same test set")
    return (ids, np.asarray([pa[i][0] for i in ids]), np.asarray([pa[i][1] for i in ids]),
            np.asarray([pb[i][1] for i in ids]))
