"""Real generation with vLLM on the bundled model: offline engine and OpenAI-compatible server."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.models import GenerationRun, Rationale
from generation.backends import ServerBackend, VLLMBackend
from generation.rationale_schema import parse_output
from generation.rationales import GenerateConfig, generate_rationales
from tests.helpers import engine_with_cohort, free_port

pytestmark = pytest.mark.vllm


@pytest.fixture
def engine(tmp_path):
    engine = engine_with_cohort(f"sqlite:///{tmp_path / 'gen.sqlite'}", n=12, seed=3)
    yield engine
    engine.dispose()


def _check_stored(engine, n, fmt):
    with Session(engine) as session:
        rows = session.execute(select(Rationale).where(Rationale.variant == "original")
                               ).scalars().all()
        run = session.execute(select(GenerationRun)).scalars().one()
    assert len(rows) == n
    ok = [r for r in rows if r.status == "ok"]
    assert ok, [r.grounding for r in rows]
    for row in ok:
        output, error = parse_output(row.raw_output, row.cited_evidence_ids or ["E1"], fmt)
        assert error is None or "not in the record" not in error
        assert row.cited_evidence_ids and row.grounding is not None
        assert 0.0 <= row.grounding_score <= 1.0
    assert run.stats["tokens"] > 0 and run.stats["attempts"] >= n
    return rows


def test_vllm_writes_schema_valid_rationales_for_four_patients(engine, bundled_model,
                                                                vllm_engine, monkeypatch):
    monkeypatch.setattr("generation.rationales.resolve_model", lambda spec, **_: bundled_model)
    for fmt in ("free", "stepwise"):
        cfg = GenerateConfig(n=4, format=fmt, max_tokens=256, batch_size=4)
        summary = generate_rationales(engine, cfg, backend=VLLMBackend(bundled_model,
                                                                       llm=vllm_engine))
        assert summary.generated == 4 and summary.tokens > 0
    with Session(engine) as session:
        rows = session.execute(select(Rationale)).scalars().all()
    assert len(rows) == 8
    valid = [r for r in rows if r.status == "ok"]
    assert len(valid) >= 6, [(r.status, r.raw_output[:80]) for r in rows]
    stepwise = [r for r in valid if r.format == "stepwise"]
    assert all(isinstance(r.steps, list) and r.steps for r in stepwise)


@pytest.fixture(scope="module")
def vllm_server(bundled_model):
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
         bundled_model.path, "--served-model-name", "bundled", "--host", "127.0.0.1",
         "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
         "--enforce-eager", "--generation-config", "vllm"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited: {process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("vLLM server did not start within 300 s")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_server_backend_generates_with_response_format(engine, bundled_model, vllm_server,
                                                       monkeypatch):
    monkeypatch.setattr("generation.rationales.resolve_model", lambda spec, **_: bundled_model)
    backend = ServerBackend(vllm_server, concurrency=4)
    assert backend.model == "bundled"
    cfg = GenerateConfig(n=4, max_tokens=256, server_url=vllm_server)
    summary = generate_rationales(engine, cfg, backend=backend)
    assert summary.generated == 4
    rows = _check_stored(engine, 4, "free")
    assert sum(r.status == "ok" for r in rows) >= 3
