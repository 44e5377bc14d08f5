"""Accounts, campaigns and assignment, on SQLite and PostgreSQL."""

import datetime as dt
import threading
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import audit, users
from annotation_db import campaigns as camp
from annotation_db.models import (
    COMMENT_MAX_CHARS,
    SKIP_REASON_MAX_CHARS,
    Annotation,
    Assignment,
    User,
)
from tests.helpers import PASSWORD, seed_rationales


@pytest.fixture
def world(engine):
    with Session(engine) as s:
        for name in ("ann", "bob", "cat", "dan"):
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
    run_id = seed_rationales(engine)
    return engine, run_id


def test_passwords_are_hashed_and_checked(engine):
    with Session(engine) as s:
        user = users.create_user(s, username="dr.rao", password=PASSWORD, role="admin")
        assert user.password_hash.startswith("$argon2") and PASSWORD not in user.password_hash
        assert users.authenticate(s, "dr.rao", PASSWORD).id == user.id
        assert users.authenticate(s, "dr.rao", "wrong password") is None
        assert users.authenticate(s, "nobody", PASSWORD) is None
        users.set_active(s, "dr.rao", False)
        assert users.authenticate(s, "dr.rao", PASSWORD) is None
        with pytest.raises(users.AccountError, match="already exists"):
            users.create_user(s, username="dr.rao", password=PASSWORD, role="admin")
        with pytest.raises(users.AccountError, match="at least 8 characters"):
            users.create_user(s, username="x2", password="short", role="admin")


def test_assignment_is_balanced_calibrated_and_never_repeats(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="pilot", run_ids=[run_id],
                                        annotators=["ann", "bob", "cat", "dan"], k=2,
                                        calibration=3, gold_share=0.25, seed=4, claim_review=False)
        rows = s.execute(select(Assignment.user_id, Assignment.rationale_id, Assignment.position)
                         .where(Assignment.campaign_id == campaign.id)).all()
    per_item = Counter(r for _, r, _ in rows)
    per_user = Counter(u for u, _, _ in rows)
    assert len(set(per_item)) == 12 + 3  # 12 originals + 3 gold (share 0.25 of 12)
    assert sorted(per_item.values()).count(4) == 3  # the calibration batch: everyone
    assert set(per_item.values()) == {2, 4}
    assert max(per_user.values()) - min(per_user.values()) <= 1
    assert len(rows) == len(set((u, r) for u, r, _ in rows)), "nobody rates an item twice"
    orders = {}
    for user, rationale, _ in sorted(rows, key=lambda r: r[2]):
        orders.setdefault(user, []).append(rationale)
    assert len({tuple(o) for o in orders.values()}) > 1, "each annotator has their own order"


def test_submit_revise_and_ownership(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id],
                                        annotators=["ann", "bob"], k=2, claim_review=False)
        ann, bob = users.require_user(s, "ann"), users.require_user(s, "bob")
        first = camp.next_assignment(s, campaign, ann)
        assert first.opened_at is not None
        camp.submit(s, assignment_id=first.id, user=ann, accuracy=4, faithfulness=5, flags=[])
        camp.submit(s, assignment_id=first.id, user=ann, accuracy=2, faithfulness=5,
                    flags=["hallucinated_fact"], comment="on reflection")
        revisions = s.execute(select(Annotation.revision, Annotation.accuracy).where(
            Annotation.assignment_id == first.id).order_by(Annotation.revision)).all()
        assert [tuple(r) for r in revisions] == [(1, 4), (2, 2)]
        with pytest.raises(camp.NotYours):
            camp.submit(s, assignment_id=first.id, user=bob, accuracy=1, faithfulness=1,
                        flags=[])
        with pytest.raises(camp.CampaignError, match="from 1 to 5"):
            camp.submit(s, assignment_id=first.id, user=ann, accuracy=6, faithfulness=1,
                        flags=[])
        assert camp.next_assignment(s, campaign, ann).id != first.id
        assert camp.progress(s, campaign.id, ann.id).done == 1


