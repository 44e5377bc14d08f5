"""Claim review's data: a verdict per claim with each rating, checked and stored with it;
claim-level agreement; the approval policy's claim keys."""

import krippendorff
import numpy as np
import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import claim_review, claims, export, users
from annotation_db.agreement import dimension_report
from annotation_db.models import AuditEvent, GenerationRun, Rationale
from annotation_db.ratings import default_dimensions, load_campaign_ratings
from annotation_db.rubric import CLAIM_DIMENSION
from tests.helpers import PASSWORD, seed_rationales

TEXT = ("Age 81 is the strongest background factor [E1]. Memory complaints are recorded "
        "[E2]. A diagnosis within five years is likely.")


@pytest.fixture
def reviewed(engine):
    """Two annotators, a k = 2 campaign with claim review on over two rationales of three
    claims each; returns (engine, campaign name, {rationale id: [claim ids]})."""
    with Session(engine) as s:
        for name in ("ann", "bob"):
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
    seeded = seed_rationales(engine, n=2, gold=0)
    with Session(engine) as s:
        base = s.get(GenerationRun, seeded)
        run = GenerationRun(content_hash="q" * 64, cohort_id=base.cohort_id,
                            prompt_template_id=base.prompt_template_id, model="m",
                            backend="vllm", selection={}, sampling_params={}, seed=1)
        s.add(run)
        s.flush()
        run_id = run.id
        for pid in (1, 2):
            s.add(Rationale(run_id=run_id, patient_id=pid, format="free",
                            cited_evidence_ids=["E1", "E2"], text=TEXT))
        s.commit()
        camp.create_campaign(s, name="claims", run_ids=[run_id], annotators=["ann", "bob"],
                             k=2, claim_review=True)
        ids = {r.id: [c.id for c in claims.claims_of(s, r.id)] for r in s.execute(
            select(Rationale).where(Rationale.run_id == run_id)).scalars()}
    assert all(len(c) == 3 for c in ids.values())
    return engine, "claims", ids


def _rate(s, name, verdicts_by_position, should_cite=()):
    user = users.require_user(s, name)
    campaign = camp.get_campaign(s, "claims")
    item = camp.next_assignment(s, campaign, user)
    ids = [c.id for c in claims.claims_of(s, item.rationale_id)]
    given = {cid: {"verdict": v, "should_cite": list(should_cite)}
             for cid, v in zip(ids, verdicts_by_position, strict=True)}
    return camp.submit(s, assignment_id=item.id, user=user, accuracy=4, faithfulness=4,
                       flags=[], claim_verdicts=given), item


def test_every_claim_needs_a_verdict_when_claim_review_is_on(reviewed):
    engine, _, _ = reviewed
    with Session(engine) as s:
        user = users.require_user(s, "ann")
        item = camp.next_assignment(s, camp.get_campaign(s, "claims"), user)
        first = claims.claims_of(s, item.rationale_id)[0]
        with pytest.raises(camp.CampaignError, match="claims 2, 3 have none"):
            camp.submit(s, assignment_id=item.id, user=user, accuracy=4, faithfulness=4,
                        flags=[], claim_verdicts={first.id: {"verdict": "supported"}})


@pytest.mark.parametrize("change, message", [
    (lambda v, other: {**v, other: {"verdict": "supported"}}, "not claims of this rationale"),
    (lambda v, other: {k: {"verdict": "maybe"} for k in v}, "verdict must be one of"),
    (lambda v, other: {k: {"verdict": "supported", "should_cite": ["E999"]} for k in v},
     "E999 is not in this patient's record"),
    (lambda v, other: {**{str(k): x for k, x in v.items()},
                       **{f" {k}": {"verdict": "maybe"} for k in v}}, "is given twice"),
    (lambda v, other: {k: "supported" for k in v}, "a verdict must be an object"),
])
def test_a_verdict_that_cannot_be_right_is_refused_and_nothing_is_stored(reviewed, change,
                                                                          message):
    engine, _, ids = reviewed
    with Session(engine) as s:
        user = users.require_user(s, "ann")
        item = camp.next_assignment(s, camp.get_campaign(s, "claims"), user)
        own = {cid: {"verdict": "supported"} for cid in ids[item.rationale_id]}
        other = next(c for r, cs in ids.items() if r != item.rationale_id for c in cs)
        with pytest.raises(camp.CampaignError, match=message):
            camp.submit(s, assignment_id=item.id, user=user, accuracy=4, faithfulness=4,
                        flags=[], claim_verdicts=change(own, other))
        assert camp.latest_annotation(s, item.id) is None


