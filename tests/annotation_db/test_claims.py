"""Claims: every rationale stored is split into the statements a clinician judges, in the
same transaction; claims never change; databases from before claims get theirs."""

import pytest
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from annotation_db import claims, migrate
from annotation_db.models import Claim, Rationale
from tests.helpers import seed_rationales

FREE = ("At 78 years of age, age is the strongest background factor [E1]. The record shows "
        "memory complaints, e.g. repeated questions, noted by Dr. Patel [E4] [E7]. Together "
        "these make a diagnosis within five years likely.")
STEPS = [{"step": "Age 78 is the strongest background factor.", "evidence": ["E1"]},
         {"step": "Memory complaints are recorded [E7].", "evidence": ["E4"]},
         {"step": "A diagnosis within five years is likely.", "evidence": []}]


def test_a_free_form_rationale_gives_one_claim_per_sentence_with_its_inline_citations():
    out = claims.split("free", FREE, None)
    assert [c["text"] for c in out] == [
        "At 78 years of age, age is the strongest background factor [E1].",
        "The record shows memory complaints, e.g. repeated questions, noted by Dr. Patel "
        "[E4] [E7].",  # "e.g." and "Dr." do not end a sentence
        "Together these make a diagnosis within five years likely."]
    assert [c["cited_ids"] for c in out] == [["E1"], ["E4", "E7"], []]
    assert [c["position"] for c in out] == [1, 2, 3] and {c["source"] for c in out} == {
        "sentence"}
    assert all(FREE[c["char_start"]:c["char_end"]] == c["text"] for c in out)


def test_a_step_by_step_rationale_gives_one_claim_per_step_citing_its_list_and_text():
    out = claims.split("stepwise", "1. ignored\n2. ignored", STEPS)
    assert [(c["position"], c["source"], c["cited_ids"]) for c in out] == [
        (1, "step", ["E1"]), (2, "step", ["E4", "E7"]), (3, "step", [])]
    assert out[1]["text"] == "Memory complaints are recorded [E7]."
    assert out[0]["char_start"] is None


@pytest.mark.parametrize("fmt, text_, steps", [("free", "", None), ("free", "   ", None),
                                               ("stepwise", "", [{"step": " ",
                                                                   "evidence": []}])])
def test_nothing_to_judge_gives_no_claims(fmt, text_, steps):
    assert claims.split(fmt, text_, steps) == []


def test_storing_a_rationale_stores_its_claims_in_the_same_transaction(engine):
    run_id = seed_rationales(engine, n=2, gold=0)
    with Session(engine) as s:
        first = s.execute(select(Rationale).where(Rationale.run_id == run_id)).scalars().first()
        assert [(c.text, c.cited_ids) for c in claims.claims_of(s, first.id)] == [
            (first.text, ["E1"])]
        added = Rationale(run_id=run_id, patient_id=first.patient_id, variant="v2",
                          format="stepwise", cited_evidence_ids=["E1", "E4", "E9"],
                          text="1. …", steps=STEPS)
        s.add(added)
        s.flush()
        assert len(claims.claims_of(s, added.id)) == 3
        assert claims.rationale_level_ids(added, claims.claims_of(s, added.id)) == ["E9"]
        s.rollback()  # the rationale is not stored: neither are its claims
        assert s.execute(select(func.count()).select_from(Claim).where(
            Claim.rationale_id == added.id)).scalar() == 0


def test_claims_cannot_be_changed(engine):
    seed_rationales(engine, n=2, gold=0)
    with engine.connect() as conn, pytest.raises(DBAPIError, match="immutable"):
        conn.execute(update(Claim).values(text="something else"))
        conn.commit()


def test_rationales_inserted_in_bulk_get_claims_from_backfill(engine):
    run_id = seed_rationales(engine, n=3, gold=0)
    with Session(engine) as s:
        pid = s.execute(select(Rationale.patient_id)).scalars().first()
        s.execute(insert(Rationale), [  # a core INSERT skips the ORM's hook
            {"run_id": run_id, "patient_id": pid, "variant": f"bulk{i}", "format": "free",
             "cited_evidence_ids": [], "text": FREE, "status": "ok", "is_gold": False,
             "attempts": 1, "raw_output": ""} for i in range(2)])
        s.commit()
        assert claims.backfill(s) == 2
        assert claims.backfill(s) == 0  # nothing left to do
        assert s.execute(select(func.count()).select_from(Claim)).scalar() == 3 + 2 * 3


def test_a_database_from_before_claims_gets_them_on_upgrade(empty_engine):
    migrate.upgrade(empty_engine, "0012_drafts")
    # rationales stored by the code of that time: no claims hook (and no claim table)
    event.remove(OrmSession, "after_flush", claims._claims_for_new_rationales)
    try:
        run_id = seed_rationales(empty_engine, n=2, gold=1)
    finally:
        event.listen(OrmSession, "after_flush", claims._claims_for_new_rationales)
    migrate.upgrade(empty_engine)
    with Session(empty_engine) as s:
        stored = s.execute(select(Rationale).where(Rationale.run_id == run_id)).scalars().all()
        assert len(stored) == 3
        for r in stored:
            assert [(c.text, c.cited_ids) for c in claims.claims_of(s, r.id)] == [
                (r.text, claims.cited(r.text))]
