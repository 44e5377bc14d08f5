"""A job left running is recognised by its database row, never by its pid alone.

The job processes here are launched by the real :class:`JobRunner` (its environment, its
own session, its working folder), with a stand-in that sleeps instead of training: its
command line ends ``app.jobs JOB_ID`` as a real job's does."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import jobs, users
from annotation_db.models import Job
from annotation_db.session import make_engine
from app.jobs import TOKEN_VARIABLE, JobRunner, database_identity, process_of, stop_orphan
from tests.helpers import PASSWORD

pytestmark = pytest.mark.server  # the app's server (or the CLI) as a process or thread

SLEEPER = ("-c", "import time; time.sleep(120)", "app.jobs")  # + the job id, as the runner


def _runner(engine: Engine, folder: Path) -> JobRunner:
    runner = JobRunner(engine, folder / "jobs", poll_seconds=60, kill_grace_seconds=2,
                       workdir=folder)
    runner.entry_point = SLEEPER
    return runner


def _launched(engine: Engine, folder: Path) -> tuple[JobRunner, Job]:
    """A first app's runner with one job running: its (stand-in) process launched."""
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        jobs.enqueue(s, kind="sft", config={}, command="c", user=admin)
    runner = _runner(engine, folder)
    runner.tick()
    assert runner.process is not None and runner.process.poll() is None
    with Session(engine) as s:
        job = s.get(Job, runner.job_id)
    # launched means exec'd: for a few ms after the fork /proc shows no command line of
    # the job yet, and an app restarting that soon finds no process of it (seen once on a
    # loaded machine)
    deadline = time.monotonic() + 30
    while (process_of(job, _url(engine)) != "here" and runner.process.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert process_of(job, _url(engine)) == "here"
    return runner, job


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _alive(process: subprocess.Popen, seconds: float = 1.0) -> bool:
    """Still running ``seconds`` from now (a stop is not missed by looking too early)."""
    time.sleep(seconds)
    return process.poll() is None


@contextmanager
def _copy_of(engine: Engine, folder: Path) -> Iterator[Engine]:
    """An engine on a copy of ``engine``'s database: a SQLite backup into another file, or
    a PostgreSQL database created from it as a template."""
    if engine.url.get_backend_name() == "sqlite":
        target = folder / "copy.sqlite"
        source, copy = sqlite3.connect(engine.url.database), sqlite3.connect(target)
        source.backup(copy)
        source.close()
        copy.close()
        copied = make_engine(f"sqlite:///{target}")
        yield copied
        copied.dispose()
        return
    name = f"{engine.url.database}_copy"
    admin = create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    engine.dispose()  # a template must have no other connection
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{engine.url.database}"'))
    copied = make_engine(engine.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield copied
    finally:
        copied.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def _stopped_at_end(*processes: subprocess.Popen):
    try:
        yield
    finally:
        for process in processes:
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.wait(timeout=10)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_launch_writes_a_random_token_into_the_row_and_the_process(engine, tmp_path):
    runner, job = _launched(engine, tmp_path)
    with _stopped_at_end(runner.process):
        assert re.fullmatch(r"[0-9a-f]{32}", job.token)
        environ = _environ(job.pid)
        assert environ[TOKEN_VARIABLE] == job.token
        assert environ["DATABASE_URL"] == _url(engine)
        assert process_of(job, _url(engine)) == "here"
        job.executor = "ray"  # were the row a Ray job's, its process is not the runner's
        assert process_of(job, _url(engine)) is None


def test_a_second_app_on_a_copy_of_the_database_leaves_the_first_apps_job_running(
        engine, tmp_path):
    first, job = _launched(engine, tmp_path)
    with _stopped_at_end(first.process):
        with _copy_of(engine, tmp_path) as copy:
            second = _runner(copy, tmp_path / "second")
            try:
                assert second.start() == [job.id]  # failed in its copy ...
            finally:
                second.stop()
            assert _alive(first.process)  # ... and the first app's process left alone
            with Session(copy) as s:
                copied = s.get(Job, job.id)
                assert copied.status == "failed"
                assert copied.error == (
                    f"interrupted: the app stopped while this job ran (pid {job.pid}, its "
                    "process still runs, for another database (this one is a copy of it), "
                    "and was left alone); resume it to continue from its last checkpoint")
        with Session(engine) as s:  # the original is untouched; its app still runs the job
            assert s.get(Job, job.id).status == "running"
            jobs.cancel(s, job.id)
        first.tick()
        assert first.process.wait(timeout=10) == -signal.SIGTERM


def test_an_app_restarting_on_its_own_database_recognises_and_stops_its_own_job(
        engine, tmp_path):
    before, job = _launched(engine, tmp_path)
    with _stopped_at_end(before.process):
        restarted = _runner(engine, tmp_path)  # the same database, the same URL
        try:
            assert restarted.start() == [job.id]
        finally:
            restarted.stop()
        assert before.process.wait(timeout=10) == -signal.SIGTERM
        with Session(engine) as s:
            assert s.get(Job, job.id).error == (
                f"interrupted: the app stopped while this job ran (pid {job.pid}, still "
                "running then and stopped now); resume it to continue from its last "
                "checkpoint")


def test_a_pid_reused_by_another_process_is_never_taken_for_the_job(engine, tmp_path):
    """At the row's pid: an unrelated program; a job runner for this job id started by
    hand (no token); and one with this database but another launch's token."""
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        job = jobs.enqueue(s, kind="sft", config={}, command="c", user=admin)
        job = jobs.claim_next(s)
        jobs.set_token(s, job, "a" * 32)
        s.refresh(job)
        s.expunge(job)  # a detached copy, its pid set by hand below
    stand_in = [sys.executable, *SLEEPER, str(job.id)]
    unrelated = subprocess.Popen(["sleep", "120"], start_new_session=True)
    by_hand = subprocess.Popen(stand_in, start_new_session=True,
                               env={**os.environ, "DATABASE_URL": _url(engine)})
    other_launch = subprocess.Popen(stand_in, start_new_session=True, env={
        **os.environ, "DATABASE_URL": _url(engine), TOKEN_VARIABLE: "b" * 32})
    with _stopped_at_end(unrelated, by_hand, other_launch):
        time.sleep(0.5)  # each has exec'd its command line
        for process in (unrelated, by_hand, other_launch):
            job.pid = process.pid
            assert process_of(job, _url(engine)) is None
            assert stop_orphan(job, _url(engine), grace_seconds=1) is None
            assert _alive(process, 0)
        with Session(engine) as s:
            jobs.set_process(s, s.get(Job, job.id), other_launch.pid, str(tmp_path / "j.log"))
        restarted = _runner(engine, tmp_path)
        try:
            assert restarted.start() == [job.id]
        finally:
            restarted.stop()
        assert all(_alive(p, 0) for p in (unrelated, by_hand, other_launch))
        with Session(engine) as s:
            assert "stopped now" not in s.get(Job, job.id).error


def test_a_job_process_refuses_a_token_that_is_not_its_rows(engine, tmp_path):
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        job_id = jobs.enqueue(s, kind="sft", config={}, command="c", user=admin).id
        jobs.set_token(s, s.get(Job, job_id), "a" * 32)
    done = subprocess.run([sys.executable, "-m", "app.jobs", str(job_id)], text=True,
                          capture_output=True, timeout=120, env={
                              **os.environ, "DATABASE_URL": _url(engine),
                              TOKEN_VARIABLE: "b" * 32})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"job {job_id}: this process was started with another launch token than the job's "
        "row holds; not running it")


def test_the_database_identity_is_the_file_or_the_server_and_database(tmp_path):
    (tmp_path / "sub").mkdir()
    absolute = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert database_identity(absolute, "/") == f"sqlite:{tmp_path / 'db.sqlite'}"
    assert database_identity("sqlite:///db.sqlite", tmp_path) == database_identity(
        absolute, "/")
    assert database_identity("sqlite:///../db.sqlite", tmp_path / "sub") == \
        database_identity(absolute, "/")
    assert database_identity("sqlite:///db.sqlite", tmp_path / "sub") != \
        database_identity(absolute, "/")
    assert database_identity("sqlite://", tmp_path) is None
    assert database_identity("sqlite:///:memory:", tmp_path) is None
    assert database_identity("not a url", tmp_path) is None
    pg = "postgresql+psycopg://rita:secret@db.example:5432/audit"
    assert database_identity(pg, "/") == "postgresql://rita@db.example:5432/audit"
    assert database_identity("postgresql://rita:other@db.example:5432/audit", "/") == \
        database_identity(pg, "/")
    assert database_identity("postgresql+psycopg://rita@db.example:5432/audit_copy", "/") \
        != database_identity(pg, "/")
