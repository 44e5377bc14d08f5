"""Real generation with vLLM on the bundled model: offline engine and OpenAI-compatible server."""

import dataclasses
import json

import pytest
from sqlalchemy import select
from sqlmodel import Session, create_engine

from annotation_db.models import GenerationRun, Rationale
from generation.backends import ServerBackend, VLLMBackend
from generation.rationales import generate_rationales
from generation.rationales_config import GenerateConfig
from tests.helpers import engine_with_cohort
from tests.helpers import vllm_server as serving_vllm

pytestmark = pytest.mark.vllm


@pytest.fixture
def engine(tmp_path):
    engine = engine_with_cohort(f"sqlite:///{tmp_path / 'gen.sqlite'}", n=12, seed=3)
    yield engine
    engine.dispose()


def test_a_schema_sized_to_128_tokens_closes_on_every_first_attempt(engine, bundled_model,
                                                                      vllm_engine, monkeypatch):
    """128 tokens is far less than the content limits (1,200 characters) would need: the
    bounds derived from the budget make every constrained decode close in time."""
    monkeypatch.setattr("generation.rationales.resolve_model", lambda spec, **_: bundled_model)
    for fmt in ("free", "stepwise"):
        cfg = GenerateConfig(split="all", n=8, format=fmt, max_tokens=128, retries=0,
                             batch_size=8)
        summary = generate_rationales(engine, cfg, backend=VLLMBackend(bundled_model,
                                                                       llm=vllm_engine))
        assert (summary.generated, summary.failed, summary.retries) == (8, 0, 0)
        assert summary.bounds.max_tokens == 128 and summary.bounds.tokenizer == bundled_model.spec
    with Session(engine) as session:
        rows = session.execute(select(Rationale)).scalars().all()
        runs = session.execute(select(GenerationRun)).scalars().all()
    assert len(rows) == 16 and all(r.status == "ok" and r.attempts == 1 for r in rows), [
        (r.status, r.raw_output[-60:]) for r in rows]
    assert all(r.stats["retries"] == 0 and r.stats["schema_bounds"]["max_tokens"] == 128
               for r in runs)
    stepwise = [r for r in rows if r.format == "stepwise"]
    assert all(isinstance(r.steps, list) and r.steps for r in stepwise)


API_KEY = "test-key-not-stored"


@pytest.fixture(scope="module")
def vllm_server(bundled_model):
    """The bundled weights served under two names no local model spec knows, behind a key."""
    with serving_vllm(bundled_model.path, "--served-model-name", "smol", "smol-b",
                      "--generation-config", "vllm", "--structured-outputs-config",
                      '{"backend": "xgrammar", "disable_any_whitespace": true}',
                      api_key=API_KEY) as url:
        yield url


