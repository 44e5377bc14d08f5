"""Training jobs launched from the app: a queue in the database.

A job holds a validated run configuration (SFT, few-shot or grid) and the
command line that runs it. :class:`app.jobs.JobRunner` executes queued jobs one
at a time as subprocesses. Job state lives only here, so a page reload or a
second browser sees the same queue; :func:`recover_interrupted` marks jobs that
were running when the app stopped as failed, with the reason, so none stays
"running" forever. A failed or cancelled job can be resumed: the new job has the
same configuration, so it reuses the same run folder and continues from its last
checkpoint. Jobs dispatched to a Ray cluster (:mod:`app.ray_jobs`) keep their submission
id, so an app that restarts finds them again instead of failing them. Each launch writes
a random token into the row (:func:`set_token`) that its process or Ray job carries: an
app recognises a job left running by its row (executor, submission id, token) and its
database, never by a pid alone (:mod:`app.jobs` says how).
"""

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlmodel import Session

from annotation_db import audit
from annotation_db.errors import UserError
from annotation_db.models import Job, JobKind, RunStatus, TrainingRun, User

ACTIVE = (RunStatus.queued, RunStatus.running)


class JobError(UserError):
    """A job that cannot be created, found or changed as asked."""


def enqueue(session: Session, *, kind: str, config: dict, command: str, user: User,
            resumed_from: int | None = None, address: str | None = None) -> Job:
    if kind not in {k.value for k in JobKind}:
        raise JobError(f"job kind must be sft, fewshot or grid, not {kind!r}")
    job = Job(kind=kind, config=config, command=command, created_by=user.id,
              resumed_from=resumed_from)
    session.add(job)
    session.flush()
    audit.record(session, "job_resumed" if resumed_from else "job_launched",
                 actor=user.username, address=address, target=f"job {job.id}", commit=False,
                 kind=kind, command=command, **({"resumed_from": resumed_from}
                                                 if resumed_from else {}))
    session.commit()
    session.refresh(job)
    return job


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobError(f"no job {job_id}")
    return job


def list_jobs(session: Session, limit: int = 50) -> list[Job]:
    return list(session.execute(select(Job).order_by(Job.id.desc()).limit(limit)).scalars())


def claim(session: Session, job_id: int) -> Job | None:
    """Mark job ``job_id`` running if it is still queued; None if another runner (or a
    cancel) got there first. A conditional UPDATE, so no two runners sharing one
    database start the same job."""
    claimed = session.execute(
        update(Job).where(Job.id == job_id, Job.status == RunStatus.queued)
        .values(status=RunStatus.running, started_at=datetime.now(UTC))).rowcount
    session.commit()
    return get_job(session, job_id) if claimed else None


def claim_next(session: Session) -> Job | None:
    """The oldest queued job, claimed (the caller starts its process)."""
    while True:
        job_id = session.execute(select(Job.id).where(Job.status == RunStatus.queued)
                                 .order_by(Job.id).limit(1)).scalar()
        if job_id is None:
            return None
        if (job := claim(session, job_id)) is not None:
            return job


def set_token(session: Session, job: Job, token: str) -> str:
    """Record the launch token of ``job`` (committed before its process starts, which
    checks it) and return it."""
    job.token = token
    session.commit()
    return token


def set_process(session: Session, job: Job, pid: int, log_path: str) -> None:
    job.pid, job.log_path = pid, log_path
    session.commit()


def set_external(session: Session, job: Job, *, executor: str, external_id: str,
                 log_path: str, token: str | None = None) -> None:
    """Record where a job was dispatched (a Ray job's submission id), its launch token and
    its log file."""
    job.executor, job.external_id, job.log_path = executor, external_id, log_path
    job.token = token
    session.commit()


def dispatched(session: Session, executor: str, recent: int = 200) -> list[Job]:
    """Jobs ``executor`` dispatched that are marked running, or cancelled (among the
    ``recent`` latest): what an app restarting finds again on the cluster."""
    rows = session.execute(
        select(Job).where(Job.executor == executor, Job.external_id.is_not(None),
                          Job.status.in_([RunStatus.running, RunStatus.cancelled]))
        .order_by(Job.id.desc()).limit(recent)).scalars()
    return sorted(rows, key=lambda job: job.id)


