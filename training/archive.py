"""Finished runs carried to another machine: a folder of small files that git can hold.

A reproduction on a 2-core CPU takes longer than one working session, and a fresh
machine starts with an empty database and no run folders. :func:`save` writes each
finished run of a dataset version (its ``training_run`` row, its stored results, and
the small files of its folder: configuration, dataset accounting, train summary,
metrics, predictions) into ``<archive>/<run folder name>/`` with a manifest of
sha256 sums. :func:`restore` puts them back into a database that holds the *same*
dataset version (same content hash), so the grid reuses them exactly as it reuses
runs it trained itself: same identity, same stored results, same report rows.

Weights (``adapter/``, checkpoints) stay out unless ``weights=True``: a run restored
without them can be reported but not scored again (``evaluate`` says so).
"""

import json
import shutil
import tempfile
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.errors import UserError
from annotation_db.models import DatasetVersion, EvaluationResult, RunStatus, TrainingRun
from annotation_db.provenance import file_sha256
from training import runs
from training.grid.config import validation_rank

FORMAT = 1
RECORD = "run.json"
WEIGHT_DIRS = ("adapter",)
SKIPPED_DIRS = ("checkpoints",)  # resumable state of an unfinished run, never archived
MAX_FILE_BYTES = 5 * 1024 * 1024


class ArchiveError(UserError):
    """An archive that cannot be written or read back as asked; the message says why."""


def _files(run_dir: Path, weights: bool) -> tuple[list[Path], list[str]]:
    """The files of ``run_dir`` to carry (relative paths) and what was left out, why."""
    keep, left = [], []
    if not run_dir.is_dir():
        return keep, left
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(run_dir)
        top = rel.parts[0]
        if top in SKIPPED_DIRS:
            continue
        if top in WEIGHT_DIRS and not weights:
            left.append(f"{rel.as_posix()} (weights)")
        elif top not in WEIGHT_DIRS and path.stat().st_size > MAX_FILE_BYTES:
            left.append(f"{rel.as_posix()} (over {MAX_FILE_BYTES // 2**20} MiB)")
        else:
            keep.append(rel)
    return keep, left


def _inside(path: str | None, folder: Path) -> str | None:
    """``path`` relative to ``folder`` when it lies inside it, else None."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def _record(run: TrainingRun, version: DatasetVersion, results: list[EvaluationResult],
            files: dict[str, str], left_out: list[str], weights: bool) -> dict:
    folder = Path(run.run_dir)
    return {
        "format": FORMAT, "kind": run.kind, "target": run.target,
        "base_model": run.base_model, "config": run.config, "config_hash": run.config_hash,
        "dataset": {"name": version.name, "sha256": version.content_hash},
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "weights": weights and any(rel.startswith("adapter/") for rel in files),
        "evaluations": [{"split": r.split, "scoring": r.scoring, "n": r.n, "auroc": r.auroc,
                         "auprc": r.auprc, "brier": r.brier, "metrics": r.metrics,
                         "predictions": _inside(r.predictions_path, folder),
                         "created_at": _iso(r.created_at)}
                        for r in results],
        "files": files, "left_out": left_out,
    }


def save(engine: Engine, dest: str | Path, dataset: str, *, weights: bool = False,
         run_ids: Collection[int] | None = None) -> dict:
    """Write every finished run of dataset version ``dataset`` into ``dest``; with
    ``run_ids``, just those runs (a grid's own runs, as its executor got them
    back: grids that share a version keep their archives apart).

    Idempotent: a run whose record and files are unchanged is not rewritten, so the
    folder can be saved after every run and committed as it grows. Returns counts.
    """
    dest = Path(dest)
    written, unchanged = [], []
    with Session(engine) as session:
        version = session.execute(select(DatasetVersion).where(
            DatasetVersion.name == dataset)).scalars().first()
        if version is None:
            raise ArchiveError(f"no dataset version {dataset!r} in this database")
        finished = session.execute(select(TrainingRun).where(
            TrainingRun.dataset_version_id == version.id,
            TrainingRun.status == RunStatus.finished).order_by(TrainingRun.id)).scalars().all()
        if run_ids is not None:
            wanted = set(run_ids)
            finished = [run for run in finished if run.id in wanted]
        for run in finished:
            folder = Path(run.run_dir)
            results = session.execute(select(EvaluationResult).where(
                EvaluationResult.training_run_id == run.id).order_by(
                EvaluationResult.split, EvaluationResult.scoring)).scalars().all()
            outside = [r for r in results if _inside(r.predictions_path, folder) is None]
            if outside:
                raise ArchiveError(f"run {run.id} has results stored outside its folder "
                                   f"({outside[0].predictions_path}); only results inside "
                                   f"{folder.name}/ can be archived")
            target = dest / folder.name
            before = _read(target) if (target / RECORD).is_file() else None
            # this run's: an archived copy with weights keeps them (saved again, without
            # --weights, by the grid after its next step), and no other run gets them
            run_weights = weights or bool(before and before["weights"])
            keep, left = _files(folder, run_weights)
            sources = {rel.as_posix(): folder / rel for rel in keep}
            if before is not None and before.get("finished_at") == _iso(run.finished_at):
                # an archive only grows: files this machine lacks (weights saved elsewhere,
                # say) stay as archived; not once the run was trained again (its earlier
                # files, scores of the old weights among them, went with those weights)
                for rel in before["files"]:
                    if rel not in sources and not (folder / rel).exists():
                        sources[rel] = target / rel
                left = sorted(x for x in {*left, *before["left_out"]}
                              if x.split(" (")[0] not in sources)
            files = {rel: file_sha256(path) for rel, path in sorted(sources.items())}
            record = _record(run, version, results, files, left, run_weights)
            if before is not None and before == json.loads(json.dumps(record, default=str)):
                unchanged.append(folder.name)
                continue
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=_made(dest)))
            try:
                for rel, path in sources.items():
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, staging / rel)
                (staging / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
                if target.exists():
                    shutil.rmtree(target)
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            written.append(folder.name)
    return {"written": written, "unchanged": unchanged, "folder": str(dest)}


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read(folder: Path) -> dict:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{folder.name}/{RECORD} cannot be read: {exc}") from exc
    if record.get("format") != FORMAT:
        raise ArchiveError(f"{folder.name}/{RECORD} is archive format "
                           f"{record.get('format')!r}; this version reads {FORMAT}")
    for rel, digest in record["files"].items():
        path = folder / rel
        if not path.is_file():
            raise ArchiveError(f"{folder.name}: {rel} is listed in {RECORD} but missing")
        if file_sha256(path) != digest:
            raise ArchiveError(f"{folder.name}: {rel} does not match its sha256 in {RECORD} "
                               "(edited or truncated)")
    return record


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _stamp(record: dict) -> dict:
    """``created_at`` as archived, or the column's default when it was not recorded."""
    return {"created_at": _when(record["created_at"])} if record.get("created_at") else {}


