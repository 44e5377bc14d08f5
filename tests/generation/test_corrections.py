"""Corrections: a clinician's corrected rationale is checked like a generated one, stored as
a new rationale with its own claims and provenance, and decided once by an adjudicator."""

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import claims, corrections, users
from annotation_db.models import AuditEvent, Correction, Rationale
from generation import corrections as correct
from tests.helpers import PASSWORD, seed_rationales


@pytest.fixture
def item(engine):
    """An annotator's first item of a campaign (claim review off), and an adjudicator."""
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        users.create_user(s, username="adj", password=PASSWORD, role="adjudicator")
    run_id = seed_rationales(engine, n=2, gold=0)
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="c", run_ids=[run_id], annotators=["ann"], k=1,
                                        claim_review=False)
        assignment = camp.next_assignment(s, campaign, users.require_user(s, "ann"))
        return engine, assignment.id


def _propose(engine, edited, note=""):
    with Session(engine) as s:
        correction, checked = correct.propose(s, assignment_id=_item_id(engine), user=users
                                              .require_user(s, "ann"), edited=edited, note=note)
        return (correction.id if correction else None), checked


def _item_id(engine):
    with Session(engine) as s:
        return s.execute(select(camp.Assignment.id).order_by(camp.Assignment.id)).scalar()


def test_a_correction_is_a_new_rationale_with_its_claims_and_provenance(item):
    engine, assignment_id = item
    correction_id, checked = _propose(
        engine, "A diagnosis of insomnia is recorded [E2]. The record shows the genotype [E1].",
        note="the original cited one line only")
    assert checked.problem is None and checked.grounding["passed"] in (True, False)
    with Session(engine) as s:
        row = s.get(Correction, correction_id)
        corrected = s.get(Rationale, row.rationale_id)
        source = s.get(Rationale, row.source_rationale_id)
        assert (row.status, row.note) == ("proposed", "the original cited one line only")
        assert corrected.parent_id == source.id and corrected.variant.startswith("correction-")
        assert (corrected.run_id, corrected.patient_id) == (source.run_id, source.patient_id)
        assert corrected.cited_evidence_ids == ["E2", "E1"]
        assert [c.cited_ids for c in claims.claims_of(s, corrected.id)] == [["E2"], ["E1"]]
        event = s.execute(select(AuditEvent).where(AuditEvent.action == "correction_proposed")
                          ).scalars().one()
        assert (event.actor, event.detail["item"], event.detail["rationale"]) == (
            "ann", source.id, corrected.id)


@pytest.mark.parametrize(("edited", "problem"), [
    ("Memory loss is documented [E999].", "E999 is not in this patient's record"),
    ("No citation at all.", "cite at least one record line inline, as [E12]"),
    ("   ", "cite at least one record line inline, as [E12]"),
])
def test_a_correction_citing_what_the_patient_does_not_have_is_refused_and_nothing_stored(
        item, edited, problem):
    engine, _ = item
    correction_id, checked = _propose(engine, edited)
    assert (correction_id, checked.problem) == (None, problem)
    with Session(engine) as s:
        assert s.execute(select(Correction)).first() is None
        assert s.execute(select(Rationale).where(Rationale.variant != "original")).first() is None


def test_grounding_failures_are_stored_and_shown_not_hidden(item):
    engine, _ = item
    correction_id, checked = _propose(engine, "She takes donepezil 10 mg daily [E1].")
    assert correction_id is not None
    assert not checked.grounding["passed"]
    assert any(c["kind"] == "drug" and not c["ok"] for c in checked.grounding["checks"])


def test_an_adjudicator_decides_once_and_a_rejection_needs_a_reason(item):
    engine, _ = item
    first, _ = _propose(engine, "The genotype is recorded [E1].")
    second, _ = _propose(engine, "The genotype is on file [E1].")
    with Session(engine) as s:
        adj, ann = users.require_user(s, "adj"), users.require_user(s, "ann")
        with pytest.raises(corrections.CorrectionError, match="only adjudicators and admins"):
            corrections.decide(s, correction_id=first, user=ann, accept=True)
        with pytest.raises(corrections.CorrectionError, match="say why"):
            corrections.decide(s, correction_id=second, user=adj, accept=False)
        campaign = camp.get_campaign(s, "c")
        assert [r["correction"].id for r in corrections.queue(s, campaign)] == [first, second]
        corrections.decide(s, correction_id=first, user=adj, accept=True)
        corrections.decide(s, correction_id=second, user=adj, accept=False, reason="same text")
        with pytest.raises(corrections.CorrectionError, match="already accepted"):
            corrections.decide(s, correction_id=first, user=adj, accept=False, reason="no")
        assert corrections.queue(s, campaign) == []
        assert [r["correction"].id for r in corrections.accepted(s, campaign)] == [first]
        actions = list(s.execute(select(AuditEvent.action).where(
            AuditEvent.action.like("correction_%")).order_by(AuditEvent.id)).scalars())
    assert actions == ["correction_proposed", "correction_proposed", "correction_accepted",
                       "correction_rejected"]


