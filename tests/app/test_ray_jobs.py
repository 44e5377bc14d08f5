"""The Runs screen's jobs on a Ray cluster: a real local cluster with its job API, the app
driven through gradio_client, as a researcher would use it."""

import os
import sqlite3
import time

import pytest
from sqlmodel import Session, select

from annotation_db import jobs
from annotation_db.models import Job, TrainingRun
from annotation_db.session import make_engine
from app.ray_jobs import transient_refusal
from tests.app.test_runs import sft_form, wait_for
from tests.helpers import add_users, audited_version, client, free_port
from tests.ray_head import ray_head

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")
pytest.importorskip("ray.job_submission")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray head on loopback with its dashboard (the job API); yields its URL."""
    from ray.job_submission import JobSubmissionClient

    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with ray_head(log) as head:
        _wait_for_the_job_agent(JobSubmissionClient(head.dashboard_url))
        yield head.dashboard_url


def _wait_for_the_job_agent(client, timeout: float = 300) -> None:
    """Until the node's job agent takes a job (it registers with the job API a little
    after both answer): a trivial job, submitted until accepted, then waited for. The
    agent that never came up in CI was another cluster's port clash (tests/ray_head.py)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = client.submit_job(entrypoint="true")
            break
        except Exception as exc:
            if not transient_refusal(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    while str(client.get_job_status(probe).value) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster's probe job {probe} did not end")
        time.sleep(1)


@pytest.fixture(scope="module")
def ray_app(tmp_path_factory, model_cache, cluster):
    root = tmp_path_factory.mktemp("ray-jobs")
    engine = audited_version(f"sqlite:///{root / 'db.sqlite'}", root / "exports")
    add_users(engine, rita="researcher")
    saved = {k: os.environ.get(k) for k in ("RATIONALE_AUDIT_CACHE_DIR",
                                            "RATIONALE_AUDIT_RAY_ADDRESS")}
    os.environ["RATIONALE_AUDIT_CACHE_DIR"] = str(model_cache)  # passed on to the jobs
    os.environ["RATIONALE_AUDIT_RAY_ADDRESS"] = cluster
    from app.ui import launch

    port = free_port()
    demo = launch(engine, port=port, block=False, jobs_dir=str(root / "jobs"),
                  workdir=str(root))
    try:
        yield engine, f"http://127.0.0.1:{port}/", root, cluster, demo
    finally:
        demo.job_runner.stop()
        demo.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        engine.dispose()


def _ray_status(address: str, submission_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(submission_id).value)


def _wait_pid(engine, job_id: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            job = s.get(Job, job_id)
            if job.pid:
                return job.pid
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reported its process")


def _wait_training(engine, seed: int, timeout: float = 120) -> None:
    """Until the training run of ``seed`` has its row, so a cancel meets its bookkeeping
    (a job cancelled while it is still importing torch has no run to mark)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            running = s.exec(select(TrainingRun).where(
                TrainingRun.status == "running")).all()
        if any(r.config.get("seed") == seed for r in running):
            return
        time.sleep(0.5)
    raise AssertionError(f"the run with seed {seed} did not start within {timeout} s")


def _external(engine, job_id: int) -> str:
    with Session(engine) as s:
        return s.get(Job, job_id).external_id


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_a_job_launched_from_the_runs_screen_runs_as_a_ray_job(ray_app, tiny_model):
    engine, url, root, address, demo = ray_app
    assert type(demo.job_runner).__name__ == "RayJobRunner"
    rita = client(url, "rita")
    _, job_id = rita.predict(*sft_form(base_model=tiny_model), api_name="/runs_launch")
    job = wait_for(engine, job_id, {"finished", "failed"})
    assert job.status == "finished", job.error
    assert job.executor == "ray" and job.external_id.startswith(f"rationale-audit-job-{job_id}-")
    assert _ray_status(address, job.external_id) == "SUCCEEDED"
    assert job.training_run_id is not None
    # The log tail is the Ray job's own output, copied where the screen reads it.
    log = rita.predict(job_id, api_name="/runs_log")
    assert "test AUROC" in log and f"Ray job {job.external_id}" in log
    listed = rita.predict(api_name="/runs_jobs")["data"]
    assert [r[8] for r in listed if r[0] == job_id] == [f"ray ({job.external_id})"]


def test_jobs_run_side_by_side_cancel_within_30_s_and_survive_an_app_restart(ray_app,
                                                                            tiny_model):
    """Two long jobs run at once (one CPU each of two). Cancelling one stops its process
    within 30 s. The other outlives its app: a runner on a copy of the database leaves it
    alone, a new runner on the database adopts it instead of failing it, and stops it
    when it is cancelled."""
    from app.ray_jobs import RayJobRunner

    engine, url, root, address, demo = ray_app
    rita = client(url, "rita")
    _, first = rita.predict(*sft_form(base_model=tiny_model, max_steps=5000, seed=11),
                            api_name="/runs_launch")
    _, second = rita.predict(*sft_form(base_model=tiny_model, max_steps=5000, seed=12),
                             api_name="/runs_launch")
    pids = {job_id: _wait_pid(engine, job_id) for job_id in (first, second)}
    with Session(engine) as s:
        assert {s.get(Job, j).status for j in (first, second)} == {"running"}
    for pid in pids.values():
        os.kill(pid, 0)  # both alive at the same time
    # The same launch again would train in the second job's run folder: it waits.
    _, twin = rita.predict(*sft_form(base_model=tiny_model, max_steps=5000, seed=12),
                           api_name="/runs_launch")
    time.sleep(5)
    with Session(engine) as s:
        assert s.get(Job, twin).status == "queued"
        jobs.cancel(s, twin)

    _wait_training(engine, seed=11)
    assert "cancelled" in rita.predict(first, api_name="/runs_cancel")
    assert _gone_within(pids[first], 30), "the cancelled job still runs 30 s later"
    with Session(engine) as s:
        cancelled = s.get(Job, first)
        assert cancelled.status == "cancelled"
        # SIGTERM reached the run's own bookkeeping: it is resumable from its checkpoint
        runs = s.exec(select(TrainingRun).where(TrainingRun.status == "cancelled")).all()
        assert [(r.error, r.config.get("seed")) for r in runs] == [("interrupted", 11)]
    deadline = time.monotonic() + 30
    while _ray_status(address, cancelled.external_id) != "STOPPED":
        assert time.monotonic() < deadline
        time.sleep(0.5)

    # The app's runner stops (as when the app does); the second job goes on running.
    demo.job_runner.stop()
    os.kill(pids[second], 0)
    # A second app on a copy of the database, on the same cluster: it adopts nothing
    # (its copy's row carries the same token, but the job writes to the original).
    source, target = sqlite3.connect(root / "db.sqlite"), sqlite3.connect(root / "copy.sqlite")
    source.backup(target)
    source.close()
    target.close()
    copy = make_engine(f"sqlite:///{root / 'copy.sqlite'}")
    other = RayJobRunner(copy, address, root / "jobs-copy", workdir=root)
    try:
        assert other.start() == [second] and other.tracked == {}
    finally:
        other.stop()
    with Session(copy) as s:
        assert f"its Ray job {_external(engine, second)} still runs, for another database" \
            in s.get(Job, second).error
    copy.dispose()
    assert _ray_status(address, _external(engine, second)) == "RUNNING"
    os.kill(pids[second], 0)
    fresh = RayJobRunner(engine, address, root / "jobs", workdir=root)
    assert fresh.start() == []  # nothing failed: the running Ray job is adopted
    try:
        assert second in fresh.tracked
        with Session(engine) as s:
            assert s.get(Job, second).status == "running"
            jobs.cancel(s, second)
        assert _gone_within(pids[second], 30), "the adopted job still runs 30 s after cancel"
        deadline = time.monotonic() + 30
        while _ray_status(address, _external(engine, second)) != "STOPPED":
            assert time.monotonic() < deadline, "Ray never reported the adopted job stopped"
            time.sleep(0.5)
    finally:
        fresh.stop()

