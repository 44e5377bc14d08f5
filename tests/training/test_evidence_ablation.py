"""Evidence ablation: comprehensiveness, sufficiency and the random baseline, measured."""

import datetime as dt

import numpy as np
import pytest
from sqlmodel import Session, select

from annotation_db.models import FaithfulnessRun, FaithfulnessScore, Rationale
from annotation_db.render import tokenizer_counter
from generation.models import load_tokenizer
from tests.helpers import seed_rationales
from training.evidence_ablation import ablate, run_ablation, score_ablations
from training.evidence_ablation_config import FaithfulnessConfig


class OneItemScorer:
    """A reader whose answer depends on one evidence line only: P(yes) 0.9 while the
    history shows ``item``, 0.2 once it is gone (the synthetic case the ablation must
    recover)."""

    def __init__(self, tokenizer, item: str = "E5"):
        self.tokenizer = tokenizer
        self.item = item
        self.prompts: list[str] = []

    def label_probabilities(self, prompts):
        self.prompts += prompts
        p = np.array([0.9 if f"\n{self.item} " in prompt else 0.2 for prompt in prompts])
        return p, np.ones(len(prompts))


def record(n_items: int = 12) -> dict:
    """A patient whose record holds a demographic line, a genotype and dated diagnoses."""
    items = [{"id": "E1", "kind": "demographic", "date": None, "description": "age 74",
              "code": None, "code_system": None},
             {"id": "E2", "kind": "genotype", "date": None, "description": "APOE e3/e4",
              "code": None, "code_system": "genotype"}]
    for i in range(3, n_items + 1):
        items.append({"id": f"E{i}", "kind": "diagnosis",
                      "date": dt.date(2000 + i, 1, 1).isoformat(),
                      "description": f"condition number {i}", "code": f"X{i:02d}",
                      "code_system": "ICD-10"})
    return {"external_id": "P1", "sex": "F", "index_date": "2020-01-01", "items": items}


@pytest.fixture(scope="module")
def tokenizer(bundled_model):
    return load_tokenizer(bundled_model.path)


def measure(tokenizer, cited, claims=(), direction=1, budget=1500, draws=8):
    scorer = OneItemScorer(tokenizer)
    a = ablate(record(), 1, cited, list(claims), direction=direction, budget=budget,
               count=tokenizer_counter(tokenizer), draws=draws, seed=0)
    return score_ablations(scorer, [a])[0], a


def test_citing_the_item_the_answer_depends_on_is_comprehensive_and_sufficient(tokenizer):
    row, _ = measure(tokenizer, ["E5"])
    assert row["p_full"] == pytest.approx(0.9)
    assert row["comprehensiveness"] == pytest.approx(0.7)  # 0.9 → 0.2 without E5
    assert row["sufficiency"] == pytest.approx(0.0)  # E5 alone still gives 0.9
    assert row["baseline"] == pytest.approx(0.0)  # removing one uncited item never moves it
    assert len(row["p_random"]) == 8


def test_citing_an_irrelevant_item_falls_inside_the_random_baseline(tokenizer):
    row, _ = measure(tokenizer, ["E7"])
    randoms = [0.9 - p for p in row["p_random"]]  # each draw's drop
    assert row["comprehensiveness"] == pytest.approx(0.0)
    assert min(randoms) <= row["comprehensiveness"] <= max(randoms)
    assert row["comprehensiveness"] - row["baseline"] <= 0  # no margin over chance
    assert row["sufficiency"] == pytest.approx(0.7)  # E7 alone loses the answer


def test_a_no_conclusion_reads_the_probability_of_no(tokenizer):
    row, _ = measure(tokenizer, ["E5"], direction=0)
    # P(no) goes from 0.1 to 0.8 without E5: citing it argues *against* "no"
    assert row["comprehensiveness"] == pytest.approx(-0.7)


def test_each_claim_is_ablated_with_its_own_cited_items(tokenizer):
    row, _ = measure(tokenizer, ["E5", "E7"], claims=[(1, ["E5"]), (2, ["E7"]), (3, [])])
    by_position = {c["position"]: c for c in row["claims"]}
    assert set(by_position) == {1, 2}  # a claim citing nothing is not ablated
    assert by_position[1]["comprehensiveness"] == pytest.approx(0.7)
    assert by_position[2]["comprehensiveness"] == pytest.approx(0.0)
    assert row["comprehensiveness"] == pytest.approx(0.7)


def test_every_variant_respects_the_history_budget(tokenizer):
    count = tokenizer_counter(tokenizer)
    big = record(60)
    full = ablate(big, 1, ["E60"], [], direction=1, budget=10_000, count=count, draws=1, seed=0)
    budget = count(full.histories["full"]) // 2
    a = ablate(big, 1, ["E60", "E3"], [(1, ["E60"])], direction=1, budget=budget,
               count=count, draws=4, seed=0)
    assert "E3" in a.missing  # the oldest diagnosis was budgeted out: it cannot be removed
    assert a.cited == ["E60"]
    assert len(a.histories) == 1 + 2 + 4 + 1 + 4
    assert all(count(text) <= budget for text in a.histories.values())
    assert "\nE60 " not in a.histories["without"] and "\nE60 " in a.histories["only"]


