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
