"""Engine and session factory.

SQLite is the default (a file beside you, WAL journal, foreign keys on, a busy
timeout so the annotation app and a CLI command can share it). Set
``DATABASE_URL`` (for example ``postgresql+psycopg://user:pw@127.0.0.1/audit``)
to use PostgreSQL through psycopg 3 instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import create_engine, text

from annotation_db import claims as _claims  # noqa: F401  (stores claims with rationales)
from annotation_db.errors import UserError

DEFAULT_SQLITE_PATH = "rationale_audit.sqlite"
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseUnavailable(UserError, RuntimeError):
    """The configured database cannot be reached or opened."""


def database_url(db_path: str | os.PathLike[str] | None = None) -> str:
    """Resolve which database to use.

    Precedence: ``DATABASE_URL`` > explicit ``db_path`` > ``RATIONALE_AUDIT_DB`` >
    ``./rationale_audit.sqlite``.
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        return _normalise_url(url)
    path = db_path or os.environ.get("RATIONALE_AUDIT_DB") or DEFAULT_SQLITE_PATH
    return f"sqlite:///{Path(path).expanduser()}"


def _normalise_url(url: str) -> str:
    # Accept the libpq-style schemes people paste and route them to psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and manifests."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the project's connection settings."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUnavailable(
            f"DATABASE_URL is not a database URL ({url!r}); expected e.g. "
            "postgresql+psycopg://user:password@host:5432/dbname or sqlite:///path.sqlite"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.database)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 5},
        )
    raise DatabaseUnavailable(
        f"unsupported database backend {parsed.get_backend_name()!r} in {redact(url)}; "
        "use sqlite:///PATH or postgresql+psycopg://..."
    )


def _sqlite_engine(database: str | None) -> Engine:
    if database and database != ":memory:":
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise DatabaseUnavailable(
                f"cannot create SQLite database {database}: folder {parent} does not exist"
            )
    engine = create_engine(
        f"sqlite:///{database or ':memory:'}",
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - exercised via engine
        cursor = dbapi_connection.cursor()
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def check_connection(engine: Engine) -> None:
    """Open one connection, or raise :class:`DatabaseUnavailable` with one line."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot connect to {redact(str(engine.url))}: {reason}"
        ) from exc