def test_verdicts_are_stored_with_their_revision_and_the_newest_counts(reviewed):
    engine, _, _ = reviewed
    with Session(engine) as s:
        first, item = _rate(s, "ann", ["supported", "not_in_record", "general_knowledge"],
                            should_cite=["E3"])
        user = users.require_user(s, "ann")
        ids = [c.id for c in claims.claims_of(s, item.rationale_id)]
        second = camp.submit(s, assignment_id=item.id, user=user, accuracy=3, faithfulness=3,
                             flags=[], claim_verdicts={c: {"verdict": "contradicted"}
                                                       for c in ids})
        assert claim_review.verdicts_of(s, first.id)[ids[1]] == {
            "verdict": "not_in_record", "should_cite": ["E3"]}  # revision 1 kept as it was
        rows = claim_review.campaign_verdicts(s, camp.get_campaign(s, "claims"))
        assert [r["verdict"] for r in rows] == ["contradicted"] * 3
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "rating_revised")
                          ).scalars().one()
        assert event.detail["claims_judged"] == 3 and second.revision == 2


def test_claim_alpha_is_krippendorffs_nominal_alpha_over_claims(reviewed):
    engine, _, _ = reviewed
    with Session(engine) as s:
        for name, verdicts in (("ann", ["supported", "supported", "not_in_record"]),
                               ("bob", ["supported", "partly_supported", "not_in_record"])):
            _rate(s, name, verdicts)
            _rate(s, name, ["supported", "contradicted", "general_knowledge"]
                  if name == "ann" else ["supported", "contradicted", "supported"])
        ratings, _, design = load_campaign_ratings(s, "claims")
    (spec,) = [d for d in default_dimensions({r.dimension for r in ratings})
               if d.name == CLAIM_DIMENSION]
    section = dimension_report(ratings, spec, replicates=200, seed=0)
    codes = {"supported": 0, "partly_supported": 1, "not_in_record": 2, "contradicted": 3,
             "general_knowledge": 4}
    by_unit = {}
    for r in ratings:
        if r.dimension == CLAIM_DIMENSION:
            by_unit.setdefault(r.item, {})[r.rater] = r.score
    matrix = np.array([[by_unit[u][rater] for u in sorted(by_unit)] for rater in ("ann", "bob")])
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal",
                                  value_domain=sorted(codes.values()))
    assert section["alpha"]["alpha"] == pytest.approx(expected)
    assert len(by_unit) == 6 and section["level"] == "nominal"
    assert "unanimous verdict on 67%" in design["claim_review"]  # 4 of 6 claims


