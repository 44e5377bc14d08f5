"""Submitting a job to Ray: a refusal the cluster calls transient is offered again, for
a bounded time; any other refusal fails the job at once."""

import threading

import pytest

from app import ray_jobs

TRANSIENT = ("Request failed with status code 500: No available agent to submit job, "
             "please try again later..")


class Cluster:
    """A job API that answers each submission with the next of ``answers`` (an
    exception to raise, or None to accept)."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def submit_job(self, **submission):
        self.calls.append(submission["submission_id"])
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


def _runner(cluster) -> ray_jobs.RayJobRunner:
    runner = object.__new__(ray_jobs.RayJobRunner)  # no cluster to connect to
    runner.client, runner._stop = cluster, threading.Event()
    return runner


def test_a_cluster_whose_agent_is_not_up_yet_gets_the_job_when_it_is():
    cluster = Cluster([RuntimeError(TRANSIENT), RuntimeError(TRANSIENT), None])
    _runner(cluster)._submit_patiently(submission_id="s-1", entrypoint="true")
    assert cluster.calls == ["s-1"] * 3


def test_any_other_refusal_fails_at_once():
    cluster = Cluster([RuntimeError("status code 400: bad runtime_env")])
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        _runner(cluster)._submit_patiently(submission_id="s-2", entrypoint="true")
    assert cluster.calls == ["s-2"]


def test_a_refusal_that_stays_transient_fails_after_the_patience(monkeypatch):
    monkeypatch.setattr(ray_jobs, "SUBMIT_PATIENCE_SECONDS", 1.2)
    cluster = Cluster([RuntimeError(TRANSIENT)] * 100)
    with pytest.raises(RuntimeError, match="try again later"):
        _runner(cluster)._submit_patiently(submission_id="s-3", entrypoint="true")
    assert 2 <= len(cluster.calls) <= 3  # 0.5 s, then 1 s; the next wait would pass 1.2 s


def test_stopping_the_runner_ends_the_wait():
    cluster = Cluster([RuntimeError(TRANSIENT)] * 100)
    runner = _runner(cluster)
    runner._stop.set()
    with pytest.raises(RuntimeError, match="try again later"):
        runner._submit_patiently(submission_id="s-4", entrypoint="true")
    assert cluster.calls == ["s-4"]


class Refusing(Cluster):
    """A cluster whose agent never comes up, and that knows no submitted job."""

    def __init__(self):
        super().__init__([RuntimeError(TRANSIENT)] * 100)

    def get_job_status(self, submission_id):
        raise RuntimeError("Request failed with status code 404: not found")


def _job(engine):
    from sqlmodel import Session

    from annotation_db import jobs, users

    with Session(engine) as s:
        admin = users.create_user(s, username="ada", password="correct horse battery",
                                  role="admin")
        return jobs.enqueue(s, kind="sft", config={}, command="c", user=admin).id


def test_a_job_refused_as_the_app_stops_goes_back_to_the_queue(engine, tmp_path):
    """Stopping the app while the cluster says "try again later" is no verdict on the
    job: it is queued again, for the next runner, as it was before it was claimed."""
    from sqlmodel import Session

    from annotation_db import jobs

    runner = _runner(Refusing())
    runner.engine, runner.jobs_dir, runner.workdir = engine, tmp_path, tmp_path
    runner.cpus, runner.gpus, runner.kill_grace_seconds, runner.tracked = 1.0, 0.0, 10.0, {}
    runner.address = "http://cluster"
    job_id = _job(engine)
    runner._stop.set()
    with Session(engine) as s:
        runner._submit(s, jobs.claim(s, job_id))
        job = jobs.get_job(s, job_id)
        assert (job.status, job.started_at, job.external_id, job.token) == (
            "queued", None, None, None)
        assert job.error is None and runner.tracked == {}
    runner._stop.clear()  # the same refusal from a runner that is not stopping fails it
    runner.client = Refusing()
    runner.client.answers = [RuntimeError("status code 400: bad runtime_env")]
    with Session(engine) as s:
        runner._submit(s, jobs.claim(s, job_id))
        job = jobs.get_job(s, job_id)
        assert job.status == "failed" and "bad runtime_env" in job.error
