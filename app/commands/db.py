"""`rationale-audit db`: create, migrate, back up and restore the annotation database."""

from pathlib import Path

import typer
from rich.console import Console

from annotation_db import migrate
from annotation_db.backup_config import BackupConfig, RestoreConfig
from annotation_db.migrate_config import UpgradeConfig
from annotation_db.session import (
    DatabaseUnavailable,
    check_connection,
    database_url,
    make_engine,
    redact,
)
from app.common import config_options, user_errors

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
@config_options(UpgradeConfig)
def upgrade(cfg: UpgradeConfig, db: str | None = None) -> None:
    """Create the database if needed and apply every pending migration.

    With --app-role (PostgreSQL), the app's role is then granted least privilege: it
    can append to the audit trail but not change it (see `db audit-check`).

    Example:

        rationale-audit db upgrade
        DATABASE_URL=postgresql+psycopg://audit:pw@127.0.0.1/audit rationale-audit db upgrade
        DATABASE_URL=postgresql+psycopg://audit_owner:pw@127.0.0.1/audit \\
            rationale-audit db upgrade --app-role audit_app
    """
    from annotation_db import privileges

    engine = open_engine(db, require_schema=False)
    if cfg.app_role:
        privileges.check_app_role(engine, cfg.app_role)  # before anything changes
    before = migrate.current_revision(engine)
    migrate.upgrade(engine, cfg.revision)
    after = migrate.current_revision(engine)
    where = redact(str(engine.url))
    if before == after:
        console.print(f"{where} is already at revision {after}.", highlight=False)
    else:
        console.print(f"{where}: upgraded {before or '(empty)'} → {after}.", highlight=False)
    if cfg.app_role:
        console.print(privileges.grant_app_role(engine, cfg.app_role), highlight=False)


@app.command("audit-check")
@user_errors
@config_options(None)
def audit_check(db: str | None = None) -> None:
    """Say whether the role this command runs as could alter or delete audit rows or
    switch the append-only triggers off; exit 1 if it could, 0 if not.

    Run it with the app's own database URL. On SQLite it always exits 1: whoever can
    write the file can change it, so the file's permissions are the protection.

    Example:

        DATABASE_URL=postgresql+psycopg://audit_app:pw@db/audit rationale-audit db audit-check
    """
    from annotation_db import privileges

    engine = open_engine(db)
    protection = privileges.audit_protection(engine)
    where = redact(str(engine.url))
    if protection.protected:
        console.print(f"{where}: the audit trail is protected from role {protection.role}: "
                      "it may only SELECT and INSERT audit_event, and owns neither the table "
                      "nor its triggers.", highlight=False)
        return
    console.print(f"{where}: the audit trail is NOT protected from role {protection.role}:",
                  highlight=False)
    for problem in protection.problems:
        console.print(f"- {problem}", highlight=False)
    console.print("How to fix: docs/annotation.md, \"The audit trail on PostgreSQL: least "
                  "privilege\".", highlight=False)
    raise typer.Exit(code=1)


@app.command()
@user_errors
@config_options(None)
def current(db: str | None = None) -> None:
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
@config_options(BackupConfig)
def backup(cfg: BackupConfig,
           path: Path = typer.Argument(..., help="The backup file to write."),
           db: str | None = None) -> None:
    """Copy the database to a file while the app keeps running (SQLite online backup).

    The copy is checked and appears only when whole; beside it goes FILE.manifest.json
    (schema revision, the file's SHA-256, every table's row count and SHA-256), which
    `db restore` checks. For PostgreSQL this prints the `pg_dump` command to use instead.

    Example:

        rationale-audit db backup backups/audit-2026-12-01.sqlite
    """
    from annotation_db import backup as crud

    done = crud.backup(open_engine(db), path, force=cfg.force)
    rows = ", ".join(f"{n} {t}" for t, n in done["rows"].items())
    console.print(f"backed up to {done['path']} ({done['bytes']:,} bytes; {rows}); "
                  f"manifest {done['manifest']}", highlight=False)


@app.command()
@user_errors
@config_options(RestoreConfig)
def restore(cfg: RestoreConfig,
            path: Path = typer.Argument(..., help="A file written by `db backup`."),
            db: str | None = None) -> None:
    """Replace the database with a checked backup (stop the app first).

    Before the database is touched the backup must pass SQLite's integrity check, be
    at a schema revision this version knows with exactly that revision's tables and
    columns, and match its manifest (file and per-table hashes). The backup is copied
    beside the database, checked and renamed over it, so a refused or failed restore
    leaves the database as it was. A database that already holds data is refused
    unless --force is given. For PostgreSQL this prints the `pg_restore` command to
    use instead.

    Example:

        rationale-audit db restore backups/audit-2026-12-01.sqlite --db restored.sqlite
    """
    from annotation_db import backup as crud

    # No connection before the backup is checked: opening a missing SQLite file creates it.
    engine = make_engine(database_url(db))
    done = crud.restore(engine, path, force=cfg.force, no_manifest=cfg.no_manifest)
    rows = ", ".join(f"{n} {t}" for t, n in done["rows"].items())
    checked = (f"matches its manifest {done['manifest']}" if done["manifest"]
               else "no manifest: restored without checking its rows against one")
    console.print(f"restored {done['path']} at revision {done['revision']} ({rows}; {checked})",
                  highlight=False)
    if done["revision"] != migrate.head_revision(engine):
        console.print("run `rationale-audit db upgrade` to bring it to the newest schema.",
                      highlight=False)
