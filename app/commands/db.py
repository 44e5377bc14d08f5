"""`rationale-audit db`: create and migrate the annotation database."""

import typer
from rich.console import Console

from annotation_db import migrate
from annotation_db.session import (
    DatabaseUnavailable,
    check_connection,
    database_url,
    make_engine,
    redact,
)
from app.common import DbOption, user_errors

app = typer.Typer(help="Create and migrate the annotation database (SQLite or PostgreSQL).",
                  no_args_is_help=True)
console = Console(soft_wrap=True)  # paths and hashes stay copyable


def open_engine(db: str | None, require_schema: bool = True):
    """An engine for the chosen database, checked to be reachable and (by default) migrated."""
    engine = make_engine(database_url(db))
    check_connection(engine)
    if require_schema:
        now, head = migrate.current_revision(engine), migrate.head_revision(engine)
        if now != head:
            state = "has no schema yet" if now is None else f"is at revision {now}, not {head}"
            raise DatabaseUnavailable(
                f"{redact(str(engine.url))} {state}; run `rationale-audit db upgrade` first"
            )
    return engine


@app.command()
@user_errors
def upgrade(
    db: DbOption = None,
    revision: str = typer.Option("head", help="Target Alembic revision."),
) -> None:
    """Create the database if needed and apply every pending migration.

    Example:

        rationale-audit db upgrade
        DATABASE_URL=postgresql+psycopg://audit:pw@127.0.0.1/audit rationale-audit db upgrade
    """
    engine = open_engine(db, require_schema=False)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine, revision)
    after = migrate.current_revision(engine)
    where = redact(str(engine.url))
    if before == after:
        console.print(f"{where} is already at revision {after}.", highlight=False)
    else:
        console.print(f"{where}: upgraded {before or '(empty)'} → {after}.", highlight=False)


@app.command()
@user_errors
def current(db: DbOption = None) -> None:
    """Show the database's schema revision and whether it is the newest.

    Example:

        rationale-audit db current
    """
    engine = open_engine(db, require_schema=False)
    now, head = migrate.current_revision(engine), migrate.head_revision(engine)
    where = redact(str(engine.url))
    if now is None:
        console.print(f"{where}: empty (no schema); run `rationale-audit db upgrade`.",
                      highlight=False)
    elif now == head:
        console.print(f"{where}: revision {now} (head)", highlight=False)
    else:
        console.print(
            f"{where}: revision {now}, newest is {head}; run `rationale-audit db upgrade`.",
            highlight=False,
        )
