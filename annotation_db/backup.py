"""Backups of the annotation database, taken while the app runs.

    rationale-audit db backup backups/2026-12-01.sqlite
    rationale-audit db restore backups/2026-12-01.sqlite --db restored.sqlite

SQLite: :func:`backup` uses SQLite's online backup API, which copies a consistent
snapshot page by page while the app goes on writing (WAL mode: writers are not
blocked), into a temporary file that is checked (``PRAGMA integrity_check``) and then
renamed into place, so a backup file is either whole or absent. :func:`restore`
copies a checked backup into the target the same way, inside one transaction, and
refuses a target that already holds data (in any table) unless told to overwrite it.

PostgreSQL is backed up with its own tools; for it these functions raise
:class:`BackupError` with the ``pg_dump`` / ``pg_restore`` command to run instead
(the password is never printed: give it through ``PGPASSWORD`` or ``~/.pgpass``).
"""

import os
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine, make_url

# The tables whose counts a backup reports: the clinicians' work.
WORK_TABLES = ("annotation", "adjudication", "assignment", "campaign", "app_user")


class BackupError(ValueError):
    """A backup or restore that cannot be done; the message is one line."""


def backup(engine: Engine, path: str | Path, *, force: bool = False) -> dict:
    """Copy the running database to ``path``; returns what the copy holds."""
    source = _sqlite_file(engine, "backup")
    target = Path(path).expanduser().resolve()
    if target == source:
        raise BackupError(f"{target} is the database itself; choose another file")
    if target.exists() and not force:
        raise BackupError(f"{target} exists; choose a new file or pass --force to replace it")
    if not target.parent.is_dir():
        raise BackupError(f"folder {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    try:
        src = _connect(source)
        try:
            counts = _copy(src, Path(tmp))
        finally:
            src.close()
        _fsync(Path(tmp))
        os.replace(tmp, target)
        _fsync(target.parent)
    except sqlite3.Error as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BackupError(f"backup of {source} failed: {exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(target), "bytes": target.stat().st_size, "rows": counts}


def restore(engine: Engine, path: str | Path, *, force: bool = False) -> dict:
    """Replace the database behind ``engine`` with the backup at ``path`` (the app must
    be stopped: a running app would go on from what it held in memory)."""
    target = _sqlite_file(engine, "restore")
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise BackupError(f"no backup file {source}")
    if source == target:
        raise BackupError(f"{source} is the database itself")
    try:
        src = _connect(source)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from None
    try:
        try:
            _check(src, source)
            tables = _tables(src)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{source} is not a readable SQLite database: {exc}") from None
        if "alembic_version" not in tables:
            raise BackupError(f"{source} is not a Rationale Audit database (no schema "
                              "revision)")
        held = ", ".join(f"{n} {t}" for t, n in engine_rows(engine).items() if n)
        if held and not force:
            raise BackupError(f"the target database is not empty ({held}); pass --force "
                              "to overwrite it")
        engine.dispose()  # no pooled connection may hold the old file open
        try:
            counts = _copy(src, target)
        except sqlite3.Error as exc:
            raise BackupError(f"restore into {target} failed: {exc}") from None
    finally:
        src.close()
    return {"path": str(target), "rows": counts}


def engine_rows(engine: Engine) -> dict[str, int]:
    """Row counts of every table the database has but the schema revision."""
    present = sorted(set(inspect(engine).get_table_names()) - {"alembic_version"})
    with engine.connect() as conn:
        return {t: conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one()
                for t in present}


def _counts(source: sqlite3.Connection) -> dict[str, int]:
    present = _tables(source)
    return {t: source.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in WORK_TABLES if t in present}


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _check(conn: sqlite3.Connection, where) -> None:
    result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{where} failed SQLite's integrity check: {result}")


def _copy(src: sqlite3.Connection, target: Path) -> dict[str, int]:
    """SQLite's online backup of ``src`` into ``target``, checked; the copy's counts."""
    dst = _connect(target)
    try:
        src.backup(dst)
        _check(dst, target)
        return _counts(dst)
    finally:
        dst.close()


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entry list) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _sqlite_file(engine: Engine, verb: str) -> Path:
    url = make_url(str(engine.url))
    if url.get_backend_name() == "postgresql":
        where = url.set(password=None).render_as_string(hide_password=False).replace(
            "postgresql+psycopg://", "postgresql://")
        command = (f"pg_dump --format=custom --file BACKUP.dump '{where}'" if verb == "backup"
                   else f"pg_restore --clean --if-exists --dbname '{where}' BACKUP.dump")
        raise BackupError(f"PostgreSQL is backed up with its own tools; run: {command} "
                          "(password from PGPASSWORD or ~/.pgpass)")
    if not url.database or url.database == ":memory:":
        raise BackupError(f"an in-memory database cannot be {verb}d")
    return Path(url.database).expanduser().resolve()