def test_skip_and_reclaim_hand_the_item_on(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id],
                                        annotators=["ann", "bob", "cat"], k=1, seed=1,
                                        claim_review=False)
        ann = users.require_user(s, "ann")
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="outside my expertise")
        holders = s.execute(select(Assignment.user_id, Assignment.status).where(
            Assignment.rationale_id == item.rationale_id,
            Assignment.campaign_id == campaign.id)).all()
        assert sorted(st for _, st in holders) == ["assigned", "skipped"]
        opened = camp.next_assignment(s, campaign, ann)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert camp.reclaim_abandoned(s, campaign, now=later) >= 1
        s.refresh(opened)
        assert opened.status == "reclaimed"
        new_holder = s.execute(select(Assignment).where(
            Assignment.rationale_id == opened.rationale_id, Assignment.status == "assigned",
            Assignment.campaign_id == campaign.id)).scalars().one()
        assert new_holder.user_id != ann.id


def test_twenty_concurrent_annotators_lose_and_duplicate_nothing(engine):
    with Session(engine) as s:
        names = [f"rater{i:02d}" for i in range(20)]
        for name in names:
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
    run_id = seed_rationales(engine, n=30, gold=0)
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="load", run_ids=[run_id], annotators=names, k=4,
                                        claim_review=False)
        campaign_id = campaign.id
        expected = s.execute(select(func.count()).select_from(Assignment)).scalar()
    errors = []

    def work(name):
        try:
            with Session(engine) as s:
                me = users.require_user(s, name)
                c = s.get(type(campaign), campaign_id)
                while (a := camp.next_assignment(s, c, me)) is not None:
                    camp.submit(s, assignment_id=a.id, user=me, accuracy=3, faithfulness=4,
                                flags=[])
                    camp.submit(s, assignment_id=a.id, user=me, accuracy=4, faithfulness=4,
                                flags=[])
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    with Session(engine) as s:
        annotations = s.execute(select(Annotation.assignment_id, Annotation.revision)).all()
        statuses = Counter(s.execute(select(Assignment.status)).scalars())
    assert statuses == {"submitted": expected}
    assert len(annotations) == 2 * expected == len(set(annotations))


def _opened_item(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann"], k=1,
                                        claim_review=False)
        return camp.next_assignment(s, campaign, users.require_user(s, "ann")).id


def _annotations(engine) -> int:
    with Session(engine) as s:
        return s.execute(select(func.count()).select_from(Annotation)).scalar()


@pytest.mark.parametrize("comment, message", [
    ("x" * (COMMENT_MAX_CHARS + 1),
     "the comment is 5,001 characters long; the limit is 5,000 characters"),
    ("fine\x00, apart from a NUL",
     "the comment contains a NUL character (\\x00), which cannot be stored; remove it"),
], ids=["over-long", "nul-byte"])
def test_a_comment_that_cannot_be_stored_whole_is_refused_and_nothing_is_saved(world, comment,
                                                                               message):
    engine, _ = world
    item = _opened_item(world)
    with Session(engine) as s:
        with pytest.raises(camp.CampaignError) as caught:
            camp.submit(s, assignment_id=item, user=users.require_user(s, "ann"), accuracy=4,
                        faithfulness=4, flags=[], comment=comment)
        assert str(caught.value) == message
        assert s.get(Assignment, item).status == "assigned"
    assert _annotations(engine) == 0


def test_a_comment_at_the_limit_is_stored_whole(world):
    engine, _ = world
    item = _opened_item(world)
    with Session(engine) as s:
        camp.submit(s, assignment_id=item, user=users.require_user(s, "ann"), accuracy=4,
                    faithfulness=4, flags=[], comment="é" * COMMENT_MAX_CHARS)
        stored = s.execute(select(Annotation.comment)).scalar()
    assert stored == "é" * COMMENT_MAX_CHARS


@pytest.mark.parametrize("reason, message", [
    ("y" * (SKIP_REASON_MAX_CHARS + 1),
     "the skip reason is 501 characters long; the limit is 500 characters"),
    ("not\x00mine",
     "the skip reason contains a NUL character (\\x00), which cannot be stored; remove it"),
], ids=["over-long", "nul-byte"])
def test_a_skip_reason_that_cannot_be_stored_whole_is_refused(world, reason, message):
    engine, _ = world
    item = _opened_item(world)
    with Session(engine) as s:
        with pytest.raises(camp.CampaignError) as caught:
            camp.skip(s, assignment_id=item, user=users.require_user(s, "ann"), reason=reason)
        assert str(caught.value) == message
    with Session(engine) as s:
        assert (s.get(Assignment, item).status, s.get(Assignment, item).skip_reason) == (
            "assigned", None)