def test_claim_summary_counts_unanimous_claims_and_the_should_cite_overlap():
    rows = [{"claim_id": 1, "verdict": "supported", "should_cite": ["E1", "E2"]},
            {"claim_id": 1, "verdict": "supported", "should_cite": ["E2"]},
            {"claim_id": 2, "verdict": "supported", "should_cite": []},
            {"claim_id": 2, "verdict": "contradicted", "should_cite": []},
            {"claim_id": 3, "verdict": "supported", "should_cite": []}]  # one rater only
    summary = claim_review.claim_summary(rows)
    assert summary["claims_with_two_or_more"] == 2 and summary["unanimous_share"] == 0.5
    assert summary["should_cite_jaccard"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary["should_cite_marked_share"] == 0.5


def test_the_policy_rejects_rationales_with_unsupported_claims(reviewed, tmp_path):
    engine, _, ids = reviewed
    with Session(engine) as s:
        for name in ("ann", "bob"):  # first item: one claim judged not in the record
            _rate(s, name, ["supported", "not_in_record", "supported"])
            _rate(s, name, ["supported", "supported", "general_knowledge"])
        base = dict(campaigns=["claims"], min_ratings=2, min_accuracy=1,
                    min_faithfulness=1, min_gold_accuracy=None)
        plain = export.evaluate(s, export.ApprovalPolicy(**base))
        strict = export.evaluate(s, export.ApprovalPolicy(**base, max_unsupported_claims=0))
        share = export.evaluate(s, export.ApprovalPolicy(**base, min_supported_share=0.7))
    assert all(d.approved for d in plain)
    assert [d.reasons for d in strict if not d.approved] == [
        ["1 claim not in the record or contradicted (at most 0)"]]
    assert sorted(d.reasons for d in share if not d.approved) == [
        ["supported claims 67% below 70%"], ["supported claims 67% below 70%"]]


def test_simulated_raters_give_claim_verdicts_with_the_error_rate_asked(reviewed):
    from annotation_db.simulate import simulate, simulated_raters

    engine, _, ids = reviewed
    with Session(engine) as s:
        names = simulated_raters(s, 3)
        run_id = s.get(Rationale, next(iter(ids))).run_id
        exact = camp.create_campaign(s, name="sim-exact", run_ids=[run_id], annotators=names,
                                     k=3, claim_review=True)
        assert simulate(s, exact, seed=4, claim_error=0.0) == 6
        rows = claim_review.campaign_verdicts(s, exact, include_simulated=True)
        # "[E1]" and "[E2]" are in every record; the last sentence cites nothing
        assert {(r["position"], r["verdict"]) for r in rows} == {
            (1, "supported"), (2, "supported"), (3, "general_knowledge")}
        noisy = camp.create_campaign(s, name="sim-noisy", run_ids=[run_id],
                                     annotators=names, k=3, claim_review=True)
        simulate(s, noisy, seed=4, claim_error=1.0)
        rows = claim_review.campaign_verdicts(s, noisy, include_simulated=True)
        assert len(rows) == 18 and not any(
            r["verdict"] == ("general_knowledge" if r["position"] == 3 else "supported")
            for r in rows)


def test_simulated_scores_are_the_same_with_claim_review_on_or_off(reviewed):
    """A study's simulated audit (and the dataset made from it) does not change when its
    campaign reviews claims: the verdicts come from their own generator."""
    from annotation_db.adjudication import latest_ratings
    from annotation_db.simulate import simulate, simulated_raters

    engine, _, ids = reviewed
    with Session(engine) as s:
        names = simulated_raters(s, 3)
        run_id = s.get(Rationale, next(iter(ids))).run_id
        scores = {}
        for review in (False, True):
            campaign = camp.create_campaign(s, name=f"sim-{review}", run_ids=[run_id],
                                            annotators=names, k=3, claim_review=review,
                                            seed=2)
            simulate(s, campaign, seed=2, claim_error=0.3)
            scores[review] = sorted(
                (item, r["rater"], r["accuracy"], r["faithfulness"], tuple(r["flags"]))
                for item, rows in latest_ratings(s, campaign.id).items() for r in rows)
    assert scores[True] == scores[False] and len(scores[True]) == 6


def test_raters_split_on_whether_a_claim_is_in_the_record_send_the_item_to_adjudication(
        reviewed):
    from annotation_db import adjudication

    engine, name, _ = reviewed
    with Session(engine) as s:
        # same scores, no flags: only claim 2 divides them (partly vs general is no split)
        _rate(s, "ann", ["supported", "supported", "partly_supported"])
        _, item = _rate(s, "bob", ["supported", "not_in_record", "general_knowledge"])
        rationale_id = item.rationale_id
        queue = adjudication.queue(s, camp.get_campaign(s, name))
    assert [(i["rationale_id"], i["split_claims"], i["split_flags"]) for i in queue] == [
        (rationale_id, [2], [])]


def test_the_judges_claim_verdicts_are_calibrated_against_the_panel_as_nominal(reviewed):
    from annotation_db.judges import calibration_report
    from annotation_db.models import JudgeRating, JudgeRun

    engine, name, ids = reviewed
    panel = {"ann": [["supported", "supported", "not_in_record"],
                     ["supported", "contradicted", "general_knowledge"]],
             "bob": [["supported", "partly_supported", "not_in_record"],
                     ["supported", "contradicted", "supported"]]}
    with Session(engine) as s:
        rated = {}
        for rater, both in panel.items():
            for verdicts in both:
                _, item = _rate(s, rater, verdicts)
                rated.setdefault(rater, []).append(item.rationale_id)
        campaign = camp.get_campaign(s, name)
        run = JudgeRun(campaign_id=campaign.id, content_hash="j" * 64, model="m",
                       backend="vllm", settings={}, status="finished")
        s.add(run)
        s.flush()
        # the judge agrees with ann on every claim
        for rationale_id, verdicts in zip(rated["ann"], panel["ann"], strict=True):
            s.add(JudgeRating(judge_run_id=run.id, rationale_id=rationale_id, accuracy=4,
                              faithfulness=4, flags=[],
                              claim_verdicts={str(k): v for k, v in
                                              enumerate(verdicts, start=1)}))
        s.commit()
        report = calibration_report(s, name, replicates=50, min_items=2)
    (claims_section,) = [d for d in report["dimensions"] if d["dimension"] == CLAIM_DIMENSION]
    by_rater = {k["rater"]: k for k in claims_section["kappa_vs_raters"]}
    assert by_rater["ann"]["kappa"] == pytest.approx(1.0)
    assert by_rater["ann"]["weights"] == "none" and claims_section["items"] == 6
    codes = {"supported": 0, "partly_supported": 1, "not_in_record": 2, "contradicted": 3,
             "general_knowledge": 4}
    given = {r: {(rationale, k): codes[v]
                 for rationale, both in zip(rated[r], panel[r], strict=True)
                 for k, v in enumerate(both)} for r in panel}
    units = sorted(given["ann"])
    matrix = np.array([[given[r][u] for u in units] for r in ("ann", "bob")], dtype=float)
    with_judge = np.vstack([matrix, matrix[0]])
    assert claims_section["alpha_with_judge"]["alpha"] == pytest.approx(krippendorff.alpha(
        reliability_data=with_judge, level_of_measurement="nominal",
        value_domain=sorted(codes.values())))
    assert claims_section["spearman_vs_panel_mean"]["computable"] is False


def test_a_draft_keeps_the_scores_when_a_marked_line_is_mistyped(reviewed):
    from annotation_db import drafts

    engine, _, _ = reviewed
    with Session(engine) as s:
        user = users.require_user(s, "ann")
        item = camp.next_assignment(s, camp.get_campaign(s, "claims"), user)
        first, second = claims.claims_of(s, item.rationale_id)[:2]
        draft = drafts.save_draft(s, assignment_id=item.id, user=user, accuracy=4,
                                  faithfulness=None, flags=[], comment="",
                                  claim_verdicts={str(first.id): {"verdict": "supported",
                                                                  "should_cite": ["E999"]},
                                                  str(second.id): {"verdict": None,
                                                                   "should_cite": ["E99x"]}})
        assert draft.accuracy == 4
        assert draft.claim_verdicts == {str(first.id): {"verdict": "supported",
                                                        "should_cite": []}}
