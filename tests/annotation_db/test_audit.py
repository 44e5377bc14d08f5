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
                                             address="10.0.0.2")
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
        with pytest.raises(users.UserError):
            users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        with pytest.raises(campaigns.CampaignError):
            campaigns.create_campaign(s, name="x", run_ids=[999], annotators=["ann"])
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
        campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann"], k=1)
    migrate.downgrade(engine, "0004_jobs_researcher")
    assert migrate.current_revision(engine) == "0004_jobs_researcher"
    migrate.upgrade(engine)
    with Session(engine) as s:
        assert users.get_user(s, "ann") is not None and audit.list_events(s) == []