def _statuses(s, campaign, rationale_id) -> dict[str, str]:
    return {s.get(User, user_id).username: status for user_id, status in s.execute(
        select(Assignment.user_id, Assignment.status).where(
            Assignment.campaign_id == campaign.id, Assignment.rationale_id == rationale_id))}


def _rate_the_rest(s, campaign, user) -> list[int]:
    """Rate every item left in ``user``'s queue; the items, in order."""
    rated = []
    while (item := camp.next_assignment(s, campaign, user)) is not None:
        camp.submit(s, assignment_id=item.id, user=user, accuracy=4, faithfulness=4, flags=[])
        rated.append(item.id)
    return rated


def test_a_skip_is_not_done(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"],
                                        k=2, claim_review=False)
        ann = users.require_user(s, "ann")
        before = camp.progress(s, campaign.id, ann.id)
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="outside my expertise")
        after = camp.progress(s, campaign.id, ann.id)
        assert (after.done, after.assigned, after.skipped) == (0, before.assigned - 1, 1)
        row = camp.status(s, campaign)["annotators"]["ann"]
        assert (row["done"], row["assigned"], row["skipped"]) == (0, before.assigned - 1, 1)


def test_a_skipped_item_nobody_else_can_rate_comes_back_once_and_reaches_k(world):
    """k = 2 with two annotators: only the one who skipped can give the second rating."""
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"],
                                        k=2, claim_review=False)
        ann, bob = users.require_user(s, "ann"), users.require_user(s, "bob")
        first = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=first.id, user=ann, reason="need the full notes")
        second = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=second.id, user=ann, reason="not now")
        _rate_the_rest(s, campaign, bob)
        rated = _rate_the_rest(s, campaign, ann)
        # both skipped items came back at the end of ann's queue, oldest skip first
        assert rated[-2:] == [first.id, second.id]
        assert _statuses(s, campaign, first.rationale_id) == {"ann": "submitted",
                                                             "bob": "submitted"}
        s.refresh(first)
        assert first.returned_at is not None and first.skip_reason == "need the full notes"
        assert camp.progress(s, campaign.id, ann.id).skipped == 0
        returned = audit.list_events(s, action="item_returned")
        assert [e.target for e in reversed(returned)] == [f"assignment {first.id}",
                                                          f"assignment {second.id}"]


def test_a_second_skip_of_a_returned_item_is_final(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"],
                                        k=2, claim_review=False)
        ann = users.require_user(s, "ann")
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="not my field")
        while (nxt := camp.next_assignment(s, campaign, ann)) is not None and nxt.id != item.id:
            camp.submit(s, assignment_id=nxt.id, user=ann, accuracy=3, faithfulness=3, flags=[])
        assert nxt is not None and nxt.id == item.id, "it came back"
        camp.skip(s, assignment_id=item.id, user=ann, reason="still not my field")
        assert camp.next_assignment(s, campaign, ann) is None
        assert s.get(Assignment, item.id).status == "skipped"


def test_a_skipped_item_someone_else_can_take_goes_to_them_not_back(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id],
                                        annotators=["ann", "bob", "cat"], k=2, seed=3,
                                        claim_review=False)
        ann = users.require_user(s, "ann")
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="conflict of interest")
        assert _rate_the_rest(s, campaign, ann)[-1:] != [item.id]
        statuses = _statuses(s, campaign, item.rationale_id)
        assert statuses["ann"] == "skipped" and sorted(statuses.values()).count("assigned") == 2


