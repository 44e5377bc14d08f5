"""Least privilege on PostgreSQL: the app's role appends to the audit trail and reads
it, and cannot change it.

    rationale-audit db upgrade --app-role audit_app   # as the tables' owner
    rationale-audit db audit-check                     # as the app: exit 0 when protected

The append-only triggers on ``audit_event`` refuse UPDATE, DELETE and TRUNCATE, but the
table's owner (and a superuser) can ``ALTER TABLE audit_event DISABLE TRIGGER`` and then
delete rows. So the tables belong to an owner role that only migrations use, and the
app connects as another role: SELECT, INSERT, UPDATE, DELETE on the tables, USAGE,
SELECT, UPDATE on their sequences (USAGE, SELECT on the audit trail's), SELECT on
``alembic_version``, and only SELECT, INSERT on ``audit_event``. :func:`grant_app_role`
grants that (``db upgrade --app-role``) and :func:`audit_protection` says whether the
running role could alter the trail (``db audit-check``). SQLite has no roles: any
process that can write the file can drop the triggers, so the file's permissions are
the protection.
"""

import os
import stat
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ProgrammingError

from annotation_db.audit import AuditError

TRIGGERS = ("audit_event_append_only", "audit_event_no_truncate")  # migration 0005
TRAIL_VERBS = ("UPDATE", "DELETE", "TRUNCATE")
_INSUFFICIENT_PRIVILEGE = "42501"


class PrivilegeError(AuditError):
    """An app role that cannot be given least privilege; the message is one line."""


@dataclass
class Protection:
    """Whether the running role could alter the audit trail, and why."""

    role: str
    problems: list[str] = field(default_factory=list)

    @property
    def protected(self) -> bool:
        return not self.problems


def _is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def check_app_role(engine: Engine, app_role: str) -> None:
    """Refuse an app role that least privilege cannot apply to: one that does not exist,
    a superuser, or the tables' owner (the running role, before migrations create them)
    or a member of it. Nothing to check on SQLite."""
    if not _is_postgres(engine):
        return
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT r.rolsuper, pg_has_role(r.oid, o.owner, 'MEMBER'), o.owner::regrole::text "
            "FROM pg_roles r, (SELECT coalesce((SELECT relowner FROM pg_class "
            "WHERE oid = to_regclass('audit_event')), (SELECT oid FROM pg_roles "
            "WHERE rolname = current_user)) AS owner) o "
            "WHERE r.rolname = :role"), {"role": app_role}).first()
    if row is None:
        raise PrivilegeError(f"--app-role {app_role}: no such PostgreSQL role; create it "
                             f"first (CREATE ROLE {app_role} LOGIN PASSWORD '...')")
    superuser, member, owner = row
    if superuser:
        raise PrivilegeError(f"--app-role {app_role} is a superuser, which bypasses every "
                             "privilege; the app needs a role without SUPERUSER")
    if member:
        raise PrivilegeError(f"--app-role {app_role} is {owner}, the tables' owner, or a "
                             "member of it; the app needs another role")


def grant_app_role(engine: Engine, app_role: str) -> str:
    """Give ``app_role`` the usual DML on every table, the use of the sequences and only
    SELECT, INSERT on ``audit_event`` (UPDATE, DELETE, TRUNCATE revoked), in one
    transaction. Returns one line: what was granted, or why nothing was (SQLite; a
    running role that does not own the tables)."""
    if not _is_postgres(engine):
        return (f"--app-role {app_role} ignored: SQLite has no roles; the database file's "
                "permissions protect the audit trail")
    check_app_role(engine, app_role)
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
            " OR pg_has_role(current_user, c.relowner, 'USAGE') "
            "FROM pg_class c WHERE c.oid = to_regclass('audit_event')")).first()
    if row is None:
        return f"audit_event does not exist at this revision; {app_role} was granted nothing"
    me, allowed = row
    refused = (f"role {me} does not own the tables, so {app_role} was granted nothing; run "
               f"`rationale-audit db upgrade --app-role {app_role}` as the owner")
    if not allowed:
        return refused
    try:
        with engine.begin() as conn:
            tables = _grant(conn, engine.dialect.identifier_preparer.quote(app_role))
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        return refused
    return (f"granted {app_role} SELECT, INSERT, UPDATE, DELETE on {tables} tables, "
            "SELECT on alembic_version and only SELECT, INSERT on audit_event "
            "(UPDATE, DELETE, TRUNCATE revoked)")


