"""Storing cohorts: one transaction, the same records back, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import cohorts as crud
from annotation_db.models import Cohort, EvidenceItem, Patient
from annotation_db.render import render_text
from generation.cohort import CohortSimulator, generate
from generation.cohort_config import CohortConfig


@pytest.fixture(scope="module")
def records():
    return generate(CohortConfig(n=60, seed=21))[0]


def _store(engine, records, name="c1"):
    return crud.store_cohort(engine, name=name, source="test", seed=21, config={}, sampling=None,
                             batches=crud.in_memory_batches(records, render_text, size=25))


def _counts(engine):
    with Session(engine) as session:
        return tuple(session.execute(select(func.count()).select_from(t)).scalar()
                     for t in (Cohort, Patient, EvidenceItem))


def test_stored_cohort_reads_back_as_the_same_records(engine, records):
    cohort_id = _store(engine, records)
    assert list(crud.iter_records(engine, cohort_id, batch=17)) == records
    with Session(engine) as session:
        patient = crud.get_patient(session, cohort_id, records[5]["external_id"])
        assert crud.patient_record(session, patient) == records[5]
        assert patient.rendered_text == render_text(records[5])
        summary = crud.cohort_summary(session, cohort_id)
    assert sum(v["patients"] for v in summary.values()) == 60
    assert sum(v["cases"] for v in summary.values()) == 30


def test_parallel_generation_stores_the_same_cohort_as_serial(engine):
    cfg = CohortConfig(n=120, seed=4)
    plan = CohortSimulator(cfg).plan()
    serial = crud.store_cohort(engine, name="serial", source="t", seed=4, config={},
                               sampling=None, batches=plan.row_batches(render_text, 1, size=50))
    parallel = crud.store_cohort(engine, name="parallel", source="t", seed=4, config={},
                                 sampling=None, batches=plan.row_batches(render_text, 2, size=50))
    assert list(crud.iter_records(engine, serial)) == list(crud.iter_records(engine, parallel))


def test_duplicate_cohort_name_is_refused_and_changes_nothing(engine, records):
    _store(engine, records)
    before = _counts(engine)
    with pytest.raises(crud.CohortError, match="a cohort named 'c1' already exists"):
        _store(engine, records)
    assert _counts(engine) == before


def test_a_failure_midway_leaves_no_trace(engine, records):
    def failing(cohort_id, first_id):
        batches = crud.in_memory_batches(records, render_text, size=20)(cohort_id, first_id)
        yield next(batches)
        raise RuntimeError("disk on fire")

    before = _counts(engine)
    with pytest.raises(RuntimeError, match="disk on fire"):
        crud.store_cohort(engine, name="half", source="t", seed=0, config={}, sampling=None,
                          batches=failing)
    assert _counts(engine) == before


def test_a_second_cohort_gets_fresh_patient_ids(engine, records):
    first = _store(engine, records, "first")
    second = _store(engine, records, "second")
    assert list(crud.iter_records(engine, second)) == records
    with Session(engine) as session:
        ids = session.execute(select(Patient.id).where(Patient.cohort_id.in_([first, second])))
        assert len(set(ids.scalars())) == 120


def test_unknown_cohort_names_the_known_ones(engine, records):
    _store(engine, records, "alpha")
    with Session(engine) as session, pytest.raises(crud.CohortError,
                                                   match="no cohort named 'beta'; known.*alpha"):
        crud.get_cohort(session, "beta")
