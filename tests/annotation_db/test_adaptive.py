"""Disagreement-driven assignment: informative items first, every item reaches k, the cap
holds with 20 raters at once, and the simulation shows what it saves."""

import math
import random

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import campaigns
from annotation_db.adaptive import BeliefModel, Settings, choose, simulate_allocation
from annotation_db.models import Assignment, CampaignItem
from annotation_db.users import require_user
from tests.helpers import add_users, rate_at_once, seed_rationales

SETTINGS = Settings(k=2, max_ratings=4, min_uncertainty=0.05, approve_at=4.0, judge_run=None)
MODEL = BeliefModel(noise_sd=0.8, prior_mean=3.5, prior_sd=1.0)


def test_the_posterior_is_the_normal_normal_update():
    # one dimension by hand: precision 1/1 + 2/0.64, mean (3.5 + 9/0.64) / precision; the
    # latent score that rounds to the approval threshold 4 is 3.5
    precision = 1 + 2 / 0.64
    mean = (3.5 + (4 + 5) / 0.64) / precision
    p_one = 0.5 * (1 + math.erf((mean - 3.5) * math.sqrt(precision) / math.sqrt(2)))
    assert MODEL.p_approve([(4, 4), (5, 5)]) == pytest.approx(p_one ** 2)
    assert MODEL.uncertainty([(5, 5)] * 2) < 0.05 < MODEL.uncertainty([(4, 4), (3, 4)])


def test_items_below_k_come_first_then_the_most_uncertain_below_the_cap():
    rng = random.Random(0)
    submitted = {1: [(5, 5)], 2: [(5, 5), (5, 5)], 3: [(4, 4), (3, 4)], 4: [(1, 1), (1, 2)]}
    # uncertainties: item 2 (5 / 5 twice) 0.02, item 3 0.39, item 4 (1 / 1) 0.00
    assert choose([1, 2, 3, 4], submitted=submitted, pending={}, settings=SETTINGS,
                  model=MODEL, rng=rng) == 1  # below k
    assert choose([2, 3, 4], submitted=submitted, pending={}, settings=SETTINGS, model=MODEL,
                  rng=rng) == 3  # 4 / 3 straddles the threshold; 5 / 5 and 1 / 1 do not
    assert choose([2, 3, 4], submitted=submitted, pending={3: 1}, settings=SETTINGS,
                  model=MODEL, rng=rng) is None  # its pending rating comes first
    capped = {**submitted, 3: [(4, 4), (3, 4), (4, 3), (3, 4)]}
    assert choose([2, 3, 4], submitted=capped, pending={}, settings=SETTINGS, model=MODEL,
                  rng=rng) is None  # at the cap of 4


def test_adaptive_order_needs_fewer_ratings_for_as_many_correct_decisions():
    result = simulate_allocation(items=120, k=2, max_ratings=5, replicates=3, seed=0)
    level = next(x for x in result["levels"] if x["random_ratings"] == 120 * 3)
    assert level["adaptive_ratings"] is not None
    assert level["adaptive_ratings"] < level["random_ratings"], result["levels"]


def test_twenty_raters_at_once_keep_every_constraint(engine):
    raters = [f"r{i:02d}" for i in range(20)]
    add_users(engine, **dict.fromkeys(raters, "annotator"))
    run_id = seed_rationales(engine, n=30, gold=0)
    with Session(engine) as s:
        campaigns.create_campaign(s, name="adaptive", run_ids=[run_id], annotators=raters, k=2,
                                  calibration=2, assignment="adaptive", max_ratings=4, seed=1,
                                  claim_review=False)
    errors = rate_at_once(engine, "adaptive", raters)
    assert not errors, errors[:3]
    with Session(engine) as s:
        counts = dict(s.execute(select(Assignment.rationale_id, func.count()).where(
            Assignment.status == "submitted").group_by(Assignment.rationale_id)).all())
        calibration = set(s.execute(select(CampaignItem.rationale_id).where(
            CampaignItem.is_calibration)).scalars())
        pairs = s.execute(select(Assignment.rationale_id, Assignment.user_id)).all()
        open_left = s.execute(select(func.count()).select_from(Assignment).where(
            Assignment.status == "assigned")).scalar()
    assert len(pairs) == len(set(pairs))  # nobody rated one item twice
    assert open_left == 0
    assert all(counts[i] == 20 for i in calibration)  # everyone rates the calibration batch
    others = {i: c for i, c in counts.items() if i not in calibration}
    assert len(others) == 28 and all(2 <= c <= 4 for c in others.values()), others
    assert any(c > 2 for c in others.values())  # some decisions were uncertain enough


def test_a_skipped_adaptive_item_goes_back_to_the_pool(engine):
    add_users(engine, ann="annotator", bob="annotator", cat="annotator")
    run_id = seed_rationales(engine, n=4, gold=0)
    with Session(engine) as s:
        campaign = campaigns.create_campaign(s, name="p", run_ids=[run_id],
                                             annotators=["ann", "bob", "cat"], k=2,
                                             assignment="adaptive", claim_review=False)
        a, b = require_user(s, "ann"), require_user(s, "bob")
        first = campaigns.next_assignment(s, campaign, a)
        campaigns.skip(s, assignment_id=first.id, user=a, reason="cannot judge")
        assert s.execute(select(func.count()).select_from(Assignment).where(
            Assignment.rationale_id == first.rationale_id)).scalar() == 1  # not handed on
        assert campaigns.next_assignment(s, campaign, a).rationale_id != first.rationale_id
        taken = {campaigns.next_assignment(s, campaign, b).rationale_id}
        assert taken  # b is handed an item too; the skipped one stays available to b and c


def test_adaptive_needs_a_sensible_cap(engine):
    add_users(engine, ann="annotator", bob="annotator")
    run_id = seed_rationales(engine, n=3, gold=0)
    with Session(engine) as s, pytest.raises(campaigns.CampaignError, match="max-ratings"):
        campaigns.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"], k=2,
                                  assignment="adaptive", max_ratings=3, claim_review=False)
