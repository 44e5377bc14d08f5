"""The Runs screen through its API: launch, follow, cancel and recover training jobs."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import jobs, users
from annotation_db.command_config import ConfigError
from annotation_db.models import Job, TrainingRun, User
from app.jobs import TOKEN_VARIABLE, JobRunner, stop_orphan
from app.screens.runs import build_config, launch_forms
from tests.helpers import PASSWORD, add_users, audited_version, client, serving

pytestmark = pytest.mark.server  # the app's server (or the CLI) as a process or thread


@pytest.fixture(scope="module")
def runs_server(tmp_path_factory, model_cache, bundled_model):
    root = tmp_path_factory.mktemp("runs-ui")
    engine = audited_version(f"sqlite:///{root / 'db.sqlite'}", root / "exports")
    add_users(engine, rita="researcher", ann="annotator", root="admin")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RATIONALE_AUDIT_CACHE_DIR", str(model_cache))  # the jobs inherit it
        with serving(engine, jobs_dir=str(root / "jobs"), workdir=str(root)) as url:
            yield engine, url, root
    engine.dispose()


FORMS = launch_forms()


def sft_form(max_steps=1, **changes) -> list:
    """The Runs form's values, in the order its API takes them, for a tiny SFT job."""
    sft = dict(target="label", base_model="bundled:smollm2-135m-instruct", lora_r=4,
               learning_rate=1e-3, num_train_epochs=1, seed=0, max_steps=max_steps)
    return ["sft", "t", "", *FORMS.sft.positional(**{**sft, **changes}),
            *FORMS.evaluate.positional(limit=8, engine="transformers"),
            *FORMS.fewshot.positional()]


def wait_for(engine, job_id, statuses, timeout=300) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            job = s.get(Job, job_id)
            if job.status in statuses:
                return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} is still {job.status} after {timeout} s")


@pytest.mark.slow
def test_a_researcher_launches_a_tiny_sft_job_and_sees_its_metrics(runs_server, tiny_model):
    engine, url, root = runs_server
    rita = client(url, "rita")
    form = sft_form(base_model=tiny_model)  # a 2-layer model: the job's path, not its skill
    checked = rita.predict(*form, api_name="/runs_check")
    assert "rationale-audit train sft --dataset t" in checked and "--max-steps 1" in checked
    message, job_id = rita.predict(*form, api_name="/runs_launch")
    assert f"Queued job {job_id}" in message
    job = wait_for(engine, job_id, {"finished", "failed"})
    assert job.status == "finished", job.error
    assert job.training_run_id is not None and (root / "jobs" / f"job-{job_id}.log").exists()
    assert "test AUROC" in rita.predict(job_id, api_name="/runs_log")
    rows = rita.predict(api_name="/runs_results")["data"]
    row = next(r for r in rows if r[0] == job.training_run_id)
    assert row[2] == "label" and row[3] == "auto" and row[6] == 8 and row[7] != "–"
    assert row[9].startswith("t (")
    listed = rita.predict(api_name="/runs_jobs")["data"]
    assert [r[2] for r in listed if r[0] == job_id] == ["finished"]
    manifest = rita.predict("t", api_name="/runs_manifest")
    assert "sha256" in manifest
    with Session(engine) as session:  # no rater's (or anyone's) identity is shown
        names = [u.username for u in session.execute(select(User)).scalars()]
    assert any(name.startswith("sim-rater") for name in names)  # the version's raters
    assert not [n for n in names if re.search(rf"\b{re.escape(n)}\b", manifest)]


def test_an_invalid_form_is_refused_with_the_reason(runs_server):
    _, url, _ = runs_server
    with pytest.raises(Exception, match="learning_rate: Input should be greater than 0"):
        client(url, "rita").predict(*sft_form(learning_rate=-1), api_name="/runs_check")


def test_check_shows_the_memory_estimate_and_a_launch_over_it_is_refused_with_a_fit(
        runs_server):
    engine, url, _ = runs_server
    rita = client(url, "rita")
    checked = rita.predict(*sft_form(), api_name="/runs_check")
    assert re.search(r"Memory: about \d+\.\d GiB peak of \d+\.\d GiB free \(runtime", checked)
    huge = sft_form(per_device_train_batch_size=2048, max_length=1024)
    with pytest.raises(Exception, match=r"Not launched: the run needs \d+\.\d GiB and "
                                        r"\d+\.\d GiB is free for it; settings that fit with "
                                        r"the same effective batch: "
                                        r"per_device_train_batch_size \d+, "
                                        r"gradient_accumulation_steps \d+, max_length 1024"):
        rita.predict(*huge, api_name="/runs_launch")
    with Session(engine) as s:
        assert not [j for j in s.execute(select(Job)).scalars()
                    if j.config["config"].get("per_device_train_batch_size") == 2048]


