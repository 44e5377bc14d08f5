"""Background training jobs for the app: one worker thread, one job process at a time.

:class:`JobRunner` polls the ``job`` table (:mod:`annotation_db.jobs`), starts the
oldest queued job as ``python -m app.jobs JOB_ID`` in its own process group, with
its output in ``<jobs_dir>/job-<id>.log``, and records how it ended. Cancelling
a job in the database makes the runner stop its process group (SIGTERM, then
SIGKILL). On start, jobs left "running" by a previous app process are marked
failed with the reason.

**Which process is a job's.** A job's row, not its pid, says which process is its own. At
launch the runner writes a random token (``secrets.token_hex(16)``) into the row, then starts
the process with that token (``RATIONALE_AUDIT_JOB_TOKEN``) and the database URL
(``DATABASE_URL``) in its environment. A starting app treats the process at a row's pid as
that job's (and stops it, so a resume never trains beside it) only if all of this holds:

- the row's executor is ``local`` (a Ray job's pid is on the cluster's node);
- it is alive and its command line ends ``app.jobs JOB_ID`` (``/proc/PID/cmdline``), so a
  pid the system reused for something else is never touched;
- it started with this row's token (``/proc/PID/environ``), so it was launched for this
  row, not for job JOB_ID of another database;
- the database URL it started with names the database this app uses: the same SQLite
  file (resolved against each one's working folder) or the same PostgreSQL server,
  user and database.

The token alone cannot tell a copy of the database from the original: a copy carries the
same rows, tokens and pids. The database check does: a second app on a copy (a backup
restored elsewhere, a file copied for a test) finds the first app's job writing to the
original, so it leaves that process running and marks the job failed in its copy, naming
why. Rotating the token would not help, as both copies would have to learn the new one;
nor can the process be asked over the database, since a training step does not poll its
row. An app must therefore be started with the URL its jobs got: the same database spelt
differently (``localhost`` for ``127.0.0.1``) is taken for another one, and its job is
left running and marked failed rather than stopped (the safe side). The job process checks
the handshake too: one started with a token that is not its row's refuses to run. A row
written before tokens existed (token NULL) matches a process started without one, so a job
from before the upgrade is still recognised, by its command line and database.
Ray jobs (:mod:`app.ray_jobs`) carry the same token and database in their metadata.

With ``RATIONALE_AUDIT_RAY_ADDRESS`` set, the app uses :class:`app.ray_jobs.RayJobRunner`
instead: the same jobs, submitted to a Ray cluster, several at once.

Run as a module, this file executes one job: the same functions the CLI calls
(``train``, ``evaluate_run``, ``run_fewshot``, ``run_grid``), printing progress.
"""

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

from annotation_db import jobs as crud
from annotation_db.models import Job, RunStatus

logger = logging.getLogger(__name__)

TOKEN_VARIABLE = "RATIONALE_AUDIT_JOB_TOKEN"  # the launch token, in the job's environment


class JobRunner:
    # what is started, followed by the job's id: ``python -m app.jobs JOB_ID``
    entry_point: tuple[str, ...] = ("-m", "app.jobs")

    def __init__(self, engine: Engine, jobs_dir: str | Path = "jobs", poll_seconds: float = 0.5,
                 kill_grace_seconds: float = 10.0, workdir: str | Path | None = None):
        self.engine = engine
        self.workdir = Path(workdir or os.getcwd()).resolve()  # where runs/ and exports/ are
        self.jobs_dir = Path(jobs_dir).resolve()
        self.poll_seconds = poll_seconds
        self.kill_grace_seconds = kill_grace_seconds
        self.process: subprocess.Popen | None = None
        self.job_id: int | None = None
        self.oom_kills_at_launch: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> list[int]:
        """Mark interrupted jobs failed, then start polling; returns the recovered ids."""
        with Session(self.engine) as session:
            recovered = crud.recover_interrupted(
                session, lambda job: stop_orphan(job, self._database_url(),
                                                 self.kill_grace_seconds))
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
                crud.end(session, job, RunStatus.failed,
                         error=exit_reason(returncode, job, self.oom_kills_at_launch))
            self.process, self.job_id = None, None

    def _database_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    def _launch(self, session: Session, job: Job) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.jobs_dir / f"job-{job.id}.log"
        token = crud.set_token(session, job, new_token())  # in the row before the process
        env = {**os.environ, "DATABASE_URL": self._database_url(), "PYTHONUNBUFFERED": "1",
               TOKEN_VARIABLE: token}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.entry_point, str(job.id)], stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.workdir)
        self.job_id = job.id
        self.oom_kills_at_launch = oom_kills()
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



# This container's out-of-memory kill counter: cgroup v2, then v1 (both "oom_kill N").
CGROUP_EVENTS = (Path("/sys/fs/cgroup/memory.events"),
                 Path("/sys/fs/cgroup/memory/memory.oom_control"))


def oom_kills(events: tuple[Path, ...] = CGROUP_EVENTS) -> int | None:
    """How many processes the kernel's out-of-memory killer has killed in this cgroup
    (None where no counter can be read)."""
    for path in events:
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def exit_reason(returncode: int, job: Job, oom_before: int | None = None,
                events: tuple[Path, ...] = CGROUP_EVENTS) -> str:
    """Why a job's process ended badly, in words a researcher can act on. A SIGKILL is
    named out of memory when the cgroup's OOM-kill counter moved while the job ran, and
    as its most likely cause otherwise; the log's last lines follow."""
    tail = last_lines(job)
    after = oom_kills(events)
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        if oom_before is not None and after is not None and after > oom_before:
            why = ("out of memory: the kernel's out-of-memory killer stopped the job (it "
                   "needed more memory than the machine had free)")
        else:
            why = ("killed (SIGKILL) with no stop asked for: most likely out of memory (the "
                   "kernel's out-of-memory killer)")
        why += ("; lower the batch size or max length, or use a preset, and see Check's "
                "memory estimate")
    elif returncode < 0:
        try:
            why = f"stopped by signal {signal.Signals(-returncode).name}"
        except ValueError:  # a signal Python has no name for (real-time ones)
            why = f"stopped by signal {-returncode}"
    else:
        return tail or f"the job's process exited with status {returncode} without output"
    return why + (f"\nlast output:\n{tail}" if tail else "")


