"""Backups of the annotation database, taken while the app runs, and checked restores.

    rationale-audit db backup backups/2026-12-01.sqlite
    rationale-audit db restore backups/2026-12-01.sqlite --db restored.sqlite

SQLite: :func:`backup` uses SQLite's online backup API, which copies a consistent
snapshot page by page while the app goes on writing (WAL mode: writers are not
blocked), into a temporary file that is checked (``PRAGMA integrity_check``) and then
renamed into place, so a backup file is either whole or absent. Beside it, once it is
whole, goes its manifest (``FILE.manifest.json``, also written to a temporary file and
renamed): the schema revision, the SHA-256 of the file and, for every table of the
schema, its row count and the SHA-256 of its rows (:func:`table_digests`).

:func:`restore` (through :func:`verify`) checks the backup before it touches the
target: a readable SQLite file that passes the integrity check, at a schema revision
this project's migrations know, with exactly the tables and columns that revision
has (a scratch database migrated to it is the reference), and, unless told to go
without one, matching its manifest (file hash, and every table's count and hash).
It refuses a target that already holds data (in any table) unless told to overwrite
it. It then copies the backup into a temporary file in the target's folder, checks
the copy against the backup's table digests and renames it over the target: a
refused or failed restore leaves the target as it was (absent, if it was absent).

PostgreSQL is backed up with its own tools; for it these functions raise
:class:`BackupError` with the ``pg_dump`` / ``pg_restore`` command to run instead
(the password is never printed: give it through ``PGPASSWORD`` or ``~/.pgpass``).
"""

import hashlib
import json
import os
import sqlite3
import tempfile
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from annotation_db import migrate
from annotation_db.errors import UserError
from annotation_db.provenance import file_sha256
from annotation_db.session import make_engine

# The tables whose counts a backup reports: the clinicians' work.
WORK_TABLES = ("annotation", "adjudication", "assignment", "campaign", "app_user")
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "rationale-audit-backup/1"
ROW_ENCODING = ("per table, SHA-256 over its column names and then its rows ordered by primary "
                "key then every column, each a compact JSON array (blobs as {\"blob\": hex}) "
                "and a newline, in UTF-8")
SIDECARS = ("-wal", "-shm", "-journal")


class BackupError(UserError):
    """A backup or restore that cannot be done; the message is one line."""


def manifest_path(backup_file: str | Path) -> Path:
    """Where the manifest of ``backup_file`` lies: beside it, ``FILE.manifest.json``."""
    path = Path(backup_file)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def backup(engine: Engine, path: str | Path, *, force: bool = False) -> dict:
    """Copy the running database to ``path`` and write its manifest beside it; returns
    what the copy holds."""
    source = _sqlite_file(engine, "backup")
    target = Path(path).expanduser().resolve()
    if target == source:
        raise BackupError(f"{target} is the database itself; choose another file")
    if target.exists() and not force:
        raise BackupError(f"{target} exists; choose a new file or pass --force to replace it")
    if not target.parent.is_dir():
        raise BackupError(f"folder {target.parent} does not exist")
    tmp = _temp_file(target, ".partial")
    try:
        src = _connect(source)
        try:
            counts = _copy(src, tmp)
        finally:
            src.close()
        manifest = _manifest(tmp, target.name)
        _fsync(tmp)
        os.replace(tmp, target)
        _write_atomically(manifest_path(target), json.dumps(manifest, indent=2) + "\n")
        _fsync(target.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {source} failed: {exc}") from None
    finally:
        _remove(tmp)
    return {"path": str(target), "bytes": target.stat().st_size, "rows": counts,
            "manifest": str(manifest_path(target)), "revision": manifest["schema_revision"]}


def verify(path: str | Path, *, no_manifest: bool = False) -> dict:
    """Check a backup file without restoring it; returns its revision, its table digests
    and the manifest it matched (None when there was none and ``no_manifest`` allowed it).

    Raises :class:`BackupError` naming the first thing that differs."""
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise BackupError(f"no backup file {source}")
    file_sha = file_sha256(source)  # before any connection opens it
    try:
        conn = _connect(source)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from None
    try:
        _check(conn, source)
        revision = _revision(conn, source)
        _check_schema(conn, source, revision)
        digests = _digests(conn)
    except sqlite3.Error as exc:
        raise BackupError(f"{source} is not a readable SQLite database: {exc}") from None
    finally:
        conn.close()
    manifest = manifest_path(source)
    if manifest.is_file():
        _check_manifest(source, manifest, revision, file_sha, digests)
    elif not no_manifest:
        raise BackupError(f"{source} has no manifest ({manifest.name}); pass --no-manifest to "
                          "restore it without checking it against one")
    return {"path": str(source), "revision": revision, "tables": digests,
            "manifest": str(manifest) if manifest.is_file() else None}


def restore(engine: Engine, path: str | Path, *, force: bool = False,
            no_manifest: bool = False) -> dict:
    """Replace the database behind ``engine`` with the backup at ``path``, checked by
    :func:`verify` first (the app must be stopped: a running app would go on from what
    it held in memory)."""
    target = _sqlite_file(engine, "restore")
    source = Path(path).expanduser().resolve()
    if source == target:
        raise BackupError(f"{source} is the database itself")
    checked = verify(source, no_manifest=no_manifest)
    held = _held(engine, target)
    if held and not force:
        raise BackupError(f"the target database {held}; pass --force to overwrite it")
    engine.dispose()  # no pooled connection may hold the old file open
    _refuse_if_in_use(target)
    tmp = _temp_file(target, ".restoring")
    try:
        src = _connect(source)
        try:
            counts = _copy(src, tmp)
        finally:
            src.close()
        copied = table_digests(tmp)
        if copied != checked["tables"]:
            differs = next(t for t in sorted(copied.keys() | checked["tables"].keys())
                           if copied.get(t) != checked["tables"].get(t))
            raise BackupError(f"restore into {target} failed: table {differs} of the copy "
                              f"differs from {source} (was the backup changed meanwhile?)")
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"restore into {target} failed: {exc}") from None
    finally:
        _remove(tmp)
    return {"path": str(target), "rows": counts, "revision": checked["revision"],
            "manifest": checked["manifest"]}


