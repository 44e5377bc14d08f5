"""Adjudication decisions: a reason that cannot be stored whole is refused, and nothing is
written (SQLite and PostgreSQL: the ``engine`` fixture runs both)."""

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import adjudication, campaigns, users
from annotation_db.models import ADJUDICATION_REASON_MAX_CHARS, Adjudication, AuditEvent
from tests.helpers import PASSWORD, seed_rationales


@pytest.fixture
def disputed(engine):
    """A campaign, an admin who adjudicates and one of the campaign's rationales."""
    run_id = seed_rationales(engine, n=4, gold=0)
    with Session(engine) as s:
        users.create_user(s, username="root", password=PASSWORD, role="admin")
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
        campaign = campaigns.create_campaign(s, name="pilot", run_ids=[run_id],
                                             annotators=["ann"], k=1, claim_review=False)
        rationale_id = campaigns.next_assignment(s, campaign,
                                                users.get_user(s, "ann")).rationale_id
    return engine, rationale_id


def _decide(engine, rationale_id, reason):
    with Session(engine) as s:
        return adjudication.decide(s, campaign=campaigns.get_campaign(s, "pilot"),
                                   rationale_id=rationale_id,
                                   adjudicator=users.get_user(s, "root"), decision="reject",
                                   accuracy=2, faithfulness=2, flags=[], reason=reason)


def _rows(engine) -> tuple[int, int]:
    with Session(engine) as s:
        return tuple(s.execute(select(func.count()).select_from(t)).scalar()
                     for t in (Adjudication, AuditEvent))


@pytest.mark.parametrize("reason, message", [
    ("z" * (ADJUDICATION_REASON_MAX_CHARS + 1),
     "the reason is 5,001 characters long; the limit is 5,000 characters"),
    ("z" * 10_000_000,
     "the reason is 10,000,000 characters long; the limit is 5,000 characters"),
    ("invented\x00 HbA1c",
     "the reason contains a NUL character (\\x00), which cannot be stored; remove it"),
], ids=["one-over", "ten-megabytes", "nul-byte"])
def test_a_reason_that_cannot_be_stored_whole_is_refused_and_nothing_is_written(
        disputed, reason, message):
    engine, rationale_id = disputed
    before = _rows(engine)
    with pytest.raises(ValueError) as caught:
        _decide(engine, rationale_id, reason)
    assert str(caught.value) == message
    assert _rows(engine) == before


def test_a_reason_at_the_limit_is_stored_whole(disputed):
    engine, rationale_id = disputed
    _decide(engine, rationale_id, "ü" * ADJUDICATION_REASON_MAX_CHARS)
    with Session(engine) as s:
        assert s.execute(select(Adjudication.comment)).scalar() == (
            "ü" * ADJUDICATION_REASON_MAX_CHARS)