def restore(engine: Engine, src: str | Path, runs_dir: str | Path) -> dict:
    """Put the archived runs of ``src`` into this database and ``runs_dir``.

    A run already in the database (same identity) is left as it is; a run whose
    dataset version is not in the database is skipped with the reason. All rows go in
    one transaction: on any error nothing is inserted and no folder is left behind.
    """
    src, runs_dir = Path(src), Path(runs_dir)
    if not src.is_dir():
        return {"restored": [], "present": [], "skipped": []}
    records = [(folder, _read(folder)) for folder in sorted(src.iterdir())
               if folder.is_dir() and not folder.name.startswith(".")]
    restored, present, skipped, copied = [], [], [], []
    with Session(engine) as session:
        try:
            for folder, record in records:
                if runs.get_run(session, record["config_hash"]) is not None:
                    present.append(folder.name)
                    continue
                version = session.execute(select(DatasetVersion).where(
                    DatasetVersion.content_hash == record["dataset"]["sha256"])
                ).scalars().first()
                if version is None:
                    skipped.append(f"{folder.name}: dataset {record['dataset']['name']} "
                                   f"(sha256 {record['dataset']['sha256'][:12]}) is not in "
                                   "this database")
                    continue
                run_dir = runs.run_folder(runs_dir, record["kind"], record["target"],
                                          record["config_hash"])
                if run_dir.exists():
                    raise ArchiveError(f"{run_dir} exists but the database has no run for it; "
                                       "move it away before restoring")
                shutil.copytree(folder, run_dir, ignore=shutil.ignore_patterns(RECORD))
                copied.append(run_dir)
                run = TrainingRun(kind=record["kind"], target=record["target"],
                                  base_model=record["base_model"], config=record["config"],
                                  config_hash=record["config_hash"],
                                  run_dir=str(run_dir.resolve()),
                                  dataset_version_id=version.id, status=RunStatus.finished,
                                  finished_at=_when(record["finished_at"]),
                                  **_stamp(record))
                session.add(run)
                session.flush()
                for ev in record["evaluations"]:
                    predictions = (str((run_dir / ev["predictions"]).resolve())
                                   if ev["predictions"] else None)
                    session.add(EvaluationResult(
                        training_run_id=run.id, split=ev["split"], scoring=ev["scoring"],
                        n=ev["n"], auroc=ev["auroc"], auprc=ev["auprc"], brier=ev["brier"],
                        metrics=ev["metrics"], predictions_path=predictions, **_stamp(ev)))
                restored.append(folder.name)
            session.commit()
        except BaseException:
            session.rollback()
            for path in copied:
                shutil.rmtree(path, ignore_errors=True)
            raise
    return {"restored": restored, "present": present, "skipped": skipped}


def finished_work(src: str | Path, dataset: str, version_hash: str | None = None
                  ) -> dict | None:
    """What ``src`` holds for dataset version ``dataset``, in the shape of
    :func:`training.budget.finished_work` (so a dry run on a fresh machine counts the
    archived runs as reused). Only the runs of one build of that version count, as only
    they are restored: ``version_hash`` (the database's, when it has the version), else
    the build of the most recently finished run. None when it holds no such run."""
    src = Path(src)
    if not src.is_dir():
        return None
    records = [_read(folder) for folder in sorted(src.iterdir())
               if (folder / RECORD).is_file() and not folder.name.startswith(".")]
    records = [r for r in records if r["dataset"]["name"] == dataset]
    if version_hash is None and records:
        version_hash = max(records, key=lambda r: r["finished_at"] or "")["dataset"]["sha256"]
    records = [r for r in records if r["dataset"]["sha256"] == version_hash]
    if not records:
        return None
    done: dict[str, set] = {}
    weightless: set[str] = set()  # restored without weights: retrained if scored anew
    ranks: dict[tuple, tuple] = {}
    for record in records:
        done[record["config_hash"]] = {
            (ev["split"], ev["scoring"], (ev["metrics"] or {}).get("settings_hash"))
            for ev in record["evaluations"]}
        ranks.update({(record["config_hash"], ev["scoring"],
                       (ev["metrics"] or {}).get("settings_hash")):
                      validation_rank(ev["metrics"], ev.get("auroc"))
                      for ev in record["evaluations"] if ev["split"] == "validation"})
        if record.get("kind", "sft") == "sft" and not record.get("weights"):
            weightless.add(record["config_hash"])
    return {"version_hash": version_hash, "runs": done, "data_done": False,
            "weightless": weightless, "ranks": ranks}