def test_the_editor_starts_from_the_rationale_with_each_steps_citations_inline():
    steps = [{"step": "MCI is recorded.", "evidence": ["E2"]},
             {"step": "Complaints came first [E3].", "evidence": ["E3"]}]
    rationale = Rationale(run_id=1, patient_id=1, format="stepwise", steps=steps,
                          cited_evidence_ids=["E2", "E3"], text="")
    assert correct.editable(rationale) == "MCI is recorded. [E2]\nComplaints came first [E3]."
    payload = correct._payload(rationale, "1. MCI is recorded. [E2]\n\n2) Complaints [E3].")
    assert payload["rationale"] == [{"step": "MCI is recorded. [E2]", "evidence": ["E2"]},
                                    {"step": "Complaints [E3].", "evidence": ["E3"]}]


def test_in_a_campaign_that_rates_corrections_an_accepted_one_is_queued_for_another_rater(
        engine):
    with Session(engine) as s:
        for name, role in (("ann", "annotator"), ("bob", "annotator"), ("adj", "adjudicator")):
            users.create_user(s, username=name, password=PASSWORD, role=role)
    run_id = seed_rationales(engine, n=2, gold=0)
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="rated", run_ids=[run_id],
                                        annotators=["ann", "bob"], k=1, claim_review=False,
                                        rate_corrections=True)
        ann, bob = users.require_user(s, "ann"), users.require_user(s, "bob")
        mine = camp.next_assignment(s, campaign, ann)
        correction, _ = correct.propose(s, assignment_id=mine.id, user=ann,
                                        edited="The genotype is recorded [E1].")
        corrected_id = correction.rationale_id
        assert not any(a.rationale_id == corrected_id for a in s.execute(
            select(camp.Assignment)).scalars())  # proposed: nobody rates it yet
        corrections.decide(s, correction_id=correction.id, user=users.require_user(s, "adj"),
                           accept=True)
        queued = s.execute(select(camp.Assignment).where(
            camp.Assignment.rationale_id == corrected_id)).scalars().all()
        assert [a.user_id for a in queued] == [bob.id]  # the proposer is not asked
        while (item := camp.next_assignment(s, campaign, bob)) is not None \
                and item.rationale_id != corrected_id:
            camp.submit(s, assignment_id=item.id, user=bob, accuracy=4, faithfulness=4,
                        flags=[])
        assert item is not None and item.rationale_id == corrected_id


def test_the_rationale_unchanged_is_not_a_correction(item):
    engine, assignment_id = item
    with Session(engine) as s:
        source = s.get(Rationale, s.get(camp.Assignment, assignment_id).rationale_id)
        unchanged = "  " + correct.editable(source).replace(" ", "  ") + "\n"
    correction_id, checked = _propose(engine, unchanged)
    assert (correction_id, checked.problem) == (
        None, "the text is the rationale as it was: change what is wrong first")


def test_who_proposed_a_correction_cannot_decide_it(engine):
    with Session(engine) as s:
        users.create_user(s, username="adj", password=PASSWORD, role="adjudicator")
    run_id = seed_rationales(engine, n=2, gold=0)
    with Session(engine) as s:
        adj = users.require_user(s, "adj")
        campaign = camp.create_campaign(s, name="self", run_ids=[run_id], annotators=["adj"],
                                        k=1, claim_review=False)
        mine = camp.next_assignment(s, campaign, adj)
        correction, _ = correct.propose(s, assignment_id=mine.id, user=adj,
                                        edited="The genotype is recorded [E1].")
        with pytest.raises(corrections.CorrectionError,
                           match="decided by someone other than who proposed it"):
            corrections.decide(s, correction_id=correction.id, user=adj, accept=True)
        assert s.get(Correction, correction.id).status == "proposed"
