"""Measured faithfulness beside the raters: the report, the approval policy's margin, and
campaign estimates that combine the judge with a subset of clinicians."""

import json

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import export, faithfulness, users
from annotation_db.faithfulness_report import report, to_html, to_json, to_markdown
from annotation_db.judge_estimates import estimates
from annotation_db.judge_estimates import to_markdown as estimates_markdown
from annotation_db.models import Assignment, GenerationRun, JudgeRating, JudgeRun, Rationale
from generation.models import history_counter
from tests.helpers import PASSWORD, seed_rationales


def quality(rationale_id: int) -> float:
    """A hidden quality in [0, 1] that the raters, the judge and the ablation all read."""
    return (rationale_id * 37 % 24) / 23


def score_row(rationale_id: int, margin: float | None) -> dict:
    comp = None if margin is None else 0.05 + margin
    return {"rationale_id": rationale_id, "direction": 1, "shown_items": 12,
            "cited_shown": 0 if margin is None else 1, "cited_missing": 0, "p_full": 0.8,
            "p_without_cited": None if comp is None else 0.8 - comp,
            "p_only_cited": None if comp is None else 0.7, "p_random": [0.75, 0.75],
            "comprehensiveness": comp, "sufficiency": None if comp is None else 0.1,
            "baseline": None if comp is None else 0.05,
            "claims": [] if comp is None else [{"position": 1, "cited": ["E1"], "p_without": 0.5,
                                                "p_random": [0.75], "comprehensiveness": comp,
                                                "baseline": 0.05}]}


@pytest.fixture
def audited(engine):
    """24 rationales rated by two clinicians, judged, and ablated; each reads one quality."""
    run_id = seed_rationales(engine, n=24, gold=0)
    with Session(engine) as s:
        raters = [users.create_user(s, username=n, password=PASSWORD, role="annotator")
                  for n in ("ann", "bob")]
        campaign = camp.create_campaign(s, name="pilot", run_ids=[run_id],
                                        annotators=["ann", "bob"], k=2, claim_review=False)
        for user in raters:
            for a in s.execute(select(Assignment).where(Assignment.user_id == user.id)
                               ).scalars().all():
                score = 1 + round(4 * quality(a.rationale_id))
                camp.submit(s, assignment_id=a.id, user=user, accuracy=score,
                            faithfulness=score, flags=[])
        judge = JudgeRun(campaign_id=campaign.id, content_hash="j" * 64, model="judge-m",
                         backend="vllm", settings={})
        s.add(judge)
        s.flush()
        ids = s.execute(select(Rationale.id).where(Rationale.run_id == run_id)
                        .order_by(Rationale.id)).scalars().all()
        for rid in ids:
            q = quality(rid)
            s.add(JudgeRating(judge_run_id=judge.id, rationale_id=rid, accuracy=5, faithfulness=5,
                              flags=[], expected_accuracy=1 + 4 * q,
                              expected_faithfulness=1 + 4 * q,
                              probabilities={"accuracy": {"5": q, "2": 1 - q},
                                             "faithfulness": {"5": 1.0}}))
        s.commit()
        run = faithfulness.open_run(s, generation_run_id=run_id,
                                    scorer={"kind": "model", "model": "bundled:x"},
                                    settings={"draws": 2, "seed": 0, "history_budget": 1500})
        # margins follow the quality; the last rationale is left unscored
        faithfulness.store(s, run.id, [score_row(rid, 0.4 * quality(rid) - 0.1)
                                       for rid in ids[:-1]], seconds=1.0)
        faithfulness.finish(s, run.id, complete=False)
        run_row = faithfulness.get_run(s, run.id)
        run_row.status = "finished"
        s.add(run_row)
        s.commit()
    return engine, ids


def test_the_report_sets_the_measured_margin_beside_the_raters_and_the_judge(audited):
    engine, ids = audited
    with Session(engine) as s:
        rep = report(s, campaign="pilot", margin=0.05, replicates=200)
    assert rep["rationales"] == 23 and rep["with_cited_evidence_shown"] == 23
    expected = sum(0.4 * quality(i) - 0.1 > 0.05 for i in ids[:-1])
    beats = rep["beats_baseline"]
    assert (beats["above"], beats["n"]) == (expected, 23)
    assert beats["ci95"][0] < beats["share"] < beats["ci95"][1]
    clinicians = rep["campaign"]["vs_clinicians_faithfulness"]
    assert clinicians["rho"] > 0.9 and clinicians["ci95"][0] > 0.5  # all read one quality
    assert rep["campaign"]["vs_judge_faithfulness"]["rho"] == pytest.approx(1.0)
    assert rep["per_claim"]["claims"] == 23
    text = to_markdown(rep)
    assert "beat the random baseline by more than 0.05" in text and "ρ = " in text
    assert json.loads(to_json(rep))["beats_baseline"]["above"] == expected
    assert to_html(rep).startswith("<!doctype html><html lang='en'>")