def test_a_served_model_is_recorded_as_the_server_serves_it(tmp_path, bundled_model,
                                                            vllm_server, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import app

    db = tmp_path / "served.sqlite"
    engine_with_cohort(f"sqlite:///{db}", n=12, seed=3).dispose()
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    url = vllm_server
    runner = CliRunner()

    def generate(*args):
        return runner.invoke(app, ["generate", "--split", "all", "--n", "4", "--max-tokens",
                                   "128", "--server-url", url, "--db", str(db), *args])

    several = generate()
    assert several.exit_code == 1
    assert "serves 2 models (smol, smol-b); name one with --model" in several.output
    unknown = generate("--model", "bundled:smollm2-135m-instruct")
    assert unknown.exit_code == 1 and "does not serve 'bundled:smollm2-135m-instruct'" in (
        unknown.output)

    first = generate("--model", "smol")
    assert first.exit_code == 0, first.output
    assert "4 generated (0 failed, 0 retries)" in first.output
    assert "counted by local copy of smol" in first.output
    assert generate("--model", "smol").output.count("4 already done") == 1  # resumed
    second = generate("--model", "smol-b")
    assert second.exit_code == 0 and "4 generated" in second.output  # its own run

    engine = create_engine(f"sqlite:///{db}")
    with Session(engine) as session:
        runs = session.execute(select(GenerationRun).order_by(GenerationRun.id)).scalars().all()
    assert [(r.model, r.backend) for r in runs] == [("smol", "server"), ("smol-b", "server")]
    assert runs[0].served_by == {"url": vllm_server, "id": "smol", "root": bundled_model.path,
                                 "max_model_len": 2048}
    assert runs[0].content_hash != runs[1].content_hash
    assert API_KEY.encode() not in db.read_bytes()

    # Without the key the server refuses, and the error says where (not with what key).
    monkeypatch.delenv("OPENAI_API_KEY")
    refused = generate("--model", "smol")
    assert refused.exit_code == 1 and "HTTP 401" in refused.output
    assert "--api-key" in refused.output


def test_the_budget_is_counted_by_the_servers_tokenizer_without_a_local_copy(bundled_model,
                                                                             vllm_server):
    from annotation_db.render import tokenizer_counter
    from generation.models import load_tokenizer

    backend = ServerBackend(vllm_server, "smol", api_key=API_KEY)
    backend.served = dataclasses.replace(backend.served, root="/elsewhere/weights")
    count, source = backend.token_counter()
    assert source == vllm_server.removesuffix("/v1") + "/tokenize"
    local = tokenizer_counter(load_tokenizer(bundled_model.path))
    texts = ["E12 2019-03-04 dx I10 Essential hypertension", "APOE ε3/ε4", "a" * 300]
    assert [count(t) for t in texts] == [local(t) for t in texts]


def _simulated_campaign(engine, n: int) -> str:
    """Template rationales for n patients, rated by three simulated raters (k = 3)."""
    from annotation_db import campaigns
    from annotation_db.simulate import simulate, simulated_raters

    summary = generate_rationales(engine, GenerateConfig(split="all", n=n, backend="template"))
    with Session(engine) as session:
        campaign = campaigns.create_campaign(session, name="judged", run_ids=[summary.run_id],
                                             annotators=simulated_raters(session, 3), k=3,
                                             claim_review=True)
        simulate(session, campaign, seed=1)
    return "judged"


def test_the_judge_scores_a_campaign_apart_from_the_clinicians(engine, bundled_model,
                                                               vllm_engine, tmp_path):
    from typer.testing import CliRunner

    from annotation_db.export import ApprovalPolicy, evaluate
    from annotation_db.models import JudgeRating
    from annotation_db.ratings import load_campaign_ratings
    from app.cli import app
    from app.views import load_guidelines
    from generation.judge import run_judge
    from generation.judge_config import JudgeConfig

    name = _simulated_campaign(engine, 8)
    policy = ApprovalPolicy(campaigns=[name], include_simulated=True, min_gold_accuracy=None)
    with Session(engine) as session:
        before = [(d.rationale_id, d.approved) for d in evaluate(session, policy)]
        panel_before = load_campaign_ratings(session, name, include_simulated=True)[0]
    cfg = JudgeConfig(campaign=name, max_tokens=128, top_logprobs=5)
    backend = VLLMBackend(bundled_model, llm=vllm_engine)
    summary = run_judge(engine, cfg, load_guidelines("1.0"), backend=backend)
    assert (summary.scored, summary.failed) == (8, 0)
    assert summary.with_probabilities == 8  # vLLM returns the score tokens' logprobs
    with Session(engine) as session:
        rows = session.execute(select(JudgeRating)).scalars().all()
        after = [(d.rationale_id, d.approved) for d in evaluate(session, policy)]
        panel_after = load_campaign_ratings(session, name, include_simulated=True)[0]
    for row in rows:
        for dim in ("accuracy", "faithfulness"):
            p = row.probabilities[dim]
            assert sum(p.values()) == pytest.approx(1.0)
            assert p[str(getattr(row, dim))] > 0  # the sampled score is in its distribution
            assert 1 <= getattr(row, f"expected_{dim}") <= 5
    # clinicians' ratings, approvals (and so exports) are untouched by the judge
    assert before == after and sorted(panel_before, key=str) == sorted(panel_after, key=str)
    assert run_judge(engine, cfg, load_guidelines("1.0"), backend=backend).skipped == 8

    db = str(engine.url.database)
    runner = CliRunner()
    plain = runner.invoke(app, ["agreement", "report", "--campaign", name, "--include-simulated",
                                "--format", "json", "--out", str(tmp_path / "a.json"),
                                "--db", db, "--replicates", "50"])
    assert plain.exit_code == 0, plain.output
    assert json.loads((tmp_path / "a.json").read_text())["design"]["raters"] == 3
    judged = runner.invoke(app, ["agreement", "report", "--campaign", name, "--include-simulated",
                                 "--include-judge", str(summary.run_id), "--format", "json",
                                 "--out", str(tmp_path / "b.json"), "--db", db,
                                 "--replicates", "50"])
    assert judged.exit_code == 0, judged.output
    assert json.loads((tmp_path / "b.json").read_text())["design"]["raters"] == 4
    report = runner.invoke(app, ["judge", "report", "--campaign", name, "--include-simulated",
                                 "--out", str(tmp_path / "cal.md"), "--db", db,
                                 "--replicates", "50"])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "cal.md").read_text()
    assert "may not pre-screen" in text and "too few items" in text  # 8 items < 30
    assert "α of the clinicians (the ceiling)" in text


def test_a_served_judge_reads_the_score_probabilities_over_http(tmp_path, vllm_server,
                                                               monkeypatch):
    from typer.testing import CliRunner

    from annotation_db.models import JudgeRating, JudgeRun
    from app.cli import app

    db = tmp_path / "judge.sqlite"
    engine = engine_with_cohort(f"sqlite:///{db}", n=12, seed=3)
    _simulated_campaign(engine, 4)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    done = CliRunner().invoke(app, ["judge", "run", "--campaign", "judged", "--server-url",
                                    vllm_server, "--model", "smol", "--max-tokens", "96",
                                    "--db", str(db)])
    assert done.exit_code == 0, done.output
    assert "4 scored (0 unparsable, 4 with score probabilities)" in done.output
    with Session(engine) as session:
        run = session.execute(select(JudgeRun)).scalars().one()
        rows = session.execute(select(JudgeRating)).scalars().all()
    assert run.backend == "server" and run.served_by["id"] == "smol"
    assert run.status == "finished" and len(rows) == 4
    assert all(sum(r.probabilities["accuracy"].values()) == pytest.approx(1.0) for r in rows)
    assert API_KEY.encode() not in db.read_bytes()
