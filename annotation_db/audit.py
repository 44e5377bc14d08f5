"""The audit trail: who did what, when, and from which address.

    rationale-audit audit list --user dr.rao --since 2026-12-01

Every login (success, failure, throttled), sign-out, account change, campaign
creation, rating, revision of a rating, skip (taken back, or returned to its rater when
nobody else could rate the item), adjudication, export (create, delete) and
job launch or cancel appends one :class:`~annotation_db.models.AuditEvent`. The table is
append-only: database triggers refuse UPDATE and DELETE, but the table's owner can
disable them, so on PostgreSQL the app runs as a role that may only SELECT and INSERT
the table (:mod:`annotation_db.privileges`). Nothing secret is
recorded: no password, hash, token or cookie is ever a field or part of ``detail``
(:func:`record` refuses keys that look like one), nor the free text of a comment.
"""

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from annotation_db.errors import UserError
from annotation_db.models import AuditEvent

ACTIONS = frozenset({
    "login", "login_failed", "login_throttled", "logout", "session_expired",
    "user_created", "user_disabled", "user_enabled", "password_reset", "user_unlocked",
    "campaign_created", "rating_submitted", "rating_revised", "item_skipped",
    "draft_discarded", "correction_proposed", "correction_accepted", "correction_rejected",
    "skip_undone", "item_returned",
    "adjudicated", "export_created", "export_deleted",
    "job_launched", "job_cancelled", "job_resumed",
})
CLI = "cli"  # the address of an action taken on the command line
_SECRET = re.compile(r"passw|passwd|secret|token|cookie|credential", re.IGNORECASE)


class AuditError(UserError):
    """An event that cannot be recorded or a query that cannot be run; one line."""


def record(session: Session, action: str, *, actor: str | None = None,
           address: str | None = None, target: str | None = None, commit: bool = True,
           **detail: Any) -> AuditEvent:
    """Append one event. With ``commit=False`` it joins the caller's transaction, so the
    action and its event are stored together or not at all."""
    if action not in ACTIONS:
        raise AuditError(f"unknown audit action {action!r}")
    secret = sorted(key for key in detail if _SECRET.search(key))
    if secret:
        raise AuditError(f"audit events hold no secrets; refused field(s) {', '.join(secret)}")
    event = AuditEvent(action=action, actor=actor and actor[:64],
                       address=(address or None) and address[:64],
                       target=target and str(target)[:200], detail=detail)
    session.add(event)
    if commit:
        session.commit()
        session.refresh(event)
    else:
        session.flush()
    return event


def list_events(session: Session, *, user: str | None = None, since: datetime | None = None,
                action: str | None = None, limit: int = 100) -> list[AuditEvent]:
    """The newest events first, optionally of one account, an action, or after a time."""
    if action is not None and action not in ACTIONS:
        raise AuditError(f"unknown audit action {action!r}; one of {', '.join(sorted(ACTIONS))}")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if user is not None:
        query = query.where(AuditEvent.actor == user)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    return list(session.execute(query).scalars())


def last_unlock(session: Session, username: str) -> datetime | None:
    """When an admin last cleared the login throttle of ``username`` (or None)."""
    return session.execute(select(AuditEvent.at).where(
        AuditEvent.action == "user_unlocked", AuditEvent.target == username)
        .order_by(AuditEvent.id.desc()).limit(1)).scalars().first()