def test_a_variant_keeps_the_full_historys_omitted_line_and_only_cited_keeps_just_the_header(
        tokenizer):
    count = tokenizer_counter(tokenizer)
    big = record(60)
    budget = count(ablate(big, 1, [], [], direction=1, budget=10_000, count=count, draws=1,
                          seed=0).histories["full"]) // 2
    a = ablate(big, 1, ["E60"], [], direction=1, budget=budget, count=count, draws=3, seed=0)
    omitted = a.histories["full"].splitlines()[-1]
    assert omitted.endswith("older items omitted)")
    for key in ("without", "random:0", "random:2"):
        assert a.histories[key].splitlines()[-1] == omitted  # only the removed lines differ
        assert len(a.histories[key].splitlines()) == len(a.histories["full"].splitlines()) - 1
    header = a.histories["full"].splitlines()[0]
    assert a.histories["only"].splitlines() == [header, next(
        line for line in a.histories["full"].splitlines() if line.startswith("E60 "))]


def test_no_baseline_when_fewer_uncited_items_are_shown_than_cited(tokenizer):
    every = [f"E{i}" for i in range(1, 13)]
    row, a = measure(tokenizer, every[:-1], claims=[(1, every[:-1])])  # 11 cited, 1 uncited
    assert row["comprehensiveness"] is not None and row["baseline"] is None
    assert row["p_random"] == [] and row["claims"][0]["baseline"] is None


def test_a_claims_baseline_removes_items_no_claim_of_the_rationale_cites(tokenizer):
    _, a = measure(tokenizer, ["E5", "E7"], claims=[(1, ["E7"]), (2, ["E5"])], draws=20)
    for j in range(20):  # claim 1's draws never take E5, which claim 2 cites
        assert "\nE5 " in a.histories[f"claim:1:random:{j}"]


def test_random_draws_are_seeded_by_the_run_and_the_rationale(tokenizer):
    count = tokenizer_counter(tokenizer)

    def draws(seed, rationale):
        a = ablate(record(), rationale, ["E5"], [], direction=1, budget=1500, count=count,
                   draws=5, seed=seed)
        return [a.histories[f"random:{j}"] for j in range(5)]

    assert draws(0, 1) == draws(0, 1)
    assert draws(0, 1) != draws(1, 1) and draws(0, 1) != draws(0, 2)


def test_a_rationale_that_cites_nothing_shown_has_no_ablation(tokenizer):
    row, a = measure(tokenizer, ["E99"])
    assert a.missing == ["E99"] and list(a.histories) == ["full"]
    assert row["comprehensiveness"] is None and row["baseline"] is None


def test_a_run_stores_every_rationale_once_and_resumes(engine, tokenizer):
    run_id = seed_rationales(engine, n=6, gold=2)  # gold copies are flawed on purpose
    scorer = OneItemScorer(tokenizer, item="E1")
    cfg = FaithfulnessConfig(run=run_id, draws=3, limit=4)
    who = {"kind": "model", "model": "one-item reader"}
    first = run_ablation(engine, cfg, scorer=scorer, scorer_identity=who)
    assert first.scored == 4
    with Session(engine) as s:
        assert s.get(FaithfulnessRun, first.run_id).status == "running"  # 2 still missing
    second = run_ablation(engine, cfg.model_copy(update={"limit": None}), scorer=scorer,
                          scorer_identity=who)
    assert (second.run_id, second.scored, second.skipped) == (first.run_id, 2, 4)
    with Session(engine) as s:
        run = s.get(FaithfulnessRun, first.run_id)
        assert run.status == "finished" and run.settings["history_budget"] == 1500
        rows = s.execute(select(FaithfulnessScore)).scalars().all()
        assert sorted(r.rationale_id for r in rows) == sorted(
            s.execute(select(Rationale.id).where(Rationale.run_id == run_id,
                                                 Rationale.is_gold.is_(False))).scalars())
        # every seeded rationale cites E1, the line this reader depends on
        assert all(r.comprehensiveness == pytest.approx(0.7) for r in rows)
    third = run_ablation(engine, cfg, scorer=scorer, scorer_identity=who)
    assert (third.run_id, third.scored) == (first.run_id, 0)
    other = run_ablation(engine, cfg.model_copy(update={"draws": 2}), scorer=scorer,
                         scorer_identity=who)
    assert other.run_id != first.run_id  # other settings are another run


@pytest.mark.vllm
def test_vllm_scores_every_variant_through_the_prefix_cached_engine(engine, vllm_engine,
                                                                   bundled_model):
    from training.scoring import TransformersScorer, VLLMScorer

    run_id = seed_rationales(engine, n=3, gold=0)
    scorer = VLLMScorer(vllm_engine)
    summary = run_ablation(engine, FaithfulnessConfig(run=run_id, draws=2, history_budget=300),
                           scorer=scorer, scorer_identity={"kind": "model", "model": "vllm"})
    assert summary.scored == 3 and summary.distinct_prompts <= summary.prompts
    with Session(engine) as s:
        rows = s.execute(select(FaithfulnessScore)).scalars().all()
    for row in rows:
        assert 0 < row.p_full < 1 and len(row.p_random) == 2
        assert row.comprehensiveness == pytest.approx(
            (row.p_full - row.p_without_cited) * (1 if row.direction else -1))
    # the same numbers as transformers reading the same prompts
    reference = TransformersScorer(bundled_model.path)
    again = run_ablation(engine, FaithfulnessConfig(run=run_id, draws=2, history_budget=300),
                         scorer=reference,
                         scorer_identity={"kind": "model", "model": "transformers"})
    with Session(engine) as s:
        by_run = {}
        for row in s.execute(select(FaithfulnessScore)).scalars():
            by_run.setdefault(row.faithfulness_run_id, {})[row.rationale_id] = row
    first, second = by_run[summary.run_id], by_run[again.run_id]
    for rid in first:
        assert first[rid].p_full == pytest.approx(second[rid].p_full, abs=2e-3)
        assert first[rid].p_without_cited == pytest.approx(second[rid].p_without_cited, abs=2e-3)