def table_digests(path: str | Path) -> dict[str, dict]:
    """Every table of the SQLite file at ``path``: its row count and the SHA-256 of its
    rows (see ``ROW_ENCODING``); the same rows give the same hash in any copy."""
    conn = _connect(Path(path).expanduser().resolve())
    try:
        return _digests(conn)
    finally:
        conn.close()


def engine_rows(engine: Engine) -> dict[str, int]:
    """Row counts of every table the database has but the schema revision."""
    present = sorted(set(inspect(engine).get_table_names()) - {"alembic_version"})
    with engine.connect() as conn:
        return {t: conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one()
                for t in present}


def _held(engine: Engine, target: Path) -> str:
    """Why the target may not be overwritten without --force, as a phrase ('' when it is
    empty or absent). An absent target is not opened: opening it would create it."""
    if not target.exists():
        return ""
    try:
        held = ", ".join(f"{n} {t}" for t, n in engine_rows(engine).items() if n)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return f"{target} cannot be read ({reason})"
    return f"is not empty ({held})" if held else ""


def _refuse_if_in_use(target: Path) -> None:
    """A write-ahead log beside the target after our own connections closed means another
    process holds it open; renaming a file over it would lose that process's writes, and a
    stale log would be replayed into the restored file."""
    wal = target.with_name(target.name + "-wal")
    if wal.exists() and target.exists():
        try:  # the last connection to close checkpoints and removes a leftover log
            _connect(target).close()
        except sqlite3.Error:
            pass
    if wal.exists():
        raise BackupError(f"{target} is in use ({wal.name} is open); stop the app first")


def _manifest(path: Path, name: str) -> dict:
    conn = _connect(path)
    try:
        digests = _digests(conn)
        revision = None
        if "alembic_version" in digests:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        conn.close()
    return {"format": MANIFEST_FORMAT, "file": name,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "schema_revision": revision, "bytes": path.stat().st_size,
            "sha256": file_sha256(path), "row_encoding": ROW_ENCODING, "tables": digests}


def _check_manifest(source: Path, manifest: Path, revision: str, file_sha: str,
                    digests: dict[str, dict]) -> None:
    """Refuse a backup that differs from its manifest, naming the first difference."""
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        tables, sha, was = recorded["tables"], recorded["sha256"], recorded["schema_revision"]
        if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
            raise TypeError("its tables are not objects")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"manifest {manifest} cannot be read: {exc}") from None
    differs = f"{source} does not match its manifest:"
    if was != revision:
        raise BackupError(f"{differs} schema revision {revision}, the manifest says {was}")
    for table in sorted(tables.keys() | digests.keys()):
        now, then = digests.get(table), tables.get(table)
        if then is None:
            raise BackupError(f"{differs} table {table} is not in the manifest")
        if now is None:
            raise BackupError(f"{differs} table {table} is missing")
        if now["rows"] != then.get("rows"):
            raise BackupError(f"{differs} table {table} has {now['rows']} rows, the manifest "
                              f"{then.get('rows')} (edited after backup?)")
        if now["sha256"] != then.get("sha256"):
            raise BackupError(f"{differs} table {table} hash differs (edited after backup?)")
    if file_sha != sha:
        raise BackupError(f"{differs} the file's SHA-256 differs (changed after backup?)")


