"""The settings of `rationale-audit db upgrade` (pydantic only): the revision to reach and,
on PostgreSQL, the app's least-privilege role."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class UpgradeConfig(CommandConfig):
    """`rationale-audit db upgrade`: apply pending migrations (and grant the app's role)."""

    COMMAND = "rationale-audit db upgrade"

    revision: str = Field("head", description="Target Alembic revision.")
    app_role: str | None = Field(
        None, description="PostgreSQL: the role the app connects as; run as the tables' "
        "owner, it gets the usual DML and only SELECT, INSERT on audit_event "
        "(or $RATIONALE_AUDIT_APP_ROLE).",
        json_schema_extra={"envvar": "RATIONALE_AUDIT_APP_ROLE"})


__all__ = ["UpgradeConfig"]