def test_a_skip_taken_back_reopens_the_item_and_withdraws_the_unopened_copy(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id],
                                        annotators=["ann", "bob", "cat"], k=1, seed=1,
                                        claim_review=False)
        ann = users.require_user(s, "ann")
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="oops")
        assert sorted(_statuses(s, campaign, item.rationale_id).values()) == ["assigned",
                                                                              "skipped"]
        camp.unskip(s, assignment_id=item.id, user=ann, address="10.0.0.7")
        assert _statuses(s, campaign, item.rationale_id) == {"ann": "assigned"}
        s.refresh(item)
        assert (item.skip_reason, item.completed_at) == (None, None)
        assert camp.next_assignment(s, campaign, ann).id == item.id, "back at its place"
        event = audit.list_events(s, action="skip_undone")[0]
        assert (event.actor, event.address, event.target, event.detail["withdrawn"]) == (
            "ann", "10.0.0.7", f"assignment {item.id}", 1)
        with pytest.raises(camp.CampaignError) as refused:
            camp.unskip(s, assignment_id=item.id, user=ann)
        assert str(refused.value) == "this item is assigned; only a skip can be taken back"
        with pytest.raises(camp.NotYours):
            camp.unskip(s, assignment_id=item.id, user=users.require_user(s, "bob"))


def test_a_skip_taken_back_leaves_a_copy_someone_opened_with_them(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"],
                                        k=1, seed=1, claim_review=False)
        ann, bob = users.require_user(s, "ann"), users.require_user(s, "bob")
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="oops")
        copy = s.execute(select(Assignment).where(Assignment.user_id == bob.id,
                                                  Assignment.rationale_id == item.rationale_id)
                         ).scalars().one()
        copy.opened_at = dt.datetime.now(dt.UTC)
        s.add(copy)
        s.commit()
        camp.unskip(s, assignment_id=item.id, user=ann)
        assert _statuses(s, campaign, item.rationale_id) == {"ann": "assigned",
                                                             "bob": "assigned"}


def test_previous_walks_back_in_rating_order_and_a_revision_is_appended(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"],
                                        k=2, claim_review=False)
        ann = users.require_user(s, "ann")
        assert camp.previous_submitted(s, campaign, ann) is None
        first = camp.next_assignment(s, campaign, ann)
        camp.submit(s, assignment_id=first.id, user=ann, accuracy=4, faithfulness=5,
                    flags=["missed_key_risk_factor"], comment="misses the statin")
        second = camp.next_assignment(s, campaign, ann)
        camp.submit(s, assignment_id=second.id, user=ann, accuracy=3, faithfulness=3, flags=[])
        open_item = camp.next_assignment(s, campaign, ann)
        assert camp.previous_submitted(s, campaign, ann, before=open_item.id).id == second.id
        assert camp.previous_submitted(s, campaign, ann, before=second.id).id == first.id
        assert camp.previous_submitted(s, campaign, ann, before=first.id) is None
        # revising the first item appends revision 2 and does not move it in the order
        camp.submit(s, assignment_id=first.id, user=ann, accuracy=2, faithfulness=5,
                    flags=["missed_key_risk_factor"], comment="misses the statin; wrong dose")
        assert camp.previous_submitted(s, campaign, ann).id == second.id
        latest = camp.latest_annotation(s, first.id)
        assert (latest.revision, latest.accuracy, latest.flags, latest.comment) == (
            2, 2, ["missed_key_risk_factor"], "misses the statin; wrong dose")
        revisions = s.execute(select(Annotation.revision, Annotation.accuracy,
                                     Annotation.comment).where(
            Annotation.assignment_id == first.id).order_by(Annotation.revision)).all()
        assert [tuple(r) for r in revisions] == [(1, 4, "misses the statin"),
                                                 (2, 2, "misses the statin; wrong dose")]
        assert camp.next_assignment(s, campaign, ann).id == open_item.id


def test_in_an_adaptive_campaign_a_returned_item_takes_a_free_slot(world):
    engine, run_id = world
    with Session(engine) as s:
        campaign = camp.create_campaign(s, name="p", run_ids=[run_id], annotators=["ann", "bob"],
                                        k=2, assignment="adaptive", max_ratings=2,
                                        claim_review=False)
        ann, bob = users.require_user(s, "ann"), users.require_user(s, "bob")
        item = camp.next_assignment(s, campaign, ann)
        camp.skip(s, assignment_id=item.id, user=ann, reason="not my field")
        _rate_the_rest(s, campaign, bob)
        assert _rate_the_rest(s, campaign, ann)[-1] == item.id
        slots = s.execute(select(Assignment.slot).where(
            Assignment.rationale_id == item.rationale_id, Assignment.campaign_id == campaign.id)
        ).scalars().all()
        assert sorted(slots) == [1, 2]
