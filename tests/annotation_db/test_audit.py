"""The audit trail: one event per audited action, stored with the action, never changed
(SQLite and PostgreSQL: the ``engine`` fixture runs both)."""

import pytest
from sqlalchemy import delete, text, update
from sqlmodel import Session

from annotation_db import adjudication, audit, campaigns, jobs, users
from annotation_db import export as export_crud
from annotation_db.models import AuditEvent
from tests.helpers import PASSWORD, seed_rationales


def actions(session) -> list[tuple]:
    return [(e.action, e.actor, e.address, e.target)
            for e in reversed(audit.list_events(session, limit=1000))]


def test_every_audited_action_writes_exactly_one_event(engine):
    run_id = seed_rationales(engine, n=4, gold=0)
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin",
                                  actor="ops")
        users.create_user(s, username="ann", password=PASSWORD, role="annotator", actor="ops")
        users.set_active(s, "ann", False, actor="root", address="10.0.0.1")
        users.set_active(s, "ann", True, actor="root")
        users.reset_password(s, "ann", "another password", actor="root")
        users.unlock(s, "ann", actor="root")
        campaign = campaigns.create_campaign(s, name="pilot", run_ids=[run_id],
                                             annotators=["ann"], k=1, actor="root",
                                             address="10.0.0.2", claim_review=False)
        rationale_id = campaigns.next_assignment(s, campaign,
                                                users.get_user(s, "ann")).rationale_id
        adjudication.decide(s, campaign=campaign, rationale_id=rationale_id, adjudicator=admin,
                            decision="approve", accuracy=5, faithfulness=5, flags=[],
                            reason="matches the record", address="10.0.0.3")
        job = jobs.enqueue(s, kind="sft", config={}, command="rationale-audit train sft",
                           user=admin, address="10.0.0.4")
        jobs.cancel(s, job.id, admin)
        resumed = jobs.resume(s, job.id, admin)
        assert actions(s) == [
            ("user_created", "ops", "cli", "root"), ("user_created", "ops", "cli", "ann"),
            ("user_disabled", "root", "10.0.0.1", "ann"), ("user_enabled", "root", "cli", "ann"),
            ("password_reset", "root", "cli", "ann"), ("user_unlocked", "root", "cli", "ann"),
            ("campaign_created", "root", "10.0.0.2", "pilot"),
            ("adjudicated", "root", "10.0.0.3", f"rationale {rationale_id}"),
            ("job_launched", "root", "10.0.0.4", f"job {job.id}"),
            ("job_cancelled", "root", None, f"job {job.id}"),
            ("job_resumed", "root", None, f"job {resumed.id}")]
        events = audit.list_events(s, limit=1000)
        assert all("password" not in str(e.detail).lower() for e in events)
        assert audit.list_events(s, user="ops", limit=10)[0].target == "ann"


def _annotator_in_a_campaign(engine, s):
    run_id = seed_rationales(engine, n=4, gold=0)
    users.create_user(s, username="ann", password=PASSWORD, role="annotator")
    campaign = campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann"],
                                         k=1, claim_review=False)
    return campaign, users.get_user(s, "ann")


def test_a_rating_its_revision_and_a_skip_each_write_one_event(engine):
    with Session(engine) as s:
        campaign, ann = _annotator_in_a_campaign(engine, s)
        rated = campaigns.next_assignment(s, campaign, ann)
        rated_id, rated_item = rated.id, rated.rationale_id
        for accuracy, comment in ((4, "looks fine to me"), (2, "missed the A1c value")):
            campaigns.submit(s, assignment_id=rated_id, user=ann, accuracy=accuracy,
                             faithfulness=5, flags=[], comment=comment, address="10.0.0.5")
        skipped = campaigns.next_assignment(s, campaign, ann)
        skipped_id, skipped_item = skipped.id, skipped.rationale_id
        campaigns.skip(s, assignment_id=skipped_id, user=ann, reason="record is unreadable",
                       address="10.0.0.6")
        assert actions(s)[2:] == [
            ("rating_submitted", "ann", "10.0.0.5", f"assignment {rated_id}"),
            ("rating_revised", "ann", "10.0.0.5", f"assignment {rated_id}"),
            ("item_skipped", "ann", "10.0.0.6", f"assignment {skipped_id}")]
        details = [e.detail for e in reversed(audit.list_events(s, limit=3))]
        assert details == [{"campaign": campaign.id, "item": rated_item, "revision": 1},
                           {"campaign": campaign.id, "item": rated_item, "revision": 2},
                           {"campaign": campaign.id, "item": skipped_item}]
        assert "A1c" not in str(details) and "unreadable" not in str(details), "no free text"


