"""`rationale-audit audit`: read the audit trail (sign-ins, account changes, campaigns,
adjudications, exports, jobs)."""

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlmodel import Session

from annotation_db import audit as crud
from app.commands.db import open_engine
from app.common import DbOption, user_errors

app = typer.Typer(help="The audit trail: who did what, when, from which address.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("list")
@user_errors
def list_(user: str = typer.Option(None, "--user", help="Only this account's events."),
          since: str = typer.Option(None, "--since", help="Only events at or after this "
                                    "date or time (ISO 8601, UTC unless a zone is given), "
                                    "e.g. 2026-12-01 or 2026-12-01T09:30."),
          action: str = typer.Option(None, "--action", help="Only this action, e.g. "
                                     "login_failed."),
          limit: int = typer.Option(100, min=1, help="At most this many, newest first."),
          db: DbOption = None) -> None:
    """List audit events, newest first.

    Example:

        rationale-audit audit list --user dr.rao --since 2026-12-01
    """
    when = None
    if since:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise crud.AuditError(f"--since: {since!r} is not an ISO 8601 date or time"
                                  ) from None
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    table = Table("when (UTC)", "action", "actor", "address", "target", "detail")
    with Session(open_engine(db)) as session:
        for e in crud.list_events(session, user=user, since=when, action=action, limit=limit):
            at = e.at.astimezone(UTC) if e.at.tzinfo else e.at  # SQLite keeps UTC, naive
            cells = (at.strftime("%Y-%m-%d %H:%M:%S"), e.action, e.actor or "–",
                     e.address or "–", e.target or "–",
                     ", ".join(f"{k}={v}" for k, v in e.detail.items()) or "–")
            table.add_row(*(Text(cell) for cell in cells))  # a username is not markup
    console.print(table)