def test_the_policy_margin_rejects_weak_evidence_and_exports_name_the_scorer(audited, tmp_path):
    engine, ids = audited

    def policy(**keys):
        return export.ApprovalPolicy(campaigns=["pilot"], min_ratings=2, min_accuracy=1,
                                     min_faithfulness=1, min_gold_accuracy=None, **keys)

    with Session(engine) as s:
        everything = export.preview(s, policy())
        checked = export.preview(s, policy(min_comprehensiveness_margin=0.05))
        version = export.create(s, name="measured", policy_text=policy(
            min_comprehensiveness_margin=0.05).to_yaml(), root=tmp_path,
            counter_for=history_counter)
    assert everything["approved"] == 24
    weak = sum(0.4 * quality(i) - 0.1 < 0.05 for i in ids[:-1])
    assert checked["approved"] == 24 - weak - 1
    assert checked["failing_by_criterion"] == {"comprehensiveness margin below 0.05": weak,
                                               "no faithfulness score": 1}
    (used,) = version.manifest["provenance"]["faithfulness"]
    assert used["scorer"] == {"kind": "model", "model": "bundled:x"}


def test_campaign_estimates_with_the_judge_on_a_random_half(audited):
    engine, ids = audited
    with Session(engine) as s:
        # the other half of the items never rated: drop bob's and ann's later ratings
        rated_half = set(ids[::2])
        for a in s.execute(select(Assignment)).scalars().all():
            if a.rationale_id not in rated_half:
                a.status = "skipped"
                s.add(a)
        s.commit()
        rep = estimates(s, "pilot", target_width=1.5)
    assert (rep["items"], rep["judged"], rep["rated"]) == (24, 24, 12)
    assert rep["random_subset"]
    acc = rep["quantities"]["mean_accuracy"]
    assert acc["prediction_powered"]["N"] == 12 and acc["prediction_powered"]["n"] == 12
    # a judge that reads the same quality: at best √(N/(n + N)) = 0.71 of the width with n = N
    assert acc["width_ratio"] < 0.75
    assert acc["plan"]["with_judge"] < acc["plan"]["without_judge_needed"]
    assert not rep["quantities"]["share_claims_not_in_record"]["computable"]
    assert not rep["trust"]["computable"]  # 12 items: too few to certify anything
    text = estimates_markdown(rep)
    assert "| mean_accuracy |" in text and "PPI++" in text


def test_a_named_faithfulness_run_of_another_generation_run_is_one_clear_error(audited):
    engine, ids = audited
    with Session(engine) as s:
        first = s.get(GenerationRun, s.get(Rationale, ids[0]).run_id)
        other = GenerationRun(content_hash="o" * 64, cohort_id=first.cohort_id,
                              prompt_template_id=first.prompt_template_id, model="m2",
                              backend="vllm", selection={}, sampling_params={}, seed=1)
        s.add(other)
        s.commit()
        other_run = other.id
        wrong = faithfulness.open_run(s, generation_run_id=other_run, scorer={"kind": "model"},
                                      settings={})
        policy = export.ApprovalPolicy(campaigns=["pilot"], min_comprehensiveness_margin=0.0,
                                       faithfulness_run=wrong.id)
        with pytest.raises(export.ExportError, match=f"faithfulness run {wrong.id} ablated "
                                                     f"generation run {other_run}"):
            export.preview(s, policy)


def test_an_escalation_campaign_is_estimated_with_its_own_judge_and_warned_about(audited):
    engine, ids = audited
    with Session(engine) as s:
        judge = s.execute(select(JudgeRun)).scalars().one()
        users.create_user(s, username="cat", password=PASSWORD, role="annotator")
        run_id = s.get(Rationale, ids[0]).run_id
        campaign = camp.create_campaign(s, name="esc", run_ids=[run_id],
                                        annotators=["ann", "bob", "cat"], k=2,
                                        assignment="escalation", judge_run=judge.id,
                                        claim_review=False)
        for name in ("ann", "bob", "cat") * 4:
            user = users.require_user(s, name)
            item = camp.next_assignment(s, campaign, user)
            camp.submit(s, assignment_id=item.id, user=user, accuracy=4, faithfulness=4,
                        flags=[])
        rep = estimates(s, "esc")  # the judge of campaign "pilot", named at creation
        rated = len(set(s.execute(select(Assignment.rationale_id).where(
            Assignment.campaign_id == campaign.id, Assignment.status == "submitted")).scalars()))
    assert rep["judge_run"] == judge.id and rep["rated"] == rated
    assert not rep["random_subset"] and "NOT valid" in rep["validity"]
    assert rep["quantities"]["mean_accuracy"]["width_ratio"] is None  # every rating a 4
