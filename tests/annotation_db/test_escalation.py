"""Trust or escalate: the judge's doubt from its score probabilities, clinicians first where
it doubts most (every assignment constraint kept with 20 raters at once), and the share of
items a certified judge may be trusted on."""


import numpy as np
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import campaigns
from annotation_db.escalation import certified_threshold, doubt, p_approve, trust
from annotation_db.models import Assignment, CampaignItem, JudgeRating, JudgeRun, Rationale
from annotation_db.users import require_user
from tests.helpers import add_users, rate_at_once, seed_rationales


def rating(acc: dict, faith: dict) -> JudgeRating:
    return JudgeRating(judge_run_id=1, rationale_id=1, accuracy=4, faithfulness=4,
                       probabilities={"accuracy": acc, "faithfulness": faith})


def test_the_judges_doubt_comes_from_its_score_probabilities():
    sure = rating({"5": 0.9, "4": 0.1}, {"5": 1.0})
    coin = rating({"3": 0.5, "4": 0.5}, {"4": 1.0})
    assert p_approve(sure) == pytest.approx(1.0) and doubt(sure) == pytest.approx(0.0)
    assert p_approve(coin) == pytest.approx(0.5) and doubt(coin) == pytest.approx(0.5)
    both = rating({"4": 0.8, "2": 0.2}, {"5": 0.5, "3": 0.5})
    assert p_approve(both) == pytest.approx(0.4)  # 0.8 × 0.5
    no_probabilities = JudgeRating(judge_run_id=1, rationale_id=1, accuracy=5, faithfulness=5)
    assert p_approve(no_probabilities) is None and doubt(no_probabilities) == 0.5


def test_the_lowest_certified_threshold_keeps_only_items_the_judge_gets_right():
    # 200 items at confidence 0.95 that all agree, 100 at 0.6 that agree half the time
    confidence = np.array([0.95] * 200 + [0.6] * 100)
    agree = np.array([True] * 200 + [True, False] * 50)
    assert certified_threshold(confidence, agree, target=0.9, delta=0.05) == 0.95
    assert certified_threshold(confidence[:20], agree[:20], target=0.9, delta=0.05) is None


def test_trust_is_certified_on_calibration_items_and_checked_on_held_out_ones():
    rng = np.random.default_rng(0)
    # 300 items the judge is sure of and 98% right on; 300 near a coin flip
    confidence = np.concatenate([rng.uniform(0.9, 1.0, 300), rng.uniform(0.5, 0.7, 300)])
    correct = np.concatenate([rng.random(300) < 0.98, rng.random(300) < 0.6])
    panel = rng.random(600) < 0.5
    judge = np.where(correct, panel, ~panel)
    result = trust(confidence.tolist(), judge.tolist(), panel.tolist(), target=0.9, delta=0.05)
    assert result["computable"] and 0.3 < result["trusted_share"] < 0.7
    assert result["threshold"] >= 0.7
    assert result["agreement"] >= 0.9  # on held-out items it never saw
    assert result["agreement"] > result["agreement_all_held_out"]
    assert not trust([0.9] * 5, [True] * 5, [True] * 5)["computable"]


@pytest.fixture
def escalation(engine):
    """30 rationales; a judge sure of the first 15 and in doubt about the last 15."""
    raters = [f"r{i:02d}" for i in range(20)]
    add_users(engine, **dict.fromkeys(raters, "annotator"))
    run_id = seed_rationales(engine, n=30, gold=0)
    with Session(engine) as s:
        ids = s.execute(select(Rationale.id).where(Rationale.run_id == run_id)
                        .order_by(Rationale.id)).scalars().all()
        campaign = campaigns.create_campaign(s, name="probe", run_ids=[run_id],
                                             annotators=raters[:2], k=2, claim_review=False)
        judge = JudgeRun(campaign_id=campaign.id, content_hash="j" * 64, model="m",
                         backend="vllm", settings={})
        s.add(judge)
        s.flush()
        for n, rid in enumerate(ids):
            sure = n < 15
            s.add(JudgeRating(judge_run_id=judge.id, rationale_id=rid, accuracy=5, faithfulness=5,
                              flags=[], probabilities={"accuracy": {"5": 0.99, "2": 0.01} if sure
                                             else {"4": 0.5, "3": 0.5},
                                             "faithfulness": {"5": 1.0}}))
        s.commit()
        return engine, run_id, judge.id, raters, ids


def test_escalation_needs_a_judge_run(engine):
    add_users(engine, ann="annotator", bob="annotator")
    run_id = seed_rationales(engine, n=4, gold=0)
    with Session(engine) as s, pytest.raises(campaigns.CampaignError, match="--judge-run"):
        campaigns.create_campaign(s, name="e", run_ids=[run_id], annotators=["ann", "bob"],
                                  assignment="escalation", claim_review=False)


def test_the_items_the_judge_doubts_reach_clinicians_first(escalation):
    engine, run_id, judge_id, raters, ids = escalation
    with Session(engine) as s:
        campaign = campaigns.create_campaign(s, name="esc", run_ids=[run_id],
                                             annotators=raters[:4], k=2, assignment="escalation",
                                             judge_run=judge_id, claim_review=False)
        first = []
        for name in raters[:4] * 4:  # 16 picks: the 15 doubted items' first ratings
            item = campaigns.next_assignment(s, campaign, require_user(s, name))
            first.append(item.rationale_id)
            campaigns.submit(s, assignment_id=item.id, user=require_user(s, name), accuracy=4,
                             faithfulness=4, flags=[])
    doubted = set(ids[15:])
    assert set(first[:15]) <= doubted  # an item reaches k before a sure one is handed out
    assert all(first.count(i) <= 2 for i in first)


def test_twenty_raters_at_once_keep_every_constraint_under_escalation(escalation):
    engine, run_id, judge_id, raters, ids = escalation
    with Session(engine) as s:
        campaigns.create_campaign(s, name="esc", run_ids=[run_id], annotators=raters, k=2,
                                  calibration=2, assignment="escalation", judge_run=judge_id,
                                  max_ratings=4, seed=1, claim_review=False)
    errors = rate_at_once(engine, "esc", raters)
    assert not errors, errors[:3]
    with Session(engine) as s:
        campaign = campaigns.get_campaign(s, "esc")
        mine = Assignment.campaign_id == campaign.id
        counts = dict(s.execute(select(Assignment.rationale_id, func.count()).where(
            mine, Assignment.status == "submitted").group_by(Assignment.rationale_id)).all())
        calibration = set(s.execute(select(CampaignItem.rationale_id).where(
            CampaignItem.campaign_id == campaign.id, CampaignItem.is_calibration)).scalars())
        pairs = s.execute(select(Assignment.rationale_id, Assignment.user_id).where(mine)).all()
        slots = s.execute(select(Assignment.rationale_id, Assignment.slot).where(
            mine, Assignment.slot.is_not(None))).all()
        open_left = s.execute(select(func.count()).select_from(Assignment).where(
            mine, Assignment.status == "assigned")).scalar()
    assert len(pairs) == len(set(pairs))  # nobody rated one item twice
    assert len(slots) == len(set(slots))  # one rater per slot
    assert open_left == 0
    assert all(counts[i] == 20 for i in calibration)
    others = {i: c for i, c in counts.items() if i not in calibration}
    assert len(others) == 28 and all(2 <= c <= 4 for c in others.values()), others
