"""Background training jobs for the app: one worker thread, one job process at a time.

:class:`JobRunner` polls the ``job`` table (:mod:`annotation_db.jobs`), starts the
oldest queued job as ``python -m app.jobs JOB_ID`` in its own process group, with
its output in ``<jobs_dir>/job-<id>.log``, and records how it ended. Cancelling
a job in the database makes the runner stop its process group (SIGTERM, then
SIGKILL). On start, jobs left "running" by a previous app process are marked
failed with the reason.

With ``RATIONALE_AUDIT_RAY_ADDRESS`` set, the app uses :class:`app.ray_jobs.RayJobRunner`
instead: the same jobs, submitted to a Ray cluster, several at once.

Run as a module, this file executes one job: the same functions the CLI calls
(``train``, ``evaluate_run``, ``run_fewshot``, ``run_grid``), printing progress.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import jobs as crud
from annotation_db.models import Job, RunStatus

logger = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, engine: Engine, jobs_dir: str | Path = "jobs", poll_seconds: float = 0.5,
                 kill_grace_seconds: float = 10.0, workdir: str | Path | None = None):
        self.engine = engine
        self.workdir = Path(workdir or os.getcwd()).resolve()  # where runs/ and exports/ are
        self.jobs_dir = Path(jobs_dir).resolve()
        self.poll_seconds = poll_seconds
        self.kill_grace_seconds = kill_grace_seconds
        self.process: subprocess.Popen | None = None
        self.job_id: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> list[int]:
        """Mark interrupted jobs failed, then start polling; returns the recovered ids."""
        with Session(self.engine) as session:
            recovered = crud.recover_interrupted(
                session, lambda job: stop_orphan(job, self.kill_grace_seconds))
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self._thread.start()
        return recovered

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.process is not None and self.process.poll() is None:
            self._kill()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # keep serving; the next tick retries
                logger.exception("job runner tick failed")
            self._stop.wait(self.poll_seconds)

    def tick(self) -> None:
        with Session(self.engine) as session:
            if self.process is None:
                job = crud.claim_next(session)
                if job is not None:
                    self._launch(session, job)
                return
            job = session.get(Job, self.job_id)
            returncode = self.process.poll()
            if returncode is None:
                if job.status == RunStatus.cancelled:
                    self._kill()
                return
            if returncode == 0:
                crud.end(session, job, RunStatus.finished)
            else:
                crud.end(session, job, RunStatus.failed, error=self._last_error(job))
            self.process, self.job_id = None, None

    def _launch(self, session: Session, job: Job) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.jobs_dir / f"job-{job.id}.log"
        env = {**os.environ, "DATABASE_URL":
               self.engine.url.render_as_string(hide_password=False),
               "PYTHONUNBUFFERED": "1"}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.jobs", str(job.id)], stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.workdir)
        self.job_id = job.id
        crud.set_process(session, job, self.process.pid, str(log_path))

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.kill_grace_seconds
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    @staticmethod
    def _last_error(job: Job) -> str:
        return last_lines(job) or "the job's process failed without output"


def last_lines(job: Job, n: int = 5) -> str:
    """The last ``n`` non-blank lines of a job's log ('' if it has none)."""
    lines = Path(job.log_path).read_text(errors="replace").splitlines() if job.log_path \
        and Path(job.log_path).exists() else []
    return "\n".join([line for line in lines if line.strip()][-n:])


def _is_job_process(pid: int, job_id: int) -> bool:
    """Whether ``pid`` is alive and is ``python -m app.jobs JOB_ID`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return False
    return argv[-2:] == [b"app.jobs", str(job_id).encode()]


def stop_orphan(job: Job, grace_seconds: float = 10.0) -> bool:
    """Stop a job process a previous app left behind; True if one was running.

    Only a process whose command line is this job's is touched, on this host
    (``/proc``); elsewhere nothing is found and the job is simply marked failed."""
    if not job.pid or not _is_job_process(job.pid, job.id):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(job.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and _is_job_process(job.pid, job.id):
            time.sleep(0.1)
        if not _is_job_process(job.pid, job.id):
            break
    return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def log_tail(job: Job, lines: int = 40) -> str:
    if not job.log_path or not Path(job.log_path).exists():
        return ""
    text = Path(job.log_path).read_text(errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def run_job(job_id: int) -> None:
    """Execute one job in this process (what the runner's subprocess does)."""
    from annotation_db.session import database_url, make_engine
    from training.evaluate import EvaluateConfig, evaluate_run

    # Cancel sends SIGTERM: turn it into KeyboardInterrupt so the run's row is
    # marked cancelled and the last checkpoint stays usable for a resume.
    signal.signal(signal.SIGTERM, _interrupt)
    engine = make_engine(database_url(None))
    with Session(engine) as session:
        job = crud.get_job(session, job_id)
        kind, config, command = job.kind, job.config, job.command
        if job.executor != "local":  # a Ray job: its process is known only from here
            job.pid = os.getpid()
            session.commit()
    def say(message: str) -> None:
        sys.stdout.write(f"• {message}\n")
        sys.stdout.flush()

    say(f"job {job_id} ({kind}): {command}")
    if kind == "sft":
        from training.sft import SFTRunConfig, train

        run = train(engine, SFTRunConfig.model_validate(config["config"]), on_stage=say)
        _link(engine, job_id, run.id)
        result = evaluate_run(engine, str(run.id),
                              EvaluateConfig.model_validate(config.get("evaluate", {})),
                              on_stage=say)
        say(f"run {run.id}: test AUROC {result.auroc}")
    elif kind == "fewshot":
        from training.fewshot import FewShotConfig, run_fewshot

        result = run_fewshot(engine, FewShotConfig.model_validate(config["config"]),
                             on_stage=say)
        _link(engine, job_id, result.training_run_id)
        say(f"run {result.training_run_id}: test AUROC {result.auroc}")
    else:
        from training.grid import ExperimentGrid, run_experiment

        out = run_experiment(engine, ExperimentGrid.model_validate(config["config"]),
                             on_stage=say)
        say(f"report: {Path(out['folder']).resolve()}/results.md")


def _link(engine: Engine, job_id: int, run_id: int) -> None:
    with Session(engine) as session:
        job = crud.get_job(session, job_id)
        job.training_run_id = run_id
        session.commit()


if __name__ == "__main__":
    run_job(int(sys.argv[1]))