def unclaim(session: Session, job: Job) -> None:
    """Put a claimed job back in the queue, as it was before its claim (its dispatch did
    not happen: the runner stopped first); a job cancelled meanwhile stays cancelled."""
    session.execute(update(Job).where(Job.id == job.id, Job.status == RunStatus.running)
                    .values(status=RunStatus.queued, started_at=None, executor="local",
                            external_id=None, log_path=None, token=None))
    session.commit()
    session.refresh(job)


def queued(session: Session) -> list[Job]:
    """Queued jobs, oldest first."""
    return list(session.execute(select(Job).where(Job.status == RunStatus.queued)
                                .order_by(Job.id)).scalars())


def end(session: Session, job: Job, status: RunStatus, error: str | None = None,
        training_run_id: int | None = None) -> None:
    """Record how a job ended; a job cancelled meanwhile stays cancelled (the
    UPDATE only applies while it is still running, so a cancel cannot be lost)."""
    values: dict = {"status": status, "error": error, "finished_at": datetime.now(UTC)}
    if training_run_id is not None:
        values["training_run_id"] = training_run_id
    ended = session.execute(update(Job).where(Job.id == job.id,
                                              Job.status == RunStatus.running)
                            .values(**values)).rowcount == 1
    session.commit()
    session.refresh(job)
    if ended and status == RunStatus.failed:  # a job cancelled meanwhile failed nothing
        fail_linked_run(session, job, error or "its job failed")


def fail_linked_run(session: Session, job: Job, reason: str) -> None:
    """A job that died takes its training run with it: a run still marked running is
    marked failed with the job's reason (committed), so nothing stays "running"."""
    if job.training_run_id is None:
        return
    session.execute(update(TrainingRun).where(
        TrainingRun.id == job.training_run_id, TrainingRun.status == RunStatus.running)
        .values(status=RunStatus.failed, error=f"job {job.id}: {reason}",
                finished_at=datetime.now(UTC)))
    session.commit()


def cancel(session: Session, job_id: int, user: User | None = None,
           address: str | None = None) -> Job:
    """Mark a queued or running job cancelled; the runner stops its process."""
    job = get_job(session, job_id)
    if job.status not in ACTIVE:
        raise JobError(f"job {job_id} is {job.status}; only queued or running jobs can be "
                       "cancelled")
    job.status = RunStatus.cancelled
    job.error = "cancelled by a user"
    job.finished_at = datetime.now(UTC)
    audit.record(session, "job_cancelled", actor=user.username if user else None,
                 address=address, target=f"job {job.id}", commit=False)
    session.commit()
    session.refresh(job)
    return job


def resume(session: Session, job_id: int, user: User, address: str | None = None) -> Job:
    """Queue a failed or cancelled job again; training continues from its last checkpoint."""
    job = get_job(session, job_id)
    if job.status not in (RunStatus.failed, RunStatus.cancelled):
        raise JobError(f"job {job_id} is {job.status}; only failed or cancelled jobs resume")
    return enqueue(session, kind=job.kind, config=job.config, command=job.command, user=user,
                   resumed_from=job.id, address=address)


def recover_interrupted(session: Session, stop_process=None,
                        keep: frozenset[int] = frozenset()) -> list[int]:
    """Mark jobs left running by a stopped app as failed; return their ids.

    A job's process runs in its own session and can outlive the app that started
    it; ``stop_process(job)`` (see :func:`app.jobs.stop_orphan`) is called first, so
    a resumed job never trains beside its orphan in the same run folder. It returns
    what it found, added to the job's error ("still running then and stopped now"), or
    nothing if no process of the job was found. Jobs in ``keep`` are left alone (Ray
    jobs the new app has found still running, and adopts)."""
    stale = [job for job in session.execute(
        select(Job).where(Job.status == RunStatus.running)).scalars() if job.id not in keep]
    for job in stale:
        found = stop_process(job) if stop_process is not None else None
        job.status = RunStatus.failed
        job.error = (f"interrupted: the app stopped while this job ran (pid {job.pid}"
                     f"{', ' + found if found else ''}); "
                     "resume it to continue from its last checkpoint")
        job.finished_at = datetime.now(UTC)
    session.commit()
    for job in stale:
        fail_linked_run(session, job, job.error)
    return [job.id for job in stale]