def test_a_rating_or_skip_that_fails_leaves_no_event(engine):
    from sqlalchemy import event, func, select

    from annotation_db.models import Annotation

    written: set[str] = set()  # what the transaction about to commit has written

    def note_writes(session, _context):
        written.update(type(row).__name__ for row in session.new | session.dirty)

    def broken_commit(_session):  # the commit of a rating or a skip fails, any other succeeds
        failing = written & {"Annotation", "Assignment"}
        written.clear()
        if failing:
            raise RuntimeError("the database went away at commit")

    with Session(engine) as s:
        campaign, ann = _annotator_in_a_campaign(engine, s)
        first = campaigns.next_assignment(s, campaign, ann).id
        campaigns.submit(s, assignment_id=first, user=ann, accuracy=4, faithfulness=4, flags=[])
        with pytest.raises(campaigns.CampaignError, match="whole number from 1 to 5"):
            campaigns.submit(s, assignment_id=first, user=ann, accuracy=7, faithfulness=4,
                             flags=[])
        with pytest.raises(campaigns.CampaignError, match="submitted and cannot be skipped"):
            campaigns.skip(s, assignment_id=first, user=ann, reason="changed my mind")
        second = campaigns.next_assignment(s, campaign, ann).id
        event.listen(s, "after_flush", note_writes)
        event.listen(s, "before_commit", broken_commit)  # the write fails after the event
        for write in (lambda: campaigns.submit(s, assignment_id=second, user=ann, accuracy=3,
                                               faithfulness=3, flags=[]),
                      lambda: campaigns.skip(s, assignment_id=second, user=ann, reason="x")):
            with pytest.raises(RuntimeError, match="went away"):
                write()
            s.rollback()
        event.remove(s, "before_commit", broken_commit)
        event.remove(s, "after_flush", note_writes)
        assert [a[0] for a in actions(s)] == ["user_created", "campaign_created",
                                              "rating_submitted"]
        assert s.execute(select(func.count()).select_from(Annotation)).scalar() == 1


def test_an_export_and_its_deletion_are_audited(tmp_path):
    from tests.helpers import audited_version

    engine = audited_version(f"sqlite:///{tmp_path / 'e.sqlite'}", tmp_path / "exports")
    with Session(engine) as s:
        admin = users.create_user(s, username="root", password=PASSWORD, role="admin")
        export_crud.delete(s, name="t", admin=admin, address="cli")
        created = audit.list_events(s, action="export_created")
        deleted = audit.list_events(s, action="export_deleted")
        assert [e.target for e in created] == ["t"] and created[0].detail["content_sha256"]
        assert [(e.actor, e.target) for e in deleted] == [("root", "t")]
    engine.dispose()


def test_a_failed_action_leaves_no_event(engine):
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        with pytest.raises(users.AccountError):
            users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        with pytest.raises(campaigns.CampaignError):
            campaigns.create_campaign(s, name="x", run_ids=[999], annotators=["ann"],
                                      claim_review=False)
        s.rollback()
        assert [a[0] for a in actions(s)] == ["user_created"]


def test_the_trail_is_append_only(engine):
    with Session(engine) as s:
        audit.record(s, "login", actor="ann", address="10.0.0.1")
        for statement in (update(AuditEvent).values(actor="eve"), delete(AuditEvent)):
            with pytest.raises(Exception, match="append-only"):
                s.execute(statement)
            s.rollback()
        assert s.execute(text("SELECT actor FROM audit_event")).scalars().all() == ["ann"]


def test_the_migration_goes_down_and_up_on_a_database_with_work_in_it(engine):
    from annotation_db import migrate

    run_id = seed_rationales(engine, n=3, gold=0)
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann"], k=1,
                                  claim_review=False)
    migrate.downgrade(engine, "0004_jobs_researcher")
    assert migrate.current_revision(engine) == "0004_jobs_researcher"
    migrate.upgrade(engine)
    with Session(engine) as s:
        assert users.get_user(s, "ann") is not None and audit.list_events(s) == []
