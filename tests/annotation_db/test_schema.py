"""The schema, on SQLite and on PostgreSQL: migrations, a full round trip, constraints.

Every test here runs twice, once per database (see the `database_url` fixture).
"""

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session, SQLModel, select

from annotation_db import migrate
from annotation_db.models import (
    ADJUDICATION_REASON_MAX_CHARS,
    COMMENT_MAX_CHARS,
    Adjudication,
    Annotation,
    Assignment,
    Campaign,
    CampaignItem,
    Cohort,
    DatasetVersion,
    EvaluationResult,
    EvidenceItem,
    GenerationRun,
    Patient,
    PromptTemplate,
    Rationale,
    TrainingRun,
    User,
)

EVERY_TABLE = {
    "cohort", "patient", "evidence_item", "prompt_template", "generation_run", "rationale",
    "app_user", "campaign", "campaign_item", "assignment", "annotation", "adjudication",
    "dataset_version", "training_run", "evaluation_result",
}


def test_upgrade_from_empty_creates_every_table_at_head(empty_engine):
    assert migrate.current_revision(empty_engine) is None
    migrate.upgrade(empty_engine)
    assert migrate.current_revision(empty_engine) == migrate.head_revision(empty_engine)
    assert EVERY_TABLE <= set(inspect(empty_engine).get_table_names())


def test_migrations_match_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], "models changed without a migration: run alembic revision --autogenerate"


