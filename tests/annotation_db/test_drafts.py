"""Drafts: a rater's unsent form kept on the server, on SQLite and PostgreSQL."""

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from annotation_db import adjudication, drafts, export, users
from annotation_db import campaigns as camp
from annotation_db.models import (
    COMMENT_MAX_CHARS,
    Annotation,
    Assignment,
    AuditEvent,
    Draft,
    User,
)
from annotation_db.ratings import load_campaign_ratings
from tests.helpers import PASSWORD, seed_rationales


@pytest.fixture
def opened(engine):
    """ann's and bob's first open items of a k = 2 campaign: (engine, ann's id, bob's id)."""
    with Session(engine) as s:
        for name in ("ann", "bob"):
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
    run_id = seed_rationales(engine, n=4, gold=0)
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id],
                                        annotators=["ann", "bob"], k=2, claim_review=False)
        ann_item, bob_item = (camp.next_assignment(s, campaign, users.require_user(s, n)).id
                              for n in ("ann", "bob"))
    return engine, ann_item, bob_item


def _drafts(engine) -> list[tuple]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(select(Draft.assignment_id, Draft.accuracy,
                                                   Draft.faithfulness, Draft.flags,
                                                   Draft.comment)).all()]


def test_a_draft_is_kept_replaced_and_read_back_by_its_rater_only(opened):
    engine, item, bob_item = opened
    with Session(engine) as s:
        ann, bob = users.require_user(s, "ann"), users.require_user(s, "bob")
        drafts.save_draft(s, assignment_id=item, user=ann, accuracy=4, faithfulness=None,
                          flags=[], comment="")
        drafts.save_draft(s, assignment_id=item, user=ann, accuracy=2, faithfulness=5,
                          flags=["hallucinated_fact"], comment="E3 is not in the record")
        draft = drafts.own_draft(s, item, ann)
        assert (draft.accuracy, draft.faithfulness, draft.flags, draft.comment) == (
            2, 5, ["hallucinated_fact"], "E3 is not in the record")
        with pytest.raises(camp.NotYours):
            drafts.own_draft(s, item, bob)
        with pytest.raises(camp.NotYours):
            drafts.save_draft(s, assignment_id=item, user=bob, accuracy=1, faithfulness=1,
                              flags=[], comment="")
        assert drafts.own_draft(s, bob_item, bob) is None
    assert _drafts(engine) == [(item, 2, 5, ["hallucinated_fact"], "E3 is not in the record")]


def test_an_emptied_form_deletes_the_draft_with_an_audit_event(opened):
    engine, item, _ = opened
    with Session(engine) as s:
        ann = users.require_user(s, "ann")
        empty = dict(assignment_id=item, user=ann, accuracy=None, faithfulness=None, flags=[],
                     comment="")
        assert drafts.save_draft(s, **empty) is None  # nothing saved, nothing discarded
        drafts.save_draft(s, assignment_id=item, user=ann, accuracy=3, faithfulness=None,
                          flags=[], comment="", address="10.0.0.7")
        assert drafts.save_draft(s, **empty, address="10.0.0.7") is None
        events = s.execute(select(AuditEvent).where(AuditEvent.action == "draft_discarded")
                           ).scalars().all()
    assert _drafts(engine) == []
    assert [(e.actor, e.address, e.target) for e in events] == [
        ("ann", "10.0.0.7", f"assignment {item}")]


def test_submitting_deletes_the_draft_and_a_refused_submit_keeps_it(opened):
    engine, item, _ = opened
    with Session(engine) as s:
        ann = users.require_user(s, "ann")
        drafts.save_draft(s, assignment_id=item, user=ann, accuracy=4, faithfulness=4,
                          flags=[], comment="nearly done")
        with pytest.raises(camp.CampaignError, match="the comment is 5,001 characters"):
            camp.submit(s, assignment_id=item, user=ann, accuracy=4, faithfulness=4, flags=[],
                        comment="x" * (COMMENT_MAX_CHARS + 1))
    assert len(_drafts(engine)) == 1, "a refused submit loses nothing"
    with Session(engine) as s:
        camp.submit(s, assignment_id=item, user=users.require_user(s, "ann"), accuracy=4,
                    faithfulness=4, flags=[], comment="done")
    assert _drafts(engine) == []