def last_lines(job: Job, n: int = 5) -> str:
    """The last ``n`` non-blank lines of a job's log ('' if it has none)."""
    lines = Path(job.log_path).read_text(errors="replace").splitlines() if job.log_path \
        and Path(job.log_path).exists() else []
    return "\n".join([line for line in lines if line.strip()][-n:])


def new_token() -> str:
    """A job's launch token: random, so no other launch (here or in a copy) guesses it."""
    return secrets.token_hex(16)


def database_identity(url: str, cwd: str | Path) -> str | None:
    """Which database ``url`` names, as text to compare: ``sqlite:`` and the file's absolute
    path (a relative one resolved against ``cwd``, the folder of whoever opens it), or the
    backend, user, host, port and database name (no driver, no password). None for an
    in-memory SQLite database or a URL that does not parse: it names no shared database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            return None
        return f"sqlite:{(Path(cwd) / parsed.database).resolve()}"
    return (f"{backend}://{parsed.username or ''}@{parsed.host or ''}:{parsed.port or ''}"
            f"/{parsed.database or ''}")


def _started_with(pid: int, job_id: int) -> tuple[dict[str, str], str] | None:
    """The environment and working folder process ``pid`` started with, if it is alive and
    is job ``job_id``'s runner (its command line ends ``app.jobs JOB_ID``); else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        if argv[-2:] != [b"app.jobs", str(job_id).encode()]:
            return None
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    environ = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    return environ, cwd


def process_of(job: Job, database_url: str) -> Literal["here", "elsewhere"] | None:
    """Whether the process at ``job.pid`` is this job's (see the module's docstring).

    "here": launched for this row (its token) into ``database_url``'s database.
    "elsewhere": launched for this row's token, but into another database: this row is
    in a copy of that one. None: no such process (ended, or the pid is another's), or the
    job is not a local one (a Ray job's process is the cluster's to stop)."""
    started = _started_with(job.pid, job.id) if job.pid and job.executor == "local" else None
    if started is None:
        return None
    environ, cwd = started
    if environ.get(TOKEN_VARIABLE) != job.token:
        return None
    ours = database_identity(database_url, os.getcwd())
    theirs = database_identity(environ.get("DATABASE_URL", ""), cwd)
    return "here" if ours is not None and theirs == ours else "elsewhere"


def stop_orphan(job: Job, database_url: str, grace_seconds: float = 10.0) -> str | None:
    """Stop the process a previous app left running for ``job`` in ``database_url``'s
    database; returns what was found, for the job's error (None: no process of it).

    Only a process that :func:`process_of` finds "here" is stopped, on this host
    (``/proc``); elsewhere nothing is found and the job is simply marked failed."""
    found = process_of(job, database_url)
    if found == "elsewhere":
        return ("its process still runs, for another database (this one is a copy of it), "
                "and was left alone")
    if found is None:
        return None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(job.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and process_of(job, database_url) == "here":
            time.sleep(0.1)
        if process_of(job, database_url) != "here":
            break
    return "still running then and stopped now"


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
    from training.evaluate import evaluate_run
    from training.evaluate_config import EvaluateConfig

    # Cancel sends SIGTERM: turn it into KeyboardInterrupt so the run's row is
    # marked cancelled and the last checkpoint stays usable for a resume.
    signal.signal(signal.SIGTERM, _interrupt)
    engine = make_engine(database_url(None))
    with Session(engine) as session:
        job = crud.get_job(session, job_id)
        kind, config, command = job.kind, job.config, job.command
        token = os.environ.get(TOKEN_VARIABLE)
        if token is not None and token != job.token:  # the handshake, seen from this side
            raise SystemExit(f"job {job_id}: this process was started with another launch "
                             "token than the job's row holds; not running it")
        if job.executor != "local":  # a Ray job: its process is known only from here
            job.pid = os.getpid()
            session.commit()
    def say(message: str) -> None:
        sys.stdout.write(f"• {message}\n")
        sys.stdout.flush()

    say(f"job {job_id} ({kind}): {command}")
    if kind == "sft":
        from training.sft import train
        from training.sft_config import SFTRunConfig

        run = train(engine, SFTRunConfig.from_stored(config["config"]), on_stage=say,
                    on_run=lambda started: _link(engine, job_id, started.id))
        _link(engine, job_id, run.id)
        result = evaluate_run(engine, str(run.id),
                              EvaluateConfig.model_validate(config.get("evaluate", {})),
                              on_stage=say)
        say(f"run {run.id}: test AUROC {result.auroc}")
    elif kind == "fewshot":
        from training.fewshot import run_fewshot
        from training.fewshot_config import FewShotConfig

        result = run_fewshot(engine, FewShotConfig.model_validate(config["config"]),
                             on_stage=say)
        _link(engine, job_id, result.training_run_id)
        say(f"run {result.training_run_id}: test AUROC {result.auroc}")
    else:
        from training.grid.config import ExperimentGrid
        from training.grid.experiment import run_experiment

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