def test_an_annotator_has_no_access_to_runs(runs_server):
    _, url, _ = runs_server
    ann = client(url, "ann")
    for call in (lambda: ann.predict(*sft_form(), api_name="/runs_launch"),
                 lambda: ann.predict(api_name="/runs_results"),
                 lambda: ann.predict(api_name="/runs_jobs"),
                 lambda: ann.predict(1, api_name="/runs_log"),
                 lambda: ann.predict(1, api_name="/runs_cancel"),
                 lambda: ann.predict("t", api_name="/runs_manifest")):
        with pytest.raises(Exception, match="Your role does not allow this"):
            call()


@pytest.mark.slow
def test_cancelling_a_running_job_stops_its_process(runs_server):
    engine, url, _ = runs_server
    rita = client(url, "rita")
    _, job_id = rita.predict(*sft_form(max_steps=500, seed=7), api_name="/runs_launch")
    job = wait_for(engine, job_id, {"running"}, timeout=120)
    deadline = time.monotonic() + 30
    while job.pid is None and time.monotonic() < deadline:
        time.sleep(0.2)
        job = wait_for(engine, job_id, {"running"})
    pid = job.pid
    os.kill(pid, 0)  # alive
    deadline = time.monotonic() + 120  # let training begin, so there is a run to cancel
    while not _running_runs(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    [run_id] = _running_runs(engine)
    assert "cancelled" in rita.predict(job_id, api_name="/runs_cancel")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"process {pid} still runs 30 s after the cancel")
    with Session(engine) as s:
        assert s.get(Job, job_id).status == "cancelled"
        run = s.get(TrainingRun, run_id)  # SIGTERM reached the run's own bookkeeping
        assert (run.status, run.error) == ("cancelled", "interrupted")
    # A cancelled job resumes as a new queued job with the same configuration.
    message, new_id = rita.predict(job_id, api_name="/runs_resume")
    assert f"resuming job {job_id}" in message
    with Session(engine) as s:
        assert jobs.cancel(s, new_id).status == "cancelled"  # keep the queue empty


def test_a_job_killed_by_the_kernel_shows_progress_first_and_leaves_nothing_running(
        runs_server):
    """What the out-of-memory killer does to a job, done by hand: SIGKILL to its process
    group mid-run. The Runs screen showed its step, tokens/s and time left while it ran;
    afterwards the job and its training run are failed, with a reason that names memory."""
    engine, url, _ = runs_server
    rita = client(url, "rita")
    _, job_id = rita.predict(*sft_form(max_steps=500, seed=11), api_name="/runs_launch")
    deadline, shown = time.monotonic() + 180, ""
    while not shown.startswith("step ") and time.monotonic() < deadline:
        time.sleep(0.5)
        row = [r for r in rita.predict(api_name="/runs_jobs")["data"] if r[0] == job_id]
        shown = row[0][3] if row else ""
    assert re.fullmatch(r"step \d+ / 500 · \d+ tok/s · about .+ left", shown), shown
    with Session(engine) as s:
        job = s.get(Job, job_id)
        run_id = job.training_run_id  # linked as soon as the run began, not at its end
        assert run_id is not None and s.get(TrainingRun, run_id).status == "running"
    os.killpg(job.pid, signal.SIGKILL)
    job = wait_for(engine, job_id, {"failed"}, timeout=60)
    assert job.error.startswith(("killed (SIGKILL) with no stop asked for: most likely out "
                                 "of memory", "out of memory: the kernel's"))
    with Session(engine) as s:
        run = s.get(TrainingRun, run_id)
        assert run.status == "failed" and run.error.startswith(f"job {job_id}: ")
    listed = rita.predict(api_name="/runs_jobs")["data"]
    assert [r[6] for r in listed if r[0] == job_id][0].startswith(("killed", "out of memory"))


