"""The Runs screen's jobs as Ray jobs, for a team with a cluster (``RATIONALE_AUDIT_RAY_ADDRESS``).

:class:`RayJobRunner` has the local :class:`app.jobs.JobRunner`'s interface and
contract: it polls the ``job`` table, claims queued jobs, and records how each ended.
Each job is submitted through Ray's job API (``JobSubmissionClient``) as the same
entry point the local runner starts, ``python -m app.jobs JOB_ID``. Several jobs run
at once: each asks for ``cpus`` / ``gpus`` of the cluster, and Ray starts it when
they are free. ``max_concurrent`` bounds how many are submitted at a time.

- **Log tail**: the job's Ray log is copied into ``<jobs_dir>/job-<id>.log`` on
  every poll, so the screen reads it as it reads a local job's.
- **Cancel**: a job cancelled in the database is stopped with ``stop_job``. Ray
  sends SIGTERM, which the job turns into a cancelled run with its last checkpoint
  kept, then SIGKILL after a few seconds.
- **Restart**: a Ray job outlives the app that submitted it. On start, jobs marked
  running whose submission id the cluster still knows are adopted and followed to
  their end, not failed (and cancelled ones it still runs are stopped). The
  submission id is stored before the job is submitted, so none is lost in between.
  Local jobs left running are recovered as the local runner recovers them.
- **Adopted by the row, not the id**: a job is adopted (or stopped) only if the Ray job's
  metadata carries the row's launch token and names this app's database (as
  :mod:`app.jobs` explains). A second app on a copy of the database, pointed at the same
  cluster, finds the first app's jobs writing to the original: it leaves them running,
  follows none, passes on no cancel, and marks them failed in its copy. A job found while
  the cluster did not answer is checked at the first poll that gets an answer. A Ray job
  submitted before tokens existed is checked against the ``DATABASE_URL`` of its runtime
  environment, where the cluster shows it.
- **One run folder, one job**: a queued job whose configuration is that of a job
  still running on the cluster waits for it (a resume right after a cancel).
- A cluster that does not answer fails nothing: the poll is retried.

Every node must see the project's Python environment, the working directory and
the database under the same paths and URL, as for the grid's Ray executor
(``docs/scale.md``). The database URL reaches the job through Ray's runtime
environment, so whoever can read the cluster's job details can read it.
"""

import logging
import os
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import jobs as crud
from annotation_db.models import Job, RunStatus
from app.jobs import TOKEN_VARIABLE, database_identity, last_lines, new_token, stop_orphan

logger = logging.getLogger(__name__)

