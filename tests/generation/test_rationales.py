"""Generation runs: resumable, idempotent, failures kept with their raw text.

These tests drive the run logic with a scripted backend (a test double that answers
from the request's own schema); real generation is in test_vllm_generation.py.
"""

import json

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db.models import GenerationRun, Rationale
from generation.chat import Completion
from generation.rationales import generate_rationales
from generation.rationales_config import GenerateConfig
from tests.helpers import engine_with_cohort as build_engine


class ScriptedBackend:
    """Answers with valid JSON citing the first two allowed ids; can fail on cue."""

    name = "scripted"

    def __init__(self, crash_after_batches=None, garbage=False):
        self.batches = 0
        self.crash_after = crash_after_batches
        self.garbage = garbage

    def complete(self, requests, params):
        if self.crash_after is not None and self.batches >= self.crash_after:
            raise KeyboardInterrupt("killed mid-run")
        self.batches += 1
        out = []
        for request in requests:
            if self.garbage:
                out.append(Completion('{"prediction": "yes", "evid', 40, "length"))
                continue
            ids = request.schema["properties"]["evidence"]["items"]["enum"][:2]
            told_no = "not diagnosed" in request.messages[1]["content"]
            text = json.dumps({"prediction": "no" if told_no else "yes", "evidence": ids,
                               "rationale": f"Relevant history is in [{ids[0]}]."})
            out.append(Completion(text, 20, "stop"))
        return out


@pytest.fixture
def engine_with_cohort(database_url):
    engine = build_engine(database_url, n=30, seed=5)
    yield engine
    engine.dispose()


def _rows(engine):
    with Session(engine) as session:
        return list(session.execute(select(Rationale.patient_id, Rationale.status).where(
            Rationale.variant == "original")).all())


def test_killed_run_resumes_without_duplicates_or_gaps(engine_with_cohort):
    cfg = GenerateConfig(n=12, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        generate_rationales(engine_with_cohort, cfg, backend=ScriptedBackend(crash_after_batches=2))
    assert len(_rows(engine_with_cohort)) == 8
    summary = generate_rationales(engine_with_cohort, cfg, backend=ScriptedBackend())
    assert (summary.generated, summary.skipped) == (4, 8)
    rows = _rows(engine_with_cohort)
    assert len(rows) == 12 and len({p for p, _ in rows}) == 12
    again = generate_rationales(engine_with_cohort, cfg, backend=ScriptedBackend())
    assert (again.generated, again.skipped) == (0, 12)
    with Session(engine_with_cohort) as session:
        runs = session.execute(select(GenerationRun)).scalars().all()
        assert len(runs) == 1 and runs[0].status == "finished"
        assert runs[0].stats["attempts"] == 12 and runs[0].stats["tokens"] == 240


def test_a_different_setting_is_a_different_run(engine_with_cohort):
    generate_rationales(engine_with_cohort, GenerateConfig(n=3), backend=ScriptedBackend())
    generate_rationales(engine_with_cohort, GenerateConfig(n=3, temperature=0.3),
                        backend=ScriptedBackend())
    with Session(engine_with_cohort) as session:
        assert session.execute(select(func.count()).select_from(GenerationRun)).scalar() == 2


def test_invalid_output_is_retried_then_stored_as_failed_with_raw_text(engine_with_cohort):
    summary = generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=2),
                                  backend=ScriptedBackend(garbage=True))
    assert summary.failed == 2
    with Session(engine_with_cohort) as session:
        failed = session.execute(select(Rationale)).scalars().all()
    assert all(r.status == "failed" and r.attempts == 3 for r in failed)
    assert all(r.raw_output.startswith('{"prediction"') for r in failed)
    assert "cut off at max_tokens" in failed[0].grounding["error"]



def test_retry_failed_reruns_only_the_failed_items_in_the_same_run(engine_with_cohort):
    failing = generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=0),
                                  backend=ScriptedBackend(garbage=True))
    assert failing.failed == 2
    plain = generate_rationales(engine_with_cohort, GenerateConfig(n=3, retries=0),
                                backend=ScriptedBackend(garbage=True))  # another run
    resumed = generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=0),
                                  backend=ScriptedBackend())
    assert resumed.run_id == failing.run_id and resumed.generated == 0  # failed stay failed
    class Recording(ScriptedBackend):
        def complete(self, requests, params):
            self.seen = [(r.seed, r.temperature) for r in requests]
            return super().complete(requests, params)

    first_try = Recording(garbage=True)
    generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=0, seed=9),
                        backend=first_try)  # a third run, to see what a retry asks for
    retry = Recording()
    generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=0, seed=9),
                        backend=retry, retry_failed=True)
    # the retry continues the attempt sequence: new seeds, the retry temperature
    assert not set(retry.seen) & set(first_try.seen)
    assert {t for _, t in retry.seen} == {GenerateConfig().retry_temperature}
    retried = generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=0),
                                  backend=ScriptedBackend(), retry_failed=True)
    assert retried.run_id == failing.run_id and retried.retried == 2 and retried.generated == 2
    with Session(engine_with_cohort) as session:
        rows = session.execute(select(Rationale).where(
            Rationale.variant == "original")).scalars().all()
        run = session.get(GenerationRun, failing.run_id)
        assert run.stats["retried"] == 2
    mine = [r for r in rows if r.run_id == failing.run_id]
    assert sorted(r.status for r in mine) == ["ok", "ok"]
    assert all(r.attempts == 2 for r in mine)  # the failed attempt, then the retry
    assert len({r.patient_id for r in mine}) == 2  # one original per patient: no duplicates
    other = [r for r in rows if r.run_id == plain.run_id]
    assert len(other) == 3 and all(r.status == "failed" for r in other)  # untouched
    again = generate_rationales(engine_with_cohort, GenerateConfig(n=2, retries=0),
                                backend=ScriptedBackend(), retry_failed=True)
    assert again.retried == 0 and again.generated == 0

def test_stored_rationales_carry_grounding_and_gold_copies_are_flagged(engine_with_cohort):
    summary = generate_rationales(engine_with_cohort, GenerateConfig(n=6, gold_share=1.0),
                                  backend=ScriptedBackend())
    assert summary.gold > 0
    again = generate_rationales(engine_with_cohort, GenerateConfig(n=6, gold_share=1.0),
                                backend=ScriptedBackend())
    assert again.gold == 0, "re-running never adds gold copies beyond the share"
    with Session(engine_with_cohort) as session:
        rows = session.execute(select(Rationale)).scalars().all()
    originals = [r for r in rows if r.variant == "original"]
    gold = [r for r in rows if r.is_gold]
    assert all(r.grounding["passed"] and r.grounding_score == 1.0 for r in originals)
    assert gold and all(r.parent_id and r.grounding["failed"] >= 1 for r in gold)
    assert {r.variant for r in gold} <= {"wrong_code", "invented_value", "contradicted_absence",
                                         "swapped_label"}