def test_a_kill_is_named_out_of_memory_when_the_cgroups_counter_moved(tmp_path):
    from app.jobs import exit_reason

    counter = tmp_path / "memory.events"
    counter.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    job = Job(kind="sft", config={}, command="c", created_by=1, log_path=None)
    assert exit_reason(-signal.SIGKILL, job, 1, (counter,)).startswith(
        "out of memory: the kernel's out-of-memory killer stopped the job")
    assert exit_reason(-signal.SIGKILL, job, 2, (counter,)).startswith(
        "killed (SIGKILL) with no stop asked for: most likely out of memory")
    assert exit_reason(-signal.SIGSEGV, job, None, (counter,)) == "stopped by signal SIGSEGV"
    assert exit_reason(3, job) == "the job's process exited with status 3 without output"


def test_a_grid_is_read_only_from_the_servers_experiments_folder(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "g.yaml").write_text("name: g\ndataset: t\n")
    (tmp_path / "experiments" / "abs.yaml").write_text("dataset: t\nruns_dir: /tmp/x\n")
    (tmp_path / "experiments" / "bad.yaml").write_text("dataset: t\nname: ../../escape\n")
    (tmp_path / "secret.yaml").write_text("dataset: t\n")
    form = dict(kind="grid", dataset="", workdir=tmp_path)
    config, command = build_config(grid_path="g.yaml", **form)
    assert command == "rationale-audit experiment run experiments/g.yaml"
    assert config["config"]["name"] == "g"
    assert build_config(grid_path="experiments/g.yaml", **form)[1] == command
    for path, reason in (("../secret.yaml", "inside the server's experiments/ folder"),
                         (str(tmp_path / "secret.yaml"), "inside the server's experiments/"),
                         ("/etc/passwd", "must be a .yaml file"),
                         ("missing.yaml", "no grid file experiments/missing.yaml"),
                         ("", "give the name of a grid YAML file"),
                         ("abs.yaml", "give a relative path"),
                         ("bad.yaml", "name")):
        with pytest.raises(ConfigError, match=re.escape(reason)):
            build_config(grid_path=path, **form)


def test_the_launch_form_is_every_option_of_the_clis_configs():
    """A field added to a config appears in the form; folders stay the server's."""
    from training.evaluate_config import EvaluateConfig
    from training.fewshot_config import FewShotConfig
    from training.sft_config import SFTRunConfig

    for form, cls in zip(FORMS, (SFTRunConfig, EvaluateConfig, FewShotConfig), strict=True):
        assert set(form.fields) == set(cls.option_fields()) - {"dataset", "runs_dir",
                                                                "cache_dir"}
    values = FORMS.split(sft_form(group_by_length=False, warmup_steps=3.0)[3:])
    config, command = build_config("sft", "t", **values)
    assert config["config"]["group_by_length"] is False and config["config"]["warmup_steps"] == 3
    assert "--no-group-by-length" in command and "--warmup-steps 3.0" in command
    assert config["evaluate"]["limit"] == 8 and config["config"]["runs_dir"] == "runs"
    fewshot, command = build_config("fewshot", "t", fewshot={"k": 2, "with_rationales": False})
    assert fewshot["config"]["k"] == 2 and "--without-rationales" in command
    with pytest.raises(ConfigError, match="runs_dir: set by the server"):
        build_config("sft", "t", sft={"runs_dir": "/etc"})
    with pytest.raises(ValueError, match="values expected"):
        FORMS.split(sft_form()[4:])
    # Unset numbers are text boxes (a browser sends an empty number as 0): read as numbers.
    assert build_config("sft", "t", **FORMS.split(sft_form(train_size=" 40 ")[3:])
                        )[0]["config"]["train_size"] == 40
    with pytest.raises(ConfigError, match="train_size"):
        build_config("sft", "t", **FORMS.split(sft_form(train_size="many")[3:]))


def _running_runs(engine) -> list[int]:
    with Session(engine) as s:
        return list(s.execute(select(TrainingRun.id).where(TrainingRun.status == "running"))
                    .scalars())