ADDRESS_VARIABLE = "RATIONALE_AUDIT_RAY_ADDRESS"
# what a job inherits from the app's environment, besides its database URL; tokens stay
# behind (the runtime environment is readable by whoever can read the cluster's jobs)
PASSED_ON = ("RATIONALE_AUDIT_", "HF_", "VLLM_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_")
NOT_PASSED_ON = frozenset({ADDRESS_VARIABLE, "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
# the Ray job's metadata that ties it to its row: the launch token and the database
TOKEN_KEY, DATABASE_KEY = "rationale_audit_token", "rationale_audit_database"


# how long a job is offered again to a cluster that refuses it as "try again later"
SUBMIT_PATIENCE_SECONDS = 60.0


def transient_refusal(exc: BaseException) -> bool:
    """Whether the cluster called its refusal transient (a node whose job agent has not
    registered yet answers "No available agent to submit job, please try again later")."""
    return "try again later" in str(exc)


class ClusterUnreachable(ConnectionError):
    """The job API did not answer (a network blip, a restarting dashboard): retry later."""


class RayJobRunner:
    executor = "ray"

    def __init__(self, engine: Engine, address: str, jobs_dir: str | Path = "jobs", *,
                 workdir: str | Path | None = None, poll_seconds: float = 1.0,
                 cpus: float = 1.0, gpus: float = 0.0, max_concurrent: int | None = None,
                 kill_grace_seconds: float = 10.0):
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise ImportError(f"{ADDRESS_VARIABLE} is set, but Ray's job API is not "
                              "installed: pip install 'rationale-audit[ray]'") from None
        self.engine = engine
        self.address = address
        self.workdir = Path(workdir or os.getcwd()).resolve()
        self.jobs_dir = Path(jobs_dir).resolve()
        self.poll_seconds = poll_seconds
        self.cpus, self.gpus = cpus, gpus
        self.max_concurrent = max_concurrent
        self.kill_grace_seconds = kill_grace_seconds
        try:
            self.client = JobSubmissionClient(address)
        except Exception as exc:
            raise ConnectionError(f"cannot reach the Ray cluster's job API at {address} "
                                  f"({ADDRESS_VARIABLE}): {exc}") from None
        self.tracked: dict[int, str] = {}  # job id → submission id
        self.unverified: set[int] = set()  # tracked, but not yet found to be this app's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the runner's life -------------------------------------------------------------

    def start(self) -> list[int]:
        """Adopt Ray jobs still known to the cluster, recover the rest, start polling.

        Returns the ids of the jobs marked failed (as the local runner does)."""
        elsewhere: set[int] = set()  # Ray jobs of this row's token, for another database
        with Session(self.engine) as session:
            # running jobs the cluster knows, and cancelled ones it still runs (a cancel
            # the previous app had no time to pass on), if they were launched from here
            for job in crud.dispatched(session, self.executor):
                try:
                    status = self._status(job.external_id)
                    ours = status is not None and self._launched_here(job)
                except ClusterUnreachable:  # follow it anyway, checked when it answers
                    self.tracked[job.id] = job.external_id
                    self.unverified.add(job.id)
                    continue
                if status is not None and not ours:
                    elsewhere.add(job.id)
                elif ours and (job.status == RunStatus.running or not status.is_terminal()):
                    self.tracked[job.id] = job.external_id
            url = self.engine.url.render_as_string(hide_password=False)

            def stop_process(job: Job) -> str | None:
                if job.executor == "local":
                    return stop_orphan(job, url, self.kill_grace_seconds)
                return self._left_alone(job) if job.id in elsewhere else None

            recovered = crud.recover_interrupted(session, stop_process,
                                                 keep=frozenset(self.tracked))
        self._thread = threading.Thread(target=self._loop, name="ray-job-runner", daemon=True)
        self._thread.start()
        return recovered

    def stop(self) -> None:
        """Stop polling. The jobs go on running on the cluster; the next app adopts them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep serving; the next tick retries
                logger.exception("Ray job runner tick failed")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        with Session(self.engine) as session:
            for job_id in list(self.tracked):
                try:
                    self._follow(session, job_id)
                except Exception:  # this job is retried next tick; the others go on
                    session.rollback()
                    logger.exception("following job %s failed", job_id)
            self._submit_queued(session)

    def _submit_queued(self, session: Session) -> None:
        """Submit queued jobs, oldest first, up to ``max_concurrent``.

        A job whose configuration is that of a job still running on the cluster waits:
        the two would train in the same run folder (a resume right after a cancel, or
        the same launch twice). Its turn comes once the other has ended."""
        for job in crud.queued(session):
            if self.max_concurrent is not None and len(self.tracked) >= self.max_concurrent:
                return
            busy = [session.get(Job, other) for other in self.tracked]
            if any(o is not None and o.kind == job.kind and o.config == job.config
                   for o in busy):
                continue
            claimed = crud.claim(session, job.id)
            if claimed is not None:
                self._submit(session, claimed)

    # -- one job -----------------------------------------------------------------------

    def _launched_here(self, job: Job) -> bool:
        """Whether ``job``'s Ray job was submitted for this row into this app's database:
        its metadata carries the row's token and names the database this app uses."""
        try:
            info = self.client.get_job_info(job.external_id)
        except Exception as exc:
            if "status code 404" in str(exc):
                return False
            raise ClusterUnreachable(f"the Ray job API at {self.address} did not answer "
                                     f"for {job.external_id}: {exc}") from exc
        metadata = info.metadata or {}
        database = metadata.get(DATABASE_KEY)
        if database is None:  # submitted before tokens: the URL its environment was given
            url = ((info.runtime_env or {}).get("env_vars") or {}).get("DATABASE_URL")
            database = database_identity(url, self.workdir) if url else None
        ours = database_identity(self.engine.url.render_as_string(hide_password=False),
                                 os.getcwd())
        return (metadata.get(TOKEN_KEY) == job.token and ours is not None
                and database == ours)

    @staticmethod
    def _left_alone(job: Job) -> str:
        return (f"its Ray job {job.external_id} still runs, for another database (this one "
                "is a copy of it), and was left alone")

    def _check_adopted(self, session: Session, job: Job) -> bool:
        """For a job adopted while the cluster did not answer: whether it is this app's.
        One that is not is no longer followed, and failed if marked running."""
        if self._launched_here(job):
            return True
        del self.tracked[job.id]
        if job.status == RunStatus.running:
            crud.end(session, job, RunStatus.failed,
                     error=f"interrupted: the app stopped while this job ran; "
                           f"{self._left_alone(job)}")
        return False

    def _status(self, submission_id: str):
        """The Ray job's status; None if the cluster does not know it (a new cluster, a
        purged job). A cluster that does not answer raises :class:`ClusterUnreachable`."""
        try:
            return self.client.get_job_status(submission_id)
        except Exception as exc:
            if "status code 404" in str(exc):
                return None
            raise ClusterUnreachable(f"the Ray job API at {self.address} did not answer "
                                     f"for {submission_id}: {exc}") from exc

    def _submit(self, session: Session, job: Job) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.jobs_dir / f"job-{job.id}.log"
        submission_id = f"rationale-audit-job-{job.id}-{uuid.uuid4().hex[:8]}"
        env = {key: value for key, value in os.environ.items()
               if key.startswith(PASSED_ON) and key not in NOT_PASSED_ON}
        url = self.engine.url.render_as_string(hide_password=False)
        token = new_token()
        env.update(DATABASE_URL=url, PYTHONUNBUFFERED="1", **{TOKEN_VARIABLE: token},
                   # the grace between SIGTERM and SIGKILL, as the local runner gives
                   RAY_JOB_STOP_WAIT_TIME_S=str(int(self.kill_grace_seconds)))
        entrypoint = (f"cd {shlex.quote(str(self.workdir))} && exec "
                      f"{shlex.quote(sys.executable)} -m app.jobs {job.id}")
        # recorded before submitting: an app that dies in between finds the job again
        crud.set_external(session, job, executor=self.executor, external_id=submission_id,
                          log_path=str(log_path), token=token)
        self.tracked[job.id] = submission_id
        try:
            self._submit_patiently(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env={"env_vars": env},
                                   entrypoint_num_cpus=self.cpus,
                                   entrypoint_num_gpus=self.gpus or None,
                                   metadata={"rationale_audit_job": str(job.id),
                                             TOKEN_KEY: token,
                                             # the job runs in workdir: its relative paths
                                             DATABASE_KEY: database_identity(url, self.workdir)
                                             or ""})
        except Exception as exc:
            if self._status(submission_id) is None:  # not accepted after all
                del self.tracked[job.id]
                if self._stop.is_set() and transient_refusal(exc):
                    crud.unclaim(session, job)  # the app stopped while the cluster waited
                    return
                crud.end(session, job, RunStatus.failed,
                         error=f"the Ray cluster at {self.address} refused the job: {exc}")

    def _submit_patiently(self, **submission) -> None:
        """``submit_job``, tried again while the cluster says its refusal is transient
        (:func:`transient_refusal`), for up to ``SUBMIT_PATIENCE_SECONDS``; any other
        refusal, or the last transient one, is raised."""
        deadline = time.monotonic() + SUBMIT_PATIENCE_SECONDS
        delay = 0.5
        while True:
            try:
                self.client.submit_job(**submission)
                return
            except Exception as exc:
                if (not transient_refusal(exc) or time.monotonic() + delay > deadline
                        or self._stop.wait(delay)):
                    raise
                delay = min(delay * 2, 5.0)

    def _follow(self, session: Session, job_id: int) -> None:
        from ray.job_submission import JobStatus

        submission_id = self.tracked[job_id]
        job = session.get(Job, job_id)
        if job is None:  # deleted from the database: stop following it
            del self.tracked[job_id]
            return
        session.refresh(job)
        status = self._status(submission_id)
        if job_id in self.unverified:
            if status is not None and not self._check_adopted(session, job):
                return
            self.unverified.discard(job_id)
        self._copy_log(job, submission_id)
        if status is None:
            crud.end(session, job, RunStatus.failed,
                     error=f"the Ray cluster no longer knows job {submission_id}")
            del self.tracked[job_id]
            return
        if not status.is_terminal():
            if job.status == RunStatus.cancelled:
                self.client.stop_job(submission_id)
            return
        if status == JobStatus.SUCCEEDED:
            crud.end(session, job, RunStatus.finished)
        elif status == JobStatus.STOPPED:  # by a cancel here (the row stays cancelled)
            crud.end(session, job, RunStatus.failed,  # or by someone on the cluster
                     error=f"stopped on the Ray cluster (job {submission_id})")
        else:
            crud.end(session, job, RunStatus.failed, error=self._last_error(job, submission_id))
        del self.tracked[job_id]

    def _copy_log(self, job: Job, submission_id: str) -> None:
        """The Ray job's log into the job's log file, where the screen reads it."""
        if not job.log_path:
            return
        try:
            text = self.client.get_job_logs(submission_id)
        except Exception:
            return
        path = Path(job.log_path)
        if not path.exists() or path.stat().st_size != len(text.encode()):
            path.write_text(text)

    def _last_error(self, job: Job, submission_id: str) -> str:
        if lines := last_lines(job):
            return lines
        try:
            return self.client.get_job_info(submission_id).message or "the Ray job failed"
        except Exception:
            return "the Ray job failed without output"


def runner_for(engine: Engine, jobs_dir: str | Path, workdir: str | Path | None):
    """The Ray runner when ``RATIONALE_AUDIT_RAY_ADDRESS`` is set, else the local one.

    ``RATIONALE_AUDIT_RAY_JOB_CPUS`` / ``_GPUS`` / ``_MAX_CONCURRENT`` size the Ray jobs."""
    address = os.environ.get(ADDRESS_VARIABLE)
    if not address:
        from app.jobs import JobRunner

        return JobRunner(engine, jobs_dir, workdir=workdir)
    limit = os.environ.get("RATIONALE_AUDIT_RAY_MAX_CONCURRENT")
    return RayJobRunner(engine, address, jobs_dir, workdir=workdir,
                        cpus=float(os.environ.get("RATIONALE_AUDIT_RAY_JOB_CPUS", "1")),
                        gpus=float(os.environ.get("RATIONALE_AUDIT_RAY_JOB_GPUS", "0")),
                        max_concurrent=int(limit) if limit else None)