def test_downgrade_to_base_and_upgrade_again(engine):
    migrate.downgrade(engine, "base")
    assert not EVERY_TABLE & set(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert EVERY_TABLE <= set(inspect(engine).get_table_names())


def _loop(session: Session) -> dict:
    """One of everything, linked as the real pipeline links them."""
    cohort = Cohort(name="c1", source="generator", seed=7, config={"n": 2})
    session.add(cohort)
    session.flush()
    patient = Patient(
        cohort_id=cohort.id, external_id="P0001", split="train", label=True,
        index_date=dt.date(2010, 5, 1), sex="F", age_at_index=63,
        history={"items": [{"id": "E1", "code": "I10"}]},
        rendered_text="[E1] 2004-03-02 · Diagnosis · Essential hypertension (I10)",
    )
    session.add(patient)
    session.flush()
    item = EvidenceItem(patient_id=patient.id, evidence_id="E1", kind="diagnosis", code="I10",
                        code_system="ICD-10", description="Essential hypertension",
                        date=dt.date(2004, 3, 2))
    prompt = PromptTemplate(name="explain", version="1", mode="label-conditioned",
                            format="free", body="Explain {history}", content_hash="a" * 64)
    user = User(username="dr.rao", password_hash="argon2$x", role="annotator")
    judge = User(username="dr.lee", password_hash="argon2$y", role="adjudicator")
    session.add_all([item, prompt, user, judge])
    session.flush()
    run = GenerationRun(content_hash="b" * 64, cohort_id=cohort.id,
                        prompt_template_id=prompt.id, model="bundled:smollm2-135m-instruct",
                        backend="vllm", selection={"split": "train"},
                        sampling_params={"temperature": 0}, seed=0)
    session.add(run)
    session.flush()
    rationale = Rationale(run_id=run.id, patient_id=patient.id, format="free",
                          predicted_label=True, cited_evidence_ids=["E1"],
                          text="Hypertension since 2004 [E1].", raw_output="{}",
                          grounding={"cited_ids_exist": True}, grounding_score=1.0)
    campaign = Campaign(name="pilot", guidelines_version="1.0", created_by=judge.id)
    session.add_all([rationale, campaign])
    session.flush()
    assignment = Assignment(campaign_id=campaign.id, rationale_id=rationale.id,
                            user_id=user.id, position=0)
    session.add_all([assignment, CampaignItem(campaign_id=campaign.id, rationale_id=rationale.id)])
    session.flush()
    session.add_all([
        Annotation(assignment_id=assignment.id, revision=1, accuracy=4, faithfulness=5,
                   flags=[], comment="fine", seconds_on_task=31.5),
        Annotation(assignment_id=assignment.id, revision=2, accuracy=3, faithfulness=5,
                   flags=["missed_key_risk_factor"], comment="revised"),
        Adjudication(campaign_id=campaign.id, rationale_id=rationale.id,
                     adjudicator_id=judge.id, decision="approve", accuracy=4, faithfulness=5,
                     flags=[]),
    ])
    version = DatasetVersion(name="v1", content_hash="c" * 64, manifest={"counts": {"train": 1}},
                             path="exports/v1")
    session.add(version)
    session.flush()
    training = TrainingRun(dataset_version_id=version.id, kind="sft", target="label",
                           base_model="bundled:smollm2-135m-instruct", config={"lora_r": 8},
                           config_hash="d" * 64, run_dir="runs/x")
    session.add(training)
    session.flush()
    session.add(EvaluationResult(training_run_id=training.id, n=10, auroc=0.71, auprc=0.4,
                                 brier=0.2, metrics={"auroc_ci": [0.6, 0.8]}))
    session.commit()
    return {"patient": patient.id, "rationale": rationale.id, "assignment": assignment.id,
            "campaign": campaign.id, "user": user.id, "run": run.id, "cohort": cohort.id}


def test_round_trip_of_the_whole_loop(engine):
    with Session(engine) as session:
        ids = _loop(session)
    with Session(engine) as session:
        patient = session.get(Patient, ids["patient"])
        assert patient.index_date == dt.date(2010, 5, 1)
        assert patient.history == {"items": [{"id": "E1", "code": "I10"}]}
        evidence = session.exec(select(EvidenceItem)).one()
        assert (evidence.evidence_id, evidence.date) == ("E1", dt.date(2004, 3, 2))
        rationale = session.get(Rationale, ids["rationale"])
        assert rationale.cited_evidence_ids == ["E1"] and rationale.grounding_score == 1.0
        assert rationale.variant == "original" and rationale.status == "ok"
        revisions = session.exec(
            select(Annotation.revision, Annotation.accuracy)
            .where(Annotation.assignment_id == ids["assignment"]).order_by(Annotation.revision)
        ).all()
        assert [tuple(r) for r in revisions] == [(1, 4), (2, 3)]
        assert session.exec(select(EvaluationResult)).one().metrics == {"auroc_ci": [0.6, 0.8]}
        created = session.exec(select(Campaign)).one().created_at
        assert created.tzinfo is not None or engine.dialect.name == "sqlite"


def _count(engine, table) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


def _violates(engine, make_row) -> None:
    with Session(engine) as session:
        session.add(make_row())
        with pytest.raises(IntegrityError):
            session.commit()


@pytest.mark.parametrize(
    "table, make_row",
    [
        (Patient, lambda ids: Patient(cohort_id=ids["cohort"], external_id="P0001", split="test",
                                      label=False, index_date=dt.date(2011, 1, 1), sex="M",
                                      age_at_index=50, history={}, rendered_text="")),
        (EvidenceItem, lambda ids: EvidenceItem(patient_id=ids["patient"], evidence_id="E1",
                                                kind="diagnosis", description="again")),
        (Assignment, lambda ids: Assignment(campaign_id=ids["campaign"],
                                            rationale_id=ids["rationale"],
                                            user_id=ids["user"], position=5)),
        (Annotation, lambda ids: Annotation(assignment_id=ids["assignment"], revision=2,
                                            accuracy=1, faithfulness=1, flags=[])),
        (Rationale, lambda ids: Rationale(run_id=ids["run"], patient_id=ids["patient"],
                                          format="free", cited_evidence_ids=[])),
        (User, lambda ids: User(username="dr.rao", password_hash="h", role="admin")),
    ],
    ids=["patient-twice-in-cohort", "evidence-id-twice", "same-rater-same-rationale",
         "annotation-revision-overwrite", "rationale-twice-per-run", "username-taken"],
)
def test_duplicates_are_impossible(engine, table, make_row):
    with Session(engine) as session:
        ids = _loop(session)
    before = _count(engine, table)
    _violates(engine, lambda: make_row(ids))
    assert _count(engine, table) == before, "a rejected write must change nothing"


@pytest.mark.parametrize(
    "make_row",
    [
        lambda ids: Annotation(assignment_id=ids["assignment"], revision=3, accuracy=6,
                               faithfulness=3, flags=[]),
        lambda ids: Annotation(assignment_id=ids["assignment"], revision=3, accuracy=3,
                               faithfulness=0, flags=[]),
        lambda ids: User(username="x", password_hash="h", role="superuser"),
        lambda ids: Patient(cohort_id=ids["cohort"], external_id="P9", split="holdout",
                            label=False, index_date=dt.date(2011, 1, 1), sex="M",
                            age_at_index=50, history={}, rendered_text=""),
        lambda ids: Rationale(run_id=ids["run"], patient_id=10_000, format="free",
                              cited_evidence_ids=[]),
        lambda ids: Campaign(name="bad-k", ratings_per_item=0, guidelines_version="1"),
    ],
    ids=["accuracy-6", "faithfulness-0", "unknown-role", "unknown-split",
         "rationale-for-missing-patient", "campaign-k-0"],
)
def test_invalid_values_are_rejected_by_the_database(engine, make_row):
    with Session(engine) as session:
        ids = _loop(session)
    _violates(engine, lambda: make_row(ids))


@pytest.mark.parametrize(
    "make_row",
    [
        lambda ids: Annotation(assignment_id=ids["assignment"], revision=3, accuracy=3,
                               faithfulness=3, flags=[], comment="c" * (COMMENT_MAX_CHARS + 1)),
        lambda ids: Adjudication(campaign_id=ids["campaign"], rationale_id=ids["rationale"],
                                 adjudicator_id=ids["user"], revision=2, decision="reject",
                                 flags=[], comment="r" * (ADJUDICATION_REASON_MAX_CHARS + 1)),
    ],
    ids=["annotation-comment", "adjudication-reason"],
)
def test_text_over_its_limit_is_rejected_by_the_database(engine, make_row):
    with Session(engine) as session:
        ids = _loop(session)
    table = type(make_row(ids))
    before = _count(engine, table)
    with Session(engine) as session:
        session.add(make_row(ids))
        # SQLite: the CHECK on length; PostgreSQL: the VARCHAR's length first
        with pytest.raises((IntegrityError, DataError)):
            session.commit()
    assert _count(engine, table) == before


def test_an_upgrade_that_would_have_to_cut_text_is_refused_and_changes_nothing(engine):
    with Session(engine) as session:
        _loop(session)
    migrate.downgrade(engine, "0010_job_token")
    with engine.begin() as conn:  # as a 10 MB reason was stored before text had a limit
        conn.execute(text("UPDATE adjudication SET comment = :long"), {"long": "r" * 10_000_000})
    with pytest.raises(migrate.MigrationRefused) as caught:
        migrate.upgrade(engine)
    assert str(caught.value) == (
        "cannot upgrade to 0011_text_limits: 1 row(s) hold text over the new limits "
        "(annotation.comment 5,000, adjudication.comment 5,000 characters): adjudication 1 "
        "(10,000,000 characters); text is never cut, so shorten these rows, then run "
        "`rationale-audit db upgrade` again")
    assert migrate.current_revision(engine) == "0010_job_token"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT length(comment) FROM adjudication")).scalar() == 10**7
    with engine.begin() as conn:
        conn.execute(text("UPDATE adjudication SET comment = 'shortened'"))
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision(engine)