def _fake_job_process(job_id: int, env: dict[str, str]) -> subprocess.Popen:
    """A sleeping process whose command line ends like a job's: ``app.jobs JOB_ID``, with
    what a launch puts in its environment (``env``: the database URL and launch token)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                             "app.jobs", str(job_id)], start_new_session=True,
                            env={**os.environ, **env})


def test_a_restart_stops_a_job_process_the_old_app_left_behind(engine, tmp_path):
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        job = jobs.enqueue(s, kind="sft", config={}, command="c", user=admin)
        claimed = jobs.claim_next(s)
        url = engine.url.render_as_string(hide_password=False)
        launch = {"DATABASE_URL": url, TOKEN_VARIABLE: jobs.set_token(s, claimed, "t" * 32)}
        orphan, stranger = _fake_job_process(job.id, launch), _fake_job_process(job.id + 1,
                                                                                launch)
        try:
            jobs.set_process(s, claimed, orphan.pid, str(tmp_path / "job.log"))
            # live, but running another job
            unrelated = Job(id=job.id + 2, pid=stranger.pid, token="t" * 32)
            assert stop_orphan(unrelated, url, grace_seconds=1) is None
            assert stranger.poll() is None
            assert jobs.recover_interrupted(s, lambda j: stop_orphan(j, url, 5)) == [job.id]
            assert orphan.wait(timeout=10) == -signal.SIGTERM
            assert "still running then and stopped now" in s.get(Job, job.id).error
        finally:
            for process in (orphan, stranger):
                process.kill()
                process.wait()


def test_two_runners_never_claim_the_same_job(engine):
    with Session(engine) as s1, Session(engine) as s2:
        admin = users.create_user(s1, username="root", password=PASSWORD, role="admin")
        only = jobs.enqueue(s1, kind="sft", config={}, command="c", user=admin)
        assert jobs.claim_next(s1).id == only.id
        assert jobs.claim(s2, only.id) is None  # runner 2 had read it as queued: too late
        assert jobs.claim_next(s2) is None
        jobs.cancel(s2, only.id)
        jobs.end(s1, only, "finished")  # the runner's late report does not undo the cancel
        s1.expire_all()
        assert s1.get(Job, only.id).status == "cancelled"


def test_a_restart_marks_interrupted_jobs_failed(engine, tmp_path):
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        job = jobs.enqueue(s, kind="sft", config={}, command="rationale-audit train sft",
                           user=admin)
        claimed = jobs.claim_next(s)
        jobs.set_process(s, claimed, 999_999, str(tmp_path / "job.log"))
        assert claimed.id == job.id and claimed.status == "running"
    runner = JobRunner(engine, tmp_path / "jobs", poll_seconds=60)
    try:
        assert runner.start() == [job.id]
    finally:
        runner.stop()
    with Session(engine) as s:
        stale = s.get(Job, job.id)
        assert stale.status == "failed" and "interrupted" in stale.error
        assert "pid 999999" in stale.error and stale.finished_at is not None
        admin = users.require_user(s, "root")
        again = jobs.resume(s, job.id, admin)
        assert (again.status, again.resumed_from, again.config) == ("queued", job.id, {})
        with pytest.raises(jobs.JobError, match="only failed or cancelled jobs resume"):
            jobs.resume(s, again.id, admin)


def test_the_researcher_role_exists_and_sees_no_campaigns(runs_server):
    _, url, _ = runs_server
    campaigns, who, *_ = client(url, "rita").predict(api_name="/list_my_campaigns")
    assert "(researcher)" in who


def test_a_job_that_fails_fails_its_run_and_one_cancelled_leaves_its_run_to_its_process(
        engine):
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        made = {}
        for name in ("failing", "cancelled"):
            job = jobs.enqueue(s, kind="sft", config={}, command=name, user=admin)
            jobs.claim_next(s)
            run = TrainingRun(kind="sft", target="label", base_model="m", config={},
                              config_hash=name.ljust(64, "0"), run_dir=f"/tmp/{name}",
                              status="running")
            s.add(run)
            s.commit()
            job.training_run_id = run.id
            s.commit()
            made[name] = (job.id, run.id)
        jobs.end(s, s.get(Job, made["failing"][0]), "failed", error="out of memory: …")
        jobs.cancel(s, made["cancelled"][0], admin)
        jobs.end(s, s.get(Job, made["cancelled"][0]), "failed", error="killed (SIGKILL)")
        failed_run = s.get(TrainingRun, made["failing"][1])
        assert (failed_run.status, failed_run.error) == (
            "failed", f"job {made['failing'][0]}: out of memory: …")
        assert s.get(Job, made["cancelled"][0]).status == "cancelled"
        assert s.get(TrainingRun, made["cancelled"][1]).status == "running"  # its own process
        # records "cancelled" on SIGTERM (test_cancelling_a_running_job_stops_its_process)
