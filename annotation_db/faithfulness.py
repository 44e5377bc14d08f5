"""Evidence-ablation scores: where they are stored and how they are read back.

A faithfulness run (:class:`~annotation_db.models.FaithfulnessRun`) is one scorer reading
every rationale of one generation run; it is identified by (generation run, scorer,
settings), so the same command run again scores only the rationales still missing. The
scoring itself lives in :mod:`training.evidence_ablation` (it needs a model); the report in
:mod:`annotation_db.faithfulness_report`; the approval policy's
``min_comprehensiveness_margin`` reads :func:`margins`.

Annotators never see these numbers: no annotation screen reads this module.
"""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from annotation_db.command_config import stable_hash
from annotation_db.errors import UserError
from annotation_db.models import FaithfulnessRun, FaithfulnessScore, RunStatus, utcnow


class FaithfulnessError(UserError):
    """A faithfulness run or score that cannot be found or made; the message is one line."""


def open_run(session: Session, *, generation_run_id: int, scorer: dict,
             settings: dict) -> FaithfulnessRun:
    """The run with this identity, created (queued) when there is none yet."""
    digest = stable_hash({"generation_run": generation_run_id, "scorer": scorer,
                          "settings": settings})
    def existing() -> FaithfulnessRun | None:
        return session.execute(select(FaithfulnessRun).where(
            FaithfulnessRun.content_hash == digest)).scalars().first()

    run = existing()
    if run is None:
        run = FaithfulnessRun(generation_run_id=generation_run_id, content_hash=digest,
                              scorer=scorer, settings=settings)
        session.add(run)
        try:
            session.commit()
        except IntegrityError:  # the same run opened by another process at the same moment
            session.rollback()
            return existing()
        session.refresh(run)
    return run


def scored_ids(session: Session, run_id: int) -> set[int]:
    """The rationales the run has already scored."""
    return set(session.execute(select(FaithfulnessScore.rationale_id).where(
        FaithfulnessScore.faithfulness_run_id == run_id)).scalars())


def store(session: Session, run_id: int, rows: list[dict], seconds: float,
          prompts: int = 0) -> None:
    """Add one batch of scores, the time it took and the prompts it read, in one
    transaction."""
    session.add_all(FaithfulnessScore(faithfulness_run_id=run_id, **row) for row in rows)
    run = session.get(FaithfulnessRun, run_id)
    stats = dict(run.stats or {})
    stats["seconds"] = round(stats.get("seconds", 0.0) + seconds, 3)
    stats["prompts"] = stats.get("prompts", 0) + prompts
    run.stats = stats
    run.status = RunStatus.running
    session.add(run)
    session.commit()


def finish(session: Session, run_id: int, *, complete: bool) -> FaithfulnessRun:
    """``finished`` when every rationale is scored; else it stays ``running`` (a ``--limit``
    run goes on next time)."""
    run = session.get(FaithfulnessRun, run_id)
    run.status = RunStatus.finished if complete else RunStatus.running
    run.finished_at = utcnow() if complete else None
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def fail(session: Session, run_id: int) -> None:
    """Mark a run that stopped on an error; its stored rows stay and a re-run goes on."""
    session.rollback()
    run = session.get(FaithfulnessRun, run_id)
    if run is not None:
        run.status = RunStatus.failed
        session.add(run)
        session.commit()


def get_run(session: Session, run_id: int | None = None, *,
            generation_run_id: int | None = None) -> FaithfulnessRun:
    """Run ``run_id``, or the newest finished one (of ``generation_run_id`` when given)."""
    if run_id is not None:
        run = session.get(FaithfulnessRun, run_id)
        if run is None:
            raise FaithfulnessError(f"no faithfulness run {run_id}; `rationale-audit "
                                    "faithfulness run --run GENERATION_RUN` makes one")
        return run
    query = select(FaithfulnessRun).where(FaithfulnessRun.status == RunStatus.finished)
    if generation_run_id is not None:
        query = query.where(FaithfulnessRun.generation_run_id == generation_run_id)
    run = session.execute(query.order_by(FaithfulnessRun.id.desc())).scalars().first()
    if run is None:
        where = f" for generation run {generation_run_id}" if generation_run_id else ""
        raise FaithfulnessError(f"no finished faithfulness run{where}; run `rationale-audit "
                                "faithfulness run --run GENERATION_RUN` first")
    return run


