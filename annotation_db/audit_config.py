"""The settings of `rationale-audit audit list` (pydantic only): which audit events to
show. ``since`` stays text so the command can say which option was not a date."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class AuditListConfig(CommandConfig):
    """`rationale-audit audit list`: audit events, newest first."""

    COMMAND = "rationale-audit audit list"

    user: str | None = Field(None, description="Only this account's events.")
    since: str | None = Field(
        None, description="Only events at or after this date or time (ISO 8601, UTC unless "
        "a zone is given), e.g. 2026-12-01 or 2026-12-01T09:30.")
    action: str | None = Field(None, description="Only this action, e.g. login_failed.")
    limit: int = Field(100, ge=1, description="At most this many, newest first.")


__all__ = ["AuditListConfig"]
