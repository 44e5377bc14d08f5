"""Backups taken while ratings are being written, and restores that refuse to clobber."""

import hashlib
import json
import sqlite3
import threading

import pytest
from sqlalchemy import func, inspect, select
from sqlmodel import Session
from typer.testing import CliRunner

from annotation_db import backup, campaigns, migrate, users
from annotation_db.models import Annotation
from annotation_db.session import make_engine
from app.cli import app
from tests.helpers import PASSWORD, seed_rationales

runner = CliRunner()


def _campaign(url: str, n: int):
    engine = make_engine(url)
    migrate.upgrade(engine)
    run_id = seed_rationales(engine, n=n, gold=0)
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann"], k=1,
                                  claim_review=False)
    return engine


def test_a_backup_taken_during_writes_restores_every_rating_committed_before_it(tmp_path):
    engine = _campaign(f"sqlite:///{tmp_path / 'live.sqlite'}", n=200)
    committed: list[int] = []  # annotation ids, appended after each commit returns
    stop = threading.Event()

    def rate():
        with Session(engine) as s:
            ann = users.get_user(s, "ann")
            campaign = campaigns.get_campaign(s, "pilot")
            while not stop.is_set():
                item = campaigns.next_assignment(s, campaign, ann)
                if item is None:
                    return
                committed.append(campaigns.submit(
                    s, assignment_id=item.id, user=ann, accuracy=4, faithfulness=5,
                    flags=[]).id)

    writer = threading.Thread(target=rate)
    writer.start()
    while len(committed) < 20:  # the backup starts in the middle of the writing
        threading.Event().wait(0.01)
    before = list(committed)
    done = backup.backup(engine, tmp_path / "b.sqlite")
    stop.set()
    writer.join()
    assert len(committed) > len(before)  # writes went on around the backup
    restored = make_engine(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    backup.restore(restored, tmp_path / "b.sqlite")
    with Session(restored) as s:
        ids = set(s.execute(select(Annotation.id)).scalars())
    assert set(before) <= ids  # every rating committed before the backup began
    assert ids <= set(committed)  # and nothing that was never committed
    assert done["rows"]["annotation"] == len(ids)
    assert migrate.current_revision(restored) == migrate.head_revision(restored)


def test_restore_refuses_a_database_that_holds_data_unless_forced(tmp_path):
    engine = _campaign(f"sqlite:///{tmp_path / 'a.sqlite'}", n=4)
    backup.backup(engine, tmp_path / "b.sqlite")
    other = _campaign(f"sqlite:///{tmp_path / 'other.sqlite'}", n=6)
    with pytest.raises(backup.BackupError, match="not empty .*pass --force"):
        backup.restore(other, tmp_path / "b.sqlite")
    with Session(other) as s:  # nothing was touched
        assert s.execute(select(func.count()).select_from(Annotation)).scalar() == 0
        assert len(campaigns.status(s, campaigns.get_campaign(s, "pilot"))["annotators"]) == 1
    backup.restore(other, tmp_path / "b.sqlite", force=True)
    with pytest.raises(backup.BackupError, match="exists; choose a new file"):
        backup.backup(engine, tmp_path / "b.sqlite")
    with pytest.raises(backup.BackupError, match="is the database itself"):
        backup.backup(engine, tmp_path / "a.sqlite", force=True)
    cohort_only = make_engine(f"sqlite:///{tmp_path / 'cohort.sqlite'}")  # no users yet
    migrate.upgrade(cohort_only)
    seed_rationales(cohort_only, n=2, gold=0)
    with pytest.raises(backup.BackupError, match="not empty .*cohort"):
        backup.restore(cohort_only, tmp_path / "b.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(backup.BackupError, match="not a readable SQLite database"):
        backup.restore(make_engine(f"sqlite:///{tmp_path / 'new.sqlite'}"),
                       tmp_path / "junk.sqlite")


def test_postgresql_is_pointed_to_its_own_tools(tmp_path):
    engine = make_engine("postgresql+psycopg://audit:s3cret@db.example:5432/audit")
    with pytest.raises(backup.BackupError, match="pg_dump --format=custom") as refused:
        backup.backup(engine, tmp_path / "x.dump")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(backup.BackupError, match="pg_restore"):
        backup.restore(engine, tmp_path / "x.dump")


def _rated(path, n: int = 4):
    """A campaign database (SQLite file ``path``) with one rating; its engine disposed, so
    no connection of the test holds the file open."""
    engine = _campaign(f"sqlite:///{path}", n=n)
    with Session(engine) as s:
        ann, campaign = users.get_user(s, "ann"), campaigns.get_campaign(s, "pilot")
        item = campaigns.next_assignment(s, campaign, ann)
        campaigns.submit(s, assignment_id=item.id, user=ann, accuracy=4, faithfulness=5,
                         flags=[])
    engine.dispose()
    return path


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str):
    return runner.invoke(app, ["db", *map(str, args)])


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("Error: ") and fragment in lines[0], lines[0]


def _junk_at_unknown_revision(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('0042_not_ours')")
        conn.execute("CREATE TABLE junk (x)")
    conn.close()
    return "is at schema revision '0042_not_ours', which Rationale Audit's migrations do not know"


def _junk_at_the_newest_revision(path):
    head = migrate.head_revision(make_engine(f"sqlite:///{path}"))
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (head,))
        conn.execute("CREATE TABLE junk (x)")
    conn.close()
    return f"does not have the schema of revision {head}: table adjudication is missing"


@pytest.mark.parametrize("make_junk", [_junk_at_unknown_revision, _junk_at_the_newest_revision])
def test_a_junk_sqlite_file_with_a_schema_revision_is_refused_even_with_force(
        tmp_path, monkeypatch, make_junk):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    target = _rated(tmp_path / "audit.sqlite")
    before = _sha(target)
    fragment = make_junk(tmp_path / "junk.sqlite")
    result = _cli("restore", tmp_path / "junk.sqlite", "--force", "--db", target)
    _one_line_error(result, f"junk.sqlite {fragment}")
    assert _sha(target) == before  # the real database is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.sqlite", "junk.sqlite"]


def test_a_backup_edited_after_it_was_taken_is_refused_naming_the_table(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    source = _rated(tmp_path / "audit.sqlite")
    assert _cli("backup", tmp_path / "b.sqlite", "--db", source).exit_code == 0
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:  # the count stays, one value changes
        conn.execute("UPDATE annotation SET accuracy = 1")
    conn.close()
    result = _cli("restore", tmp_path / "b.sqlite", "--db", tmp_path / "restored.sqlite")
    _one_line_error(result, "b.sqlite does not match its manifest: table annotation hash "
                            "differs (edited after backup?)")
    assert not (tmp_path / "restored.sqlite").exists()


def test_a_refused_restore_into_a_missing_database_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    result = _cli("restore", tmp_path / "junk.sqlite", "--db", tmp_path / "new.sqlite")
    _one_line_error(result, "junk.sqlite is not a readable SQLite database")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.sqlite"]  # no file, no -wal


def test_a_backup_and_its_manifest_restore_with_identical_table_hashes(tmp_path):
    engine = make_engine(f"sqlite:///{_rated(tmp_path / 'audit.sqlite')}")
    done = backup.backup(engine, tmp_path / "b.sqlite")
    manifest = json.loads((tmp_path / "b.sqlite.manifest.json").read_text())
    assert done["manifest"] == str(tmp_path / "b.sqlite.manifest.json")
    assert manifest["schema_revision"] == migrate.head_revision(engine)
    assert manifest["sha256"] == _sha(tmp_path / "b.sqlite")
    assert set(manifest["tables"]) == set(inspect(engine).get_table_names())  # every table
    assert manifest["tables"]["annotation"]["rows"] == 1
    assert manifest["tables"] == backup.table_digests(tmp_path / "audit.sqlite")
    restored = make_engine(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    result = backup.restore(restored, tmp_path / "b.sqlite")
    assert result["manifest"] == str(tmp_path / "b.sqlite.manifest.json")
    assert backup.table_digests(tmp_path / "restored.sqlite") == manifest["tables"]
    with Session(restored) as s:
        assert s.execute(select(func.count()).select_from(Annotation)).scalar() == 1


def test_a_backup_without_a_manifest_is_restored_only_with_no_manifest(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    source = _rated(tmp_path / "audit.sqlite")
    assert _cli("backup", tmp_path / "b.sqlite", "--db", source).exit_code == 0
    (tmp_path / "b.sqlite.manifest.json").unlink()
    target = tmp_path / "restored.sqlite"
    _one_line_error(_cli("restore", tmp_path / "b.sqlite", "--db", target),
                    "b.sqlite has no manifest (b.sqlite.manifest.json); pass --no-manifest")
    assert not target.exists()
    result = _cli("restore", tmp_path / "b.sqlite", "--no-manifest", "--db", target)
    assert result.exit_code == 0, result.output
    assert "no manifest: restored without checking its rows against one" in result.output
    assert backup.table_digests(target) == backup.table_digests(source)


def test_a_restore_that_fails_before_the_rename_leaves_the_old_database(tmp_path, monkeypatch):
    target = _rated(tmp_path / "audit.sqlite")
    other = make_engine(f"sqlite:///{_rated(tmp_path / 'other.sqlite', n=6)}")
    backup.backup(other, tmp_path / "b.sqlite")
    other.dispose()
    before = _sha(target)

    def detached(*_args):
        raise OSError("disk detached")

    monkeypatch.setattr(backup.os, "replace", detached)
    with pytest.raises(OSError, match="disk detached"):
        backup.restore(make_engine(f"sqlite:///{target}"), tmp_path / "b.sqlite", force=True)
    assert _sha(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.sqlite", "b.sqlite", "b.sqlite.manifest.json", "other.sqlite"]


def test_a_backup_at_an_older_revision_is_checked_against_that_revision(tmp_path):
    older = backup._known_revisions()[-2]
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    migrate.upgrade(engine, older)
    backup.backup(engine, tmp_path / "b.sqlite")
    engine.dispose()
    restored = make_engine(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    assert backup.restore(restored, tmp_path / "b.sqlite")["revision"] == older
    assert migrate.current_revision(restored) == older
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:  # a table the revision does not have
        conn.execute("CREATE TABLE extra (x)")
    conn.close()
    (tmp_path / "b.sqlite.manifest.json").unlink()
    with pytest.raises(backup.BackupError, match=f"does not have the schema of revision {older}: "
                       "it has a table extra the schema does not"):
        backup.verify(tmp_path / "b.sqlite", no_manifest=True)


def test_restore_refuses_a_database_another_process_holds_open(tmp_path):
    target = _rated(tmp_path / "audit.sqlite")
    backup.backup(make_engine(f"sqlite:///{_rated(tmp_path / 'other.sqlite')}"),
                  tmp_path / "b.sqlite")
    before = _sha(target)
    app_connection = sqlite3.connect(target)  # the app, still running
    app_connection.execute("SELECT COUNT(*) FROM annotation").fetchone()
    try:
        with pytest.raises(backup.BackupError, match="audit.sqlite is in use "
                           r"\(audit.sqlite-wal is open\); stop the app first"):
            backup.restore(make_engine(f"sqlite:///{target}"), tmp_path / "b.sqlite",
                           force=True)
    finally:
        app_connection.close()
    assert _sha(target) == before