def test_a_save_from_a_form_opened_before_the_submission_is_dropped_a_later_one_kept(opened):
    engine, item, _ = opened
    shown = dt.datetime.now(dt.UTC)
    with Session(engine) as s:
        ann = users.require_user(s, "ann")
        camp.submit(s, assignment_id=item, user=ann, accuracy=4, faithfulness=4, flags=[])
        with pytest.raises(drafts.StaleDraft) as stale:
            drafts.save_draft(s, assignment_id=item, user=ann, accuracy=4, faithfulness=4,
                              flags=[], comment="on its way when Submit was pressed",
                              form_opened_at=shown)
        assert str(stale.value) == ("this item was submitted after the form was opened; the "
                                    "submitted rating stands")
        assert _drafts(engine) == []
        # Revising: the form is opened again after the submission, so its draft is kept.
        drafts.save_draft(s, assignment_id=item, user=ann, accuracy=2, faithfulness=4,
                          flags=[], comment="on reflection",
                          form_opened_at=dt.datetime.now(dt.UTC))
        revisions = s.execute(select(func.count()).select_from(Annotation)).scalar()
    assert _drafts(engine) == [(item, 2, 4, [], "on reflection")]
    assert revisions == 1, "a draft is not a revision"


@pytest.mark.parametrize("values, message", [
    (dict(accuracy=6), "accuracy must be a whole number from 1 to 5, or not yet given"),
    (dict(flags=["made_up"]), "unknown flags: made_up"),
    (dict(comment="x" * (COMMENT_MAX_CHARS + 1)),
     "the comment is 5,001 characters long; the limit is 5,000 characters"),
    (dict(comment="fine\x00"),
     "the comment contains a NUL character (\\x00), which cannot be stored; remove it"),
], ids=["score", "flag", "over-long", "nul-byte"])
def test_a_draft_that_cannot_be_stored_whole_is_refused_and_the_last_one_kept(opened, values,
                                                                             message):
    engine, item, _ = opened
    with Session(engine) as s:
        ann = users.require_user(s, "ann")
        drafts.save_draft(s, assignment_id=item, user=ann, accuracy=3, faithfulness=None,
                          flags=[], comment="kept")
        with pytest.raises(drafts.DraftError) as refused:
            drafts.save_draft(s, assignment_id=item, user=ann, **{
                "accuracy": 3, "faithfulness": None, "flags": [], "comment": "", **values})
        assert str(refused.value) == message
    assert _drafts(engine) == [(item, 3, None, [], "kept")]


def test_the_database_refuses_an_out_of_range_draft_or_a_second_one_per_assignment(opened):
    engine, item, _ = opened
    with Session(engine) as s:
        s.add(Draft(assignment_id=item, accuracy=7, flags=[], comment=""))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        s.add(Draft(assignment_id=item, accuracy=3, flags=[], comment=""))
        s.commit()
        s.add(Draft(assignment_id=item, accuracy=4, flags=[], comment=""))
        with pytest.raises(IntegrityError):
            s.commit()


def test_drafts_never_count_in_agreement_exports_or_adjudication(opened):
    engine, _, bob_item = opened
    with Session(engine) as s:
        campaign = camp.get_campaign(s, "p")
        bob = users.require_user(s, "bob")
        camp.submit(s, assignment_id=bob_item, user=bob, accuracy=5, faithfulness=5, flags=[])
        # every other assignment holds only a draft, and ann's disagree with bob's rating
        for assignment in s.execute(select(Assignment).where(Assignment.status == "assigned")
                                    ).scalars().all():
            drafts.save_draft(s, assignment_id=assignment.id,
                              user=s.get(User, assignment.user_id), accuracy=1,
                              faithfulness=1, flags=["hallucinated_fact"], comment="draft")
        ratings, _, _ = load_campaign_ratings(s, "p")
        assert {(r.rater, r.item, r.dimension, r.score) for r in ratings
                if r.dimension in ("accuracy", "faithfulness")} == {
            ("bob", str(s.get(Assignment, bob_item).rationale_id), d, 5.0)
            for d in ("accuracy", "faithfulness")}
        assert adjudication.queue(s, campaign) == []
        assert [len(v) for v in adjudication.latest_ratings(s, campaign.id).values()] == [1]
        policy = export.ApprovalPolicy(campaigns=["p"], min_ratings=1, min_gold_accuracy=None)
        approved = [d.rationale_id for d in export.evaluate(s, policy) if d.approved]
        assert approved == [s.get(Assignment, bob_item).rationale_id]
    assert len(_drafts(engine)) == 7  # 4 items × 2 raters, less bob's rated one
