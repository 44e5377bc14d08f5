"""Backups taken while ratings are being written, and restores that refuse to clobber."""

import threading

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import backup, campaigns, migrate, users
from annotation_db.models import Annotation
from annotation_db.session import make_engine
from tests.helpers import PASSWORD, seed_rationales


def _campaign(url: str, n: int):
    engine = make_engine(url)
    migrate.upgrade(engine)
    run_id = seed_rationales(engine, n=n, gold=0)
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann"], k=1)
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
