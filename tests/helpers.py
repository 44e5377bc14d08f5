"""Small builders shared by test modules (fixtures stay in conftest.py)."""

import copy
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlmodel import Session

from annotation_db import migrate
from annotation_db.cohorts import in_memory_batches, store_cohort
from annotation_db.models import GenerationRun, PromptTemplate, Rationale
from annotation_db.render import render_text
from annotation_db.session import make_engine
from generation.cohort import generate
from generation.cohort_config import CohortConfig

PASSWORD = "correct horse battery"


def add_users(engine, **roles: str) -> None:
    """Accounts named by keyword, each with its role and :data:`PASSWORD`."""
    from annotation_db import users

    with Session(engine) as s:
        for name, role in roles.items():
            users.create_user(s, username=name, password=PASSWORD, role=role)


@functools.lru_cache(maxsize=32)
def _generated(n: int, seed: int) -> tuple[list[dict], dict]:
    return generate(CohortConfig(n=n, seed=seed))


def cohort_records(n: int, seed: int) -> list[dict]:
    """The generated cohort of ``n`` patients with ``seed`` (a fresh copy each call). The
    generator samples its case-enriched cohort from million-person draws, about 7 s a
    cohort, so a test process generates each (n, seed) once."""
    return copy.deepcopy(_generated(n, seed)[0])


def seed_rationales(engine, n=12, gold=3) -> int:
    """A cohort, a run and n ok rationales (+ gold copies); returns the run id."""
    records = cohort_records(n, 2)
    cohort_id = store_cohort(engine, name=f"c{n}", source="t", seed=2, config={}, sampling=None,
                             batches=in_memory_batches(records, render_text))
    with Session(engine) as s:
        prompt = PromptTemplate(name="p", version="1", mode="label-conditioned", format="free",
                                body="b", content_hash="p" * 64)
        s.add(prompt)
        s.flush()
        run = GenerationRun(content_hash="r" * 64, cohort_id=cohort_id,
                            prompt_template_id=prompt.id, model="m", backend="vllm",
                            selection={}, sampling_params={}, seed=0)
        s.add(run)
        s.flush()
        patient_ids = list(range(1, n + 1))
        for pid in patient_ids:
            s.add(Rationale(run_id=run.id, patient_id=pid, format="free",
                            cited_evidence_ids=["E1"], text=f"rationale {pid} [E1]"))
        s.flush()
        for pid in patient_ids[:gold]:
            s.add(Rationale(run_id=run.id, patient_id=pid, format="free", variant="wrong_code",
                            is_gold=True, cited_evidence_ids=["E1"], text="flawed"))
        s.commit()
        return run.id


def rate_at_once(engine, campaign_name: str, raters: list[str], *, items_each: int = 40
                 ) -> list[BaseException]:
    """Every rater in ``raters`` asks for items and rates them at the same time (one thread
    each, seeded scores of 2–5) until their queue is empty; returns what any of them raised."""
    import random
    import threading

    from annotation_db import campaigns
    from annotation_db.users import require_user

    errors: list[BaseException] = []

    def rate(name: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with Session(engine) as s:
                campaign = campaigns.get_campaign(s, campaign_name)
                user = require_user(s, name)
                for _ in range(items_each):
                    item = campaigns.next_assignment(s, campaign, user)
                    if item is None:
                        return
                    score = rng.choice([2, 3, 4, 4, 5])
                    campaigns.submit(s, assignment_id=item.id, user=user, accuracy=score,
                                     faithfulness=score, flags=[])
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(n, i)) for i, n in enumerate(raters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors


def client(url: str, name: str):
    """A gradio_client signed in as ``name`` (every test user has :data:`PASSWORD`)."""
    from gradio_client import Client

    return Client(url, auth=(name, PASSWORD), verbose=False)


@contextmanager
def serving(engine, **launch_options) -> Iterator[str]:
    """The Gradio app on a free loopback port for the duration; yields its URL."""
    from app.ui import launch

    port = free_port()
    demo = launch(engine, port=port, block=False, **launch_options)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.job_runner.stop()
        demo.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_with_cohort(url: str, *, n: int, seed: int):
    """A migrated database holding one generated cohort named "c"."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    records = cohort_records(n, seed)
    store_cohort(engine, name="c", source="t", seed=seed, config={}, sampling=None,
                 batches=in_memory_batches(records, render_text))
    return engine


def audited_version(url: str, exports_dir, *, n: int = 60, seed: int = 7, name: str = "t"):
    """A migrated database with a small audited dataset version named ``name``.

    Template-teacher rationales in both formats, rated by simulated raters, exported
    under a policy that admits simulated ratings. Returns the engine.
    """
    from training.study import prepare_dataset
    from training.study_config import AuditSettings, DataSettings

    engine = make_engine(url)
    migrate.upgrade(engine)
    prepare_dataset(engine, DataSettings(cohort="c", n=n, seed=seed, history_budget=160,
                                         dataset=name, audit=AuditSettings(campaign="a")),
                    exports_dir=exports_dir)
    return engine


@contextmanager
def vllm_server(model_path: str, *flags: str, api_key: str | None = None,
                env: dict | None = None, timeout: float = 300) -> Iterator[str]:
    """``python -m vllm.entrypoints.openai.api_server --model MODEL FLAGS`` on a free
    loopback port, CPU-sized (fp32, eager, 1 GiB of KV cache); yields its ``/v1`` URL."""
    import httpx
    import pytest

    port = free_port()
    environment = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})}
    environment.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
         *flags, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
         "--max-model-len", "2048", "--enforce-eager",
         *(["--api-key", api_key] if api_key else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited: {process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2, headers=headers).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(f"vLLM server did not start within {timeout:.0f} s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