def scores(session: Session, run_id: int) -> list[FaithfulnessScore]:
    return list(session.execute(select(FaithfulnessScore).where(
        FaithfulnessScore.faithfulness_run_id == run_id).order_by(
        FaithfulnessScore.rationale_id)).scalars())


def margin(score: FaithfulnessScore) -> float | None:
    """Comprehensiveness minus the random baseline: how much more the cited evidence moves
    the prediction than as many uncited items do (None: see :func:`margin_state`)."""
    return margin_state(score)[0]


def runs_for(session: Session, generation_run_ids: set[int], run_id: int | None = None
             ) -> list[FaithfulnessRun]:
    """Run ``run_id``, or the newest finished run of each generation run that has one."""
    if run_id is not None:
        return [get_run(session, run_id)]
    runs = []
    for gid in sorted(generation_run_ids):
        try:
            runs.append(get_run(session, generation_run_id=gid))
        except FaithfulnessError:
            continue
    return runs


def margin_state(score: FaithfulnessScore) -> tuple[float | None, str | None]:
    """(margin, None), or (None, why there is no margin)."""
    if score.comprehensiveness is None:
        return None, "cites no evidence the history shows"
    if score.baseline is None:
        return None, "no random baseline (the history shows fewer uncited items than it cites)"
    return score.comprehensiveness - score.baseline, None


def margins(session: Session, rationale_ids: set[int], run_id: int | None = None
            ) -> dict[int, tuple[float | None, str | None]]:
    """Each rationale's :func:`margin_state` from faithfulness run ``run_id`` (None: for
    each rationale, the newest finished run of its generation run); a rationale with no
    score is absent."""
    from annotation_db.models import Rationale

    if not rationale_ids:
        return {}
    ids = sorted(rationale_ids)
    chunks = [ids[i:i + 900] for i in range(0, len(ids), 900)]  # bound-parameter limit
    generation_runs = {g for chunk in chunks for g in session.execute(
        select(Rationale.run_id).where(Rationale.id.in_(chunk))).scalars()}
    if run_id is not None:
        run = get_run(session, run_id)
        if run.generation_run_id not in generation_runs:
            raise FaithfulnessError(
                f"faithfulness run {run_id} ablated generation run {run.generation_run_id}, "
                f"not one of the rated runs ({', '.join(map(str, sorted(generation_runs)))})")
    found: dict[int, tuple[float | None, str | None]] = {}
    for run in runs_for(session, generation_runs, run_id):
        for chunk in chunks:
            for row in session.execute(select(FaithfulnessScore).where(
                    FaithfulnessScore.faithfulness_run_id == run.id,
                    FaithfulnessScore.rationale_id.in_(chunk))).scalars():
                found[row.rationale_id] = margin_state(row)
    return found


def margin_reason(state: tuple[float | None, str | None] | None, minimum: float) -> str | None:
    """Why the policy's ``min_comprehensiveness_margin`` rejects a rationale whose
    :func:`margin_state` is ``state`` (None: not scored); None when it does not."""
    if state is None:
        return "no faithfulness score"
    value, why = state
    if value is None:
        return why
    return f"comprehensiveness margin below {minimum:g}" if value < minimum else None


def identity(run: FaithfulnessRun) -> dict:
    """What an export records about the faithfulness run it used."""
    return {"faithfulness_run": run.id, "generation_run": run.generation_run_id,
            "content_hash": run.content_hash, "scorer": run.scorer, "settings": run.settings}