def _grant(conn: Connection, role: str) -> int:
    """The grants and revokes (``role`` already quoted); returns how many tables."""
    schema = conn.dialect.identifier_preparer.quote(
        conn.execute(text("SELECT current_schema()")).scalar())
    audit_ids = conn.execute(text("SELECT pg_get_serial_sequence('audit_event', 'id')")).scalar()
    for statement in (
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        # UPDATE: storing a cohort moves the patient id sequence past explicit ids (setval)
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        f"REVOKE UPDATE ON SEQUENCE {audit_ids} FROM {role}",
        f"REVOKE ALL ON alembic_version FROM {role}",
        f"GRANT SELECT ON alembic_version TO {role}",
        f"REVOKE ALL ON audit_event FROM {role}",
        "REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM PUBLIC",
        f"GRANT SELECT, INSERT ON audit_event TO {role}",
    ):
        conn.execute(text(statement))
    return conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = "
                             "current_schema()")).scalar()


def audit_protection(engine: Engine) -> Protection:
    """Whether the running role could change or delete audit rows or switch the
    triggers off; every way it could is one line of ``problems``."""
    if not _is_postgres(engine):
        return _sqlite_protection(engine)
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT current_user, r.rolsuper, pg_has_role(current_user, c.relowner, 'MEMBER'),"
            " c.relowner::regrole::text, has_table_privilege(c.oid, 'UPDATE'),"
            " has_table_privilege(c.oid, 'DELETE'), has_table_privilege(c.oid, 'TRUNCATE') "
            "FROM pg_class c, pg_roles r "
            "WHERE c.oid = to_regclass('audit_event') AND r.rolname = current_user")).one()
        enabled = dict(conn.execute(text(
            "SELECT tgname, tgenabled <> 'D' FROM pg_trigger "
            "WHERE tgrelid = to_regclass('audit_event') AND NOT tgisinternal")).all())
        owns_function = conn.execute(text(
            "SELECT pg_has_role(current_user, proowner, 'MEMBER') FROM pg_proc "
            "WHERE oid = to_regprocedure('audit_event_refuse()')")).scalar()
        replica = conn.execute(text(
            "SELECT current_setting('server_version_num')::int >= 150000 "
            "AND has_parameter_privilege('session_replication_role', 'SET')")).scalar()
    me, superuser, owner_member, owner, *verbs = row
    protection = Protection(role=me)
    problems = protection.problems
    if superuser:
        problems.append(f"role {me} is a superuser: it bypasses every privilege and can "
                        "disable the triggers")
    elif owner_member:
        owns = "owns audit_event" if me == owner else f"is a member of {owner}, its owner"
        problems.append(f"role {me} {owns}: it can ALTER TABLE audit_event DISABLE TRIGGER "
                        "and then change or delete rows")
    allowed = [verb for verb, granted in zip(TRAIL_VERBS, verbs, strict=True) if granted]
    if allowed and not superuser:
        problems.append(f"role {me} holds {', '.join(allowed)} on audit_event")
    for trigger in TRIGGERS:
        if not enabled.get(trigger):
            problems.append(f"trigger {trigger} on audit_event is "
                            + ("disabled" if trigger in enabled else "missing"))
    if owns_function and not owner_member and not superuser:
        problems.append(f"role {me} owns the trigger function audit_event_refuse(): it can "
                        "replace it")
    if replica and not superuser:
        problems.append(f"role {me} may SET session_replication_role, which skips triggers")
    return protection


def _sqlite_protection(engine: Engine) -> Protection:
    """SQLite: whoever can write the file can drop the triggers; say who can."""
    path = engine.url.database or ":memory:"
    try:
        info = os.stat(path)
        mode = f"mode {stat.filemode(info.st_mode)}, owner uid {info.st_uid}"
    except OSError:
        mode = "not found"
    return Protection(role="(SQLite has no roles)", problems=[
        f"SQLite: any process that can write {path} ({mode}) can change or delete audit "
        "rows and drop the append-only triggers; the file's permissions are the protection "
        "(writable by the app's account only), or use PostgreSQL with a separate app role"])
