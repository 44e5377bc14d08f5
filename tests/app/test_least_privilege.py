"""The audit trail against the app's own database role: on PostgreSQL, `db upgrade
--app-role` leaves the app a role that may append to and read `audit_event` but not
change it, and `db audit-check` says whether the running role could (exit 1) or not (0).

The PostgreSQL tests make an owner role, an app role and a database owned by the owner
on the server at ``TEST_DATABASE_URL``, and drop all three afterwards.
"""

import os
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlmodel import Session
from typer.testing import CliRunner

from annotation_db import audit, campaigns, migrate, users
from annotation_db.session import make_engine
from app.cli import app
from tests.helpers import PASSWORD, seed_rationales

runner = CliRunner()


def cli(url: str, *args: str):
    """`rationale-audit ARGS` with ``DATABASE_URL=url``."""
    return runner.invoke(app, list(args), env={"DATABASE_URL": url,
                                               "RATIONALE_AUDIT_APP_ROLE": None})


@pytest.fixture
def roles():
    """A database owned by a new owner role, a new app role, and both roles' URLs."""
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url:
        if os.environ.get("RATIONALE_AUDIT_REQUIRE_POSTGRES") == "1":
            pytest.fail("RATIONALE_AUDIT_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        pytest.skip("set TEST_DATABASE_URL to run the PostgreSQL tests")
    tag = uuid.uuid4().hex[:10]
    owner, app_role, database = f"ra_owner_{tag}", f"ra_app_{tag}", f"ra_lp_{tag}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for role in (owner, app_role):
            conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(text(f"CREATE DATABASE {database} OWNER {owner}"))

    def url(role):
        return make_url(admin_url).set(username=role, password=PASSWORD, database=database
                                       ).render_as_string(hide_password=False)
    try:
        yield SimpleNamespace(owner=owner, app=app_role, owner_url=url(owner),
                              app_url=url(app_role),
                              superuser_url=make_url(admin_url).set(database=database)
                              .render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            for role in (app_role, owner):
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@pytest.fixture
def least_privilege(roles):
    """The roles after `db upgrade --app-role APP` run as the owner."""
    result = cli(roles.owner_url, "db", "upgrade", "--app-role", roles.app)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(
        f"granted {roles.app} SELECT, INSERT, UPDATE, DELETE on ")
    return roles


@pytest.mark.postgres
def test_the_app_role_appends_and_reads_the_trail_but_cannot_change_it(least_privilege):
    engine = make_engine(least_privilege.app_url)
    try:
        with Session(engine) as s:
            audit.record(s, "login", actor="ann", address="10.0.0.1")
            assert [e.actor for e in audit.list_events(s)] == ["ann"]
        for statement, refusal in (
                ("DELETE FROM audit_event", "permission denied for table audit_event"),
                ("UPDATE audit_event SET actor = 'eve'", "permission denied for table audit_event"),
                ("TRUNCATE audit_event", "permission denied for table audit_event"),
                ("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only",
                 "must be owner of table audit_event"),
                ("ALTER TABLE audit_event DISABLE TRIGGER ALL", "must be owner of table"),
                ("DROP TRIGGER audit_event_append_only ON audit_event", "must be owner"),
                ("SELECT setval(pg_get_serial_sequence('audit_event', 'id'), 1000)",
                 "permission denied for sequence audit_event_id_seq")):
            with engine.begin() as conn, pytest.raises(ProgrammingError, match=refusal):
                conn.execute(text(statement))
        with Session(engine) as s:
            assert [e.actor for e in audit.list_events(s)] == ["ann"]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_apps_own_work_runs_as_the_app_role(least_privilege):
    engine = make_engine(least_privilege.app_url)
    try:
        run_id = seed_rationales(engine, n=4, gold=0)  # a cohort: COPY, LOCK, setval
        with Session(engine) as s:
            users.create_user(s, username="ann", password=PASSWORD, role="annotator")
            campaign = campaigns.create_campaign(s, name="pilot", run_ids=[run_id],
                                                 annotators=["ann"], k=1, actor="root",
                                                 claim_review=False)
            ann = users.get_user(s, "ann")
            item = campaigns.next_assignment(s, campaign, ann).id
            for accuracy in (4, 3):
                campaigns.submit(s, assignment_id=item, user=ann, accuracy=accuracy,
                                 faithfulness=5, flags=[], address="10.0.0.5")
            campaigns.skip(s, assignment_id=campaigns.next_assignment(s, campaign, ann).id,
                           user=ann, reason="unreadable", address="10.0.0.5")
            assert [e.action for e in reversed(audit.list_events(s))] == [
                "user_created", "campaign_created", "rating_submitted", "rating_revised",
                "item_skipped"]
        assert migrate.current_revision(engine) == migrate.head_revision(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_audit_check_fails_as_the_owner_and_passes_as_the_app_role(least_privilege):
    as_owner = cli(least_privilege.owner_url, "db", "audit-check")
    assert as_owner.exit_code == 1, as_owner.output
    assert f"NOT protected from role {least_privilege.owner}:" in as_owner.output
    assert (f"- role {least_privilege.owner} owns audit_event: it can ALTER TABLE audit_event "
            "DISABLE TRIGGER") in as_owner.output
    assert "holds UPDATE, DELETE, TRUNCATE on audit_event" in as_owner.output
    as_app = cli(least_privilege.app_url, "db", "audit-check")
    assert as_app.exit_code == 0, as_app.output
    assert f"the audit trail is protected from role {least_privilege.app}:" in as_app.output


@pytest.mark.postgres
def test_audit_check_fails_in_the_default_setup_and_on_a_disabled_trigger(roles):
    # the default setup: one role runs the migrations and the app
    assert cli(roles.owner_url, "db", "upgrade").exit_code == 0
    assert cli(roles.owner_url, "db", "audit-check").exit_code == 1
    assert cli(roles.app_url, "db", "audit-check").exit_code == 1, "no grants, no check"
    superuser = cli(roles.superuser_url, "db", "audit-check")
    assert superuser.exit_code == 1 and "is a superuser" in superuser.output
    assert cli(roles.owner_url, "db", "upgrade", "--app-role", roles.app).exit_code == 0
    owner = create_engine(roles.owner_url)
    with owner.begin() as conn:
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
    owner.dispose()
    disabled = cli(roles.app_url, "db", "audit-check")
    assert disabled.exit_code == 1
    assert "- trigger audit_event_append_only on audit_event is disabled" in disabled.output


@pytest.mark.postgres
def test_upgrade_by_a_role_without_the_rights_says_so_in_one_line_and_goes_on(least_privilege):
    result = cli(least_privilege.app_url, "db", "upgrade", "--app-role", least_privilege.app)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"role {least_privilege.app} does not own the tables, so {least_privilege.app} was "
        f"granted nothing; run `rationale-audit db upgrade --app-role {least_privilege.app}` "
        "as the owner")
    assert cli(least_privilege.app_url, "db", "audit-check").exit_code == 0


@pytest.mark.postgres
def test_an_app_role_that_cannot_be_restricted_is_refused_before_anything_changes(roles):
    for app_role, refusal in (
            ("ra_nobody", "--app-role ra_nobody: no such PostgreSQL role"),
            (roles.owner, f"--app-role {roles.owner} is {roles.owner}, the tables' owner")):
        result = cli(roles.owner_url, "db", "upgrade", "--app-role", app_role)
        assert result.exit_code == 1
        assert result.stderr.strip().startswith(f"Error: {refusal}")
        assert len(result.stderr.strip().splitlines()) == 1
    engine = make_engine(roles.owner_url)
    assert migrate.current_revision(engine) is None
    engine.dispose()


def test_on_sqlite_audit_check_says_the_files_permissions_are_the_protection(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    upgraded = cli(url, "db", "upgrade", "--app-role", "audit_app")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.splitlines()[-1] == (
        "--app-role audit_app ignored: SQLite has no roles; the database file's permissions "
        "protect the audit trail")
    check = cli(url, "db", "audit-check")
    assert check.exit_code == 1
    assert "any process that can write" in check.output
    assert "the file's permissions are the protection" in check.output
