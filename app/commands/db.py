"""`rationale-audit db`: create, migrate, back up and restore the annotation database."""

from pathlib import Path

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

app = typer.Typer(help="Create, migrate, back up and restore the annotation database "
                  "(SQLite or PostgreSQL).",
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


@app.command()
@user_errors
def backup(path: Path = typer.Argument(..., help="The backup file to write."),
           force: bool = typer.Option(False, "--force", help="Replace an existing file."),
           db: DbOption = None) -> None:
    """Copy the database to a file while the app keeps running (SQLite online backup).

    The copy is checked and appears only when whole. For PostgreSQL this prints the
    `pg_dump` command to use instead.

    Example:

        rationale-audit db backup backups/audit-2026-12-01.sqlite
    """
    from annotation_db import backup as crud

    done = crud.backup(open_engine(db), path, force=force)
    rows = ", ".join(f"{n} {t}" for t, n in done["rows"].items())
    console.print(f"backed up to {done['path']} ({done['bytes']:,} bytes; {rows})",
                  highlight=False)


@app.command()
@user_errors
def restore(path: Path = typer.Argument(..., help="A file written by `db backup`."),
            force: bool = typer.Option(False, "--force", help="Overwrite a database that "
                                       "already holds data."),
            db: DbOption = None) -> None:
    """Replace the database with a backup (stop the app first).

    A database that already holds data is refused unless --force is given. For
    PostgreSQL this prints the `pg_restore` command to use instead.

    Example:

        rationale-audit db restore backups/audit-2026-12-01.sqlite --db restored.sqlite
    """
    from annotation_db import backup as crud

    done = crud.restore(open_engine(db, require_schema=False), path, force=force)
    rows = ", ".join(f"{n} {t}" for t, n in done["rows"].items())
    console.print(f"restored {done['path']} ({rows})", highlight=False)