def _revision(conn: sqlite3.Connection, source: Path) -> str:
    """The backup's schema revision, which must be one this project's migrations know."""
    if "alembic_version" not in _tables(conn):
        raise BackupError(f"{source} is not a Rationale Audit database (no schema revision)")
    rows = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
    if len(rows) != 1:
        raise BackupError(f"{source} has {len(rows)} schema revisions in alembic_version; "
                          "a Rationale Audit database has one")
    known = _known_revisions()
    if rows[0] not in known:
        raise BackupError(f"{source} is at schema revision {rows[0]!r}, which Rationale Audit's "
                          f"migrations do not know (newest: {known[-1]})")
    return rows[0]


def _check_schema(conn: sqlite3.Connection, source: Path, revision: str) -> None:
    """The backup must have exactly the tables and columns its revision has."""
    expected, found = _schema_at(revision), _columns(conn)
    wrong = f"{source} does not have the schema of revision {revision}:"
    for table in sorted(expected.keys() - found.keys()):
        raise BackupError(f"{wrong} table {table} is missing")
    for table in sorted(found.keys() - expected.keys()):
        raise BackupError(f"{wrong} it has a table {table} the schema does not")
    for table in sorted(expected):
        for column in sorted(expected[table] - found[table]):
            raise BackupError(f"{wrong} table {table} has no column {column}")
        for column in sorted(found[table] - expected[table]):
            raise BackupError(f"{wrong} table {table} has a column {column} the schema does not")


def _known_revisions() -> list[str]:
    """Every revision of the migrations, oldest first."""
    script = ScriptDirectory(str(migrate.MIGRATIONS))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


@cache
def _schema_at(revision: str) -> dict[str, frozenset[str]]:
    """The tables and columns a database has at ``revision``: a scratch SQLite database
    migrated to it, so older revisions are checked as exactly as the newest."""
    with tempfile.TemporaryDirectory(prefix="rationale-audit-schema-") as folder:
        scratch = Path(folder) / "schema.sqlite"
        engine = make_engine(f"sqlite:///{scratch}")
        try:
            migrate.upgrade(engine, revision)
        finally:
            engine.dispose()
        conn = _connect(scratch)
        try:
            return {t: frozenset(c) for t, c in _columns(conn).items()}
        finally:
            conn.close()


def _columns(conn: sqlite3.Connection) -> dict[str, set[str]]:
    return {t: {row[1] for row in conn.execute(f"PRAGMA table_info({_quote(t)})")}
            for t in _tables(conn)}


def _digests(conn: sqlite3.Connection) -> dict[str, dict]:
    return {t: _table_digest(conn, t) for t in sorted(_tables(conn))}


def _table_digest(conn: sqlite3.Connection, table: str) -> dict:
    """Row count and SHA-256 of one table's rows in a deterministic order and encoding:
    ordered by primary key, then by every column (so even a table without a key, or with
    duplicate rows, hashes the same in every copy)."""
    info = conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
    columns = [row[1] for row in info]
    keys = [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]
    order = ", ".join(_quote(c) for c in [*keys, *(c for c in columns if c not in keys)])
    select = ", ".join(_quote(c) for c in columns)
    digest, rows = hashlib.sha256(_canonical(columns)), 0
    for row in conn.execute(f"SELECT {select} FROM {_quote(table)} ORDER BY {order}"):
        digest.update(_canonical(row))
        rows += 1
    return {"rows": rows, "sha256": digest.hexdigest()}


def _canonical(values) -> bytes:
    plain = [{"blob": v.hex()} if isinstance(v, bytes) else v for v in values]
    return (json.dumps(plain, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _counts(source: sqlite3.Connection) -> dict[str, int]:
    present = _tables(source)
    return {t: source.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in WORK_TABLES if t in present}


def _tables(conn: sqlite3.Connection) -> set[str]:
    """The schema's tables (SQLite's own, such as sqlite_sequence, left out)."""
    return {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'")}


def _check(conn: sqlite3.Connection, where) -> None:
    result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise BackupError(f"{where} failed SQLite's integrity check: {result}")


def _copy(src: sqlite3.Connection, target: Path) -> dict[str, int]:
    """SQLite's online backup of ``src`` into the existing file ``target``, checked; the
    copy's counts."""
    dst = _connect(target)
    try:
        src.backup(dst)
        _check(dst, target)
        return _counts(dst)
    finally:
        dst.close()


def _temp_file(beside: Path, suffix: str) -> Path:
    """An empty temporary file in ``beside``'s folder, so the rename is atomic."""
    fd, tmp = tempfile.mkstemp(prefix=f".{beside.name}.", suffix=suffix, dir=beside.parent)
    os.close(fd)
    return Path(tmp)


def _remove(path: Path) -> None:
    """Remove a temporary file and whatever SQLite left beside it."""
    for suffix in ("", *SIDECARS):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _write_atomically(path: Path, content: str) -> None:
    tmp = _temp_file(path, ".partial")
    try:
        tmp.write_text(content, encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entry list) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection to an existing SQLite file (``mode=rw``: a missing file is an error,
    never created)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=30)
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
