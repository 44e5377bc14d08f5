"""`rationale-audit audit`: read the audit trail (sign-ins, account changes, campaigns,
adjudications, exports, jobs)."""

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlmodel import Session

from annotation_db import audit as crud
from annotation_db.audit_config import AuditListConfig
from app.commands.db import open_engine
from app.common import config_options, user_errors

app = typer.Typer(help="The audit trail: who did what, when, from which address.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("list")
@user_errors
@config_options(AuditListConfig)
def list_(cfg: AuditListConfig, db: str | None = None) -> None:
    """List audit events, newest first.

    Example:

        rationale-audit audit list --user dr.rao --since 2026-12-01
    """
    when = _since(cfg.since)
    table = Table("when (UTC)", "action", "actor", "address", "target", "detail")
    with Session(open_engine(db)) as session:
        for e in crud.list_events(session, user=cfg.user, since=when, action=cfg.action,
                                  limit=cfg.limit):
            at = e.at.astimezone(UTC) if e.at.tzinfo else e.at  # SQLite keeps UTC, naive
            cells = (at.strftime("%Y-%m-%d %H:%M:%S"), e.action, e.actor or "–",
                     e.address or "–", e.target or "–",
                     ", ".join(f"{k}={v}" for k, v in e.detail.items()) or "–")
            table.add_row(*(Text(cell) for cell in cells))  # a username is not markup
    console.print(table)


def _since(text: str | None) -> datetime | None:
    """--since as an aware UTC time (a time without a zone is taken as UTC)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise crud.AuditError(f"--since: {text!r} is not an ISO 8601 date or time") from None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
