"""The schema for the whole loop: patient → prompt → rationale → annotation → export → run.

Each table states its role in one comment. Uniqueness that the workflow relies on
(one rationale per patient per run and variant, one assignment per rater per
rationale, append-only annotation revisions, one content hash per dataset
version) is enforced by named database constraints, not by application code, so
a duplicate is impossible even when two processes race.

Enumerated values are stored as short strings guarded by CHECK constraints
rather than native enum types: they migrate the same way on SQLite and
PostgreSQL.
"""

import datetime as dt
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Index, MetaData, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from annotation_db.rubric import SCALE_MAX, SCALE_MIN

# Deterministic constraint names: Alembic needs them to alter tables on SQLite.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(nullable: bool = False) -> Any:
    return Field(default=None if nullable else ..., sa_type=JSON, nullable=nullable)


def _timestamp() -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), nullable=False)


def _one_of(column: str, enum: type[StrEnum], name: str | None = None) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=name or f"{column}_valid")


def _between(column: str, low: int, high: int) -> CheckConstraint:
    return CheckConstraint(
        f"{column} IS NULL OR ({column} >= {low} AND {column} <= {high})",
        name=f"{column}_range",
    )


# The longest text a person may write, one limit per kind, in characters. The domain
# functions refuse longer text (never cut it), the screens pass the limit to their text
# boxes and say it, and the columns are VARCHARs of that length; the two comment columns
# also carry a CHECK, since SQLite does not enforce VARCHAR lengths (`assignment` keeps
# none: rebuilding it on SQLite would cascade into its annotations).
COMMENT_MAX_CHARS = 5_000  # an annotation's comment
ADJUDICATION_REASON_MAX_CHARS = 5_000  # the reason an adjudicator gives for a decision
SKIP_REASON_MAX_CHARS = 500  # why a rater skipped an item


def text_problem(what: str, text: str, limit: int) -> str | None:
    """Why ``text`` cannot be stored as ``what``, or None: longer than ``limit``
    characters, or holding a NUL character (PostgreSQL cannot store one in text)."""
    if "\x00" in text:
        return f"the {what} contains a NUL character (\\x00), which cannot be stored; remove it"
    if len(text) > limit:
        return (f"the {what} is {len(text):,} characters long; the limit is {limit:,} "
                "characters")
    return None


def _max_chars(column: str, limit: int) -> CheckConstraint:
    return CheckConstraint(f"length({column}) <= {limit}", name=f"{column}_length")


class Split(StrEnum):
    train = "train"
    validation = "validation"
    test = "test"


class EvidenceKind(StrEnum):
    demographic = "demographic"
    genotype = "genotype"
    family_history = "family_history"
    diagnosis = "diagnosis"
    medication = "medication"
    measurement = "measurement"
    lifestyle = "lifestyle"
    symptom = "symptom"


class PromptMode(StrEnum):
    label_conditioned = "label-conditioned"
    label_blind = "label-blind"


class RationaleFormat(StrEnum):
    free = "free"
    stepwise = "stepwise"


class ClaimSource(StrEnum):
    step = "step"  # one step of a step-by-step rationale
    sentence = "sentence"  # one sentence of a free-form rationale


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    cancelled = "cancelled"


class RationaleStatus(StrEnum):
    ok = "ok"
    failed = "failed"


class Role(StrEnum):
    annotator = "annotator"
    adjudicator = "adjudicator"
    admin = "admin"
    researcher = "researcher"  # datasets, runs and results; never raters' identities


class JobKind(StrEnum):
    sft = "sft"
    fewshot = "fewshot"
    grid = "grid"


class AssignmentStatus(StrEnum):
    assigned = "assigned"
    submitted = "submitted"
    skipped = "skipped"
    reclaimed = "reclaimed"


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"


class CorrectionStatus(StrEnum):
    proposed = "proposed"  # waiting in the adjudicators' queue
    accepted = "accepted"  # a training target (exports' rationale_corrected and preference)
    rejected = "rejected"


# --- Cohort and patients -------------------------------------------------------


# A generated or imported population of patients, with the settings that made it.
class Cohort(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    source: str = Field(max_length=40, description="generator, synthea or jsonl")
    seed: int | None = None
    config: dict = _json()
    sampling: dict = _json(nullable=True)
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return f"Cohort(id={self.id}, name={self.name!r})"


# One participant: label, split, index date and the history as of the index date.
class Patient(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("cohort_id", "external_id"),
        _one_of("split", Split),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No separate index on cohort_id: the (cohort_id, external_id) unique index serves it.
    cohort_id: int = Field(foreign_key="cohort.id", ondelete="CASCADE")
    external_id: str = Field(max_length=64)
    split: str = Field(max_length=16)
    label: bool
    index_date: dt.date
    sex: str = Field(max_length=8)
    birth_date: dt.date | None = None
    age_at_index: int
    weight: float = Field(default=1.0, description="inverse sampling fraction")
    # Patient-level facts; the dated items of the history are the evidence_item rows.
    history: dict = _json()
    rendered_text: str = Field(sa_type=Text)
    # What happened after the index date (synthetic cohorts); never shown to a model.
    outcome: dict | None = _json(nullable=True)

    def __repr__(self) -> str:
        return f"Patient(id={self.id}, external_id={self.external_id!r}, label={self.label})"


# One citable item of a patient's record, e.g. "[E7] 2014-03-02 · Diagnosis · I10".
class EvidenceItem(SQLModel, table=True):
    __tablename__ = "evidence_item"
    __table_args__ = (
        UniqueConstraint("patient_id", "evidence_id"),
        _one_of("kind", EvidenceKind),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No separate index on patient_id: the (patient_id, evidence_id) unique index serves it.
    patient_id: int = Field(foreign_key="patient.id", ondelete="CASCADE")
    evidence_id: str = Field(max_length=16, description="stable id such as E7")
    kind: str = Field(max_length=20)
    code: str | None = Field(default=None, max_length=32)
    code_system: str | None = Field(default=None, max_length=16)
    description: str = Field(max_length=300)
    date: dt.date | None = None
    value: str | None = Field(default=None, max_length=64)
    unit: str | None = Field(default=None, max_length=32)
    role: str = Field(default="context", max_length=20)

    def __repr__(self) -> str:
        return f"EvidenceItem({self.evidence_id}, {self.kind}, {self.code})"


# --- Generation ----------------------------------------------------------------


# A versioned prompt; its id is recorded on every rationale written with it.
class PromptTemplate(SQLModel, table=True):
    __tablename__ = "prompt_template"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        UniqueConstraint("content_hash"),
        _one_of("mode", PromptMode),
        _one_of("format", RationaleFormat),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    version: str = Field(max_length=20)
    mode: str = Field(max_length=20)
    format: str = Field(max_length=10)
    body: str = Field(sa_type=Text)
    content_hash: str = Field(max_length=64)
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return f"PromptTemplate({self.name}@{self.version})"


# One generation job; its key hash makes re-running the same job resume it.
class GenerationRun(SQLModel, table=True):
    __tablename__ = "generation_run"
    __table_args__ = (UniqueConstraint("content_hash"), _one_of("status", RunStatus))

    id: int | None = Field(default=None, primary_key=True)
    content_hash: str = Field(max_length=64)
    cohort_id: int = Field(foreign_key="cohort.id", index=True)
    prompt_template_id: int = Field(foreign_key="prompt_template.id", index=True)
    model: str = Field(max_length=300)
    backend: str = Field(max_length=20)
    selection: dict = _json()
    sampling_params: dict = _json()
    seed: int
    status: str = Field(default=RunStatus.queued, max_length=16)
    stats: dict = _json(nullable=True)
    # With a server: its URL (no credentials), the served model's id and root, and its
    # max model length, as /v1/models reported them.
    served_by: dict | None = _json(nullable=True)
    created_at: datetime = _timestamp()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"GenerationRun(id={self.id}, model={self.model!r}, status={self.status})"


# A model's explanation for one patient, with the evidence it cites and its checks.
class Rationale(SQLModel, table=True):
    __table_args__ = (
        # `variant` is "original" for model output and the mutation name for gold copies.
        UniqueConstraint("run_id", "patient_id", "variant"),
        _one_of("format", RationaleFormat),
        _one_of("status", RationaleStatus),
        CheckConstraint(
            "grounding_score IS NULL OR (grounding_score >= 0 AND grounding_score <= 1)",
            name="grounding_score_range",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="generation_run.id", index=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    variant: str = Field(default="original", max_length=40)
    parent_id: int | None = Field(default=None, foreign_key="rationale.id")
    is_gold: bool = False
    format: str = Field(max_length=10)
    status: str = Field(default=RationaleStatus.ok, max_length=10)
    predicted_label: bool | None = None
    cited_evidence_ids: list = _json()
    text: str = Field(default="", sa_type=Text)
    steps: list | None = _json(nullable=True)
    raw_output: str = Field(default="", sa_type=Text)
    grounding: dict | None = _json(nullable=True)
    grounding_score: float | None = None
    attempts: int = 1
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return f"Rationale(id={self.id}, patient_id={self.patient_id}, variant={self.variant})"


# One statement of a rationale, judged on its own in claim review: a step of a
# step-by-step rationale, or a sentence of a free-form one, with the record items it
# cites. Written when the rationale is stored (annotation_db/claims.py) and never changed
# (database triggers refuse updates); a corrected rationale is a new rationale.
class Claim(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("rationale_id", "position"),
        _one_of("source", ClaimSource),
    )

    id: int | None = Field(default=None, primary_key=True)
    rationale_id: int = Field(foreign_key="rationale.id", index=True, ondelete="CASCADE")
    position: int  # 1, 2, … in reading order
    source: str = Field(max_length=10)
    text: str = Field(sa_type=Text)
    cited_ids: list = _json()  # evidence ids the claim itself cites, in order
    char_start: int | None = None  # where a sentence lies in the rationale's text
    char_end: int | None = None
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return f"Claim(rationale_id={self.rationale_id}, position={self.position})"


# --- People and annotation -------------------------------------------------------


# A person who logs in; the password is stored only as an argon2 hash.
class User(SQLModel, table=True):
    __tablename__ = "app_user"  # "user" is reserved in PostgreSQL
    __table_args__ = (UniqueConstraint("username"), _one_of("role", Role))

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64)
    password_hash: str = Field(max_length=200)
    role: str = Field(max_length=16)
    active: bool = True
    created_at: datetime = _timestamp()
    # Sessions signed in before this moment are refused (set by disable and reset).
    sessions_valid_after: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), nullable=True)

    def __repr__(self) -> str:
        return f"User({self.username!r}, role={self.role}, active={self.active})"


# Who did what, when, from where: appended to, never changed (triggers refuse it).
class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_at", "at"), Index("ix_audit_event_actor", "actor"))

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _timestamp()
    action: str = Field(max_length=40)
    actor: str | None = Field(default=None, max_length=64,
                              description="the account acting (or named, for a login)")
    address: str | None = Field(default=None, max_length=64,
                                description="client address, or 'cli' for the command line")
    target: str | None = Field(default=None, max_length=200)
    detail: dict = _json()

    def __repr__(self) -> str:
        return f"AuditEvent({self.at:%Y-%m-%d %H:%M:%S} {self.action} {self.actor})"


# A rating exercise: which rationales, how many ratings each, which guidelines.
class Campaign(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("name"),
        CheckConstraint("ratings_per_item >= 1", name="ratings_per_item_positive"),
        CheckConstraint("gold_share >= 0 AND gold_share <= 1", name="gold_share_range"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    ratings_per_item: int = 2
    gold_share: float = 0.0
    guidelines_version: str = Field(max_length=40)
    blind_grounding: bool = True
    settings: dict = _json(nullable=True)
    created_by: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return f"Campaign({self.name!r}, k={self.ratings_per_item})"


# A rationale taking part in a campaign (calibration and gold items are marked).
class CampaignItem(SQLModel, table=True):
    __tablename__ = "campaign_item"
    __table_args__ = (UniqueConstraint("campaign_id", "rationale_id"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True, ondelete="CASCADE")
    rationale_id: int = Field(foreign_key="rationale.id", index=True)
    is_calibration: bool = False
    is_gold: bool = False


# One rater's task to rate one rationale; never twice for the same pair.
class Assignment(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("campaign_id", "rationale_id", "user_id"),
        _one_of("status", AssignmentStatus),
        # A rater's next item and progress; abandoned-item reclaiming.
        Index("ix_assignment_queue", "campaign_id", "user_id", "status", "position"),
        Index("ix_assignment_open", "campaign_id", "status", "opened_at"),
        # Adaptive campaigns number each item's assignments: two raters handed the same
        # item at once cannot both take one slot, so the cap on ratings holds.
        Index("uq_assignment_slot", "campaign_id", "rationale_id", "slot", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True, ondelete="CASCADE")
    rationale_id: int = Field(foreign_key="rationale.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    position: int = Field(description="the rater's randomized order")
    status: str = Field(default=AssignmentStatus.assigned, max_length=16)
    skip_reason: str | None = Field(default=None, max_length=SKIP_REASON_MAX_CHARS)
    assigned_at: datetime = _timestamp()
    opened_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    completed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    slot: int | None = Field(default=None, description="the item's n-th assignment "
                                                       "(adaptive campaigns only)")
    # A skipped item that nobody else could rate comes back to its rater once, at the end
    # of their queue; this marks that it did, so a second skip is final.
    returned_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"Assignment(id={self.id}, user_id={self.user_id}, status={self.status})"


# A rater's scores for an assignment; revisions are appended, never overwritten.
class Annotation(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("assignment_id", "revision"),
        CheckConstraint("revision >= 1", name="revision_positive"),
        _between("accuracy", SCALE_MIN, SCALE_MAX),
        _between("faithfulness", SCALE_MIN, SCALE_MAX),
        _max_chars("comment", COMMENT_MAX_CHARS),
    )

    id: int | None = Field(default=None, primary_key=True)
    assignment_id: int = Field(foreign_key="assignment.id", index=True, ondelete="CASCADE")
    revision: int = 1
    accuracy: int
    faithfulness: int
    flags: list = _json()
    comment: str = Field(default="", max_length=COMMENT_MAX_CHARS)
    seconds_on_task: float | None = None
    simulated: bool = False
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return (
            f"Annotation(assignment_id={self.assignment_id}, rev={self.revision}, "
            f"acc={self.accuracy}, faith={self.faithfulness})"
        )


# A rater's unsent form for one assignment (scores, flags, comment as they stand), saved as
# they change and deleted when the rating is submitted. Only the Annotate screen reads it:
# agreement, exports, adjudication and the judge read annotations, never drafts.
class Draft(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("assignment_id"),
        _between("accuracy", SCALE_MIN, SCALE_MAX),
        _between("faithfulness", SCALE_MIN, SCALE_MAX),
        _max_chars("comment", COMMENT_MAX_CHARS),
    )

    id: int | None = Field(default=None, primary_key=True)
    assignment_id: int = Field(foreign_key="assignment.id", ondelete="CASCADE")
    accuracy: int | None = None
    faithfulness: int | None = None
    flags: list = _json()
    comment: str = Field(default="", max_length=COMMENT_MAX_CHARS)
    # {claim id: {"verdict": … or None, "should_cite": [ids]}}: claim review's unsent part
    claim_verdicts: dict | None = _json(nullable=True)
    updated_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return (f"Draft(assignment_id={self.assignment_id}, acc={self.accuracy}, "
                f"faith={self.faithfulness})")


# A rater's verdict on one claim, part of one annotation revision (a revision carries its
# own verdicts, all of them); "should cite" are record lines the rater marked as bearing on
# the claim (supporting or refuting it) that it does not cite.
class ClaimVerdict(SQLModel, table=True):
    __tablename__ = "claim_verdict"
    __table_args__ = (
        UniqueConstraint("annotation_id", "claim_id"),
        CheckConstraint("verdict IN ('supported', 'partly_supported', 'not_in_record', "
                        "'contradicted', 'general_knowledge')", name="verdict_valid"),
    )

    id: int | None = Field(default=None, primary_key=True)
    annotation_id: int = Field(foreign_key="annotation.id", index=True, ondelete="CASCADE")
    claim_id: int = Field(foreign_key="claim.id", index=True)
    verdict: str = Field(max_length=20)
    should_cite: list = _json()

    def __repr__(self) -> str:
        return f"ClaimVerdict(claim_id={self.claim_id}, verdict={self.verdict})"


# A clinician's corrected rationale for one item of a campaign: the corrected text is a new
# rationale (variant "correction-…", parent the original, its own claims), proposed by a
# rater and accepted or rejected by an adjudicator. Only accepted corrections reach exports.
class Correction(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("rationale_id"),
        _one_of("status", CorrectionStatus),
        _max_chars("note", COMMENT_MAX_CHARS),
        _max_chars("reason", ADJUDICATION_REASON_MAX_CHARS),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True, ondelete="CASCADE")
    source_rationale_id: int = Field(foreign_key="rationale.id", index=True)
    rationale_id: int = Field(foreign_key="rationale.id")  # the corrected text
    proposed_by: int = Field(foreign_key="app_user.id", index=True)
    note: str = Field(default="", max_length=COMMENT_MAX_CHARS)  # what the rater changed, why
    status: str = Field(default=CorrectionStatus.proposed, max_length=10)
    decided_by: int | None = Field(default=None, foreign_key="app_user.id")
    decided_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True),
                                        nullable=True)
    reason: str = Field(default="", max_length=ADJUDICATION_REASON_MAX_CHARS)
    created_at: datetime = _timestamp()

    def __repr__(self) -> str:
        return (f"Correction(id={self.id}, of={self.source_rationale_id}, "
                f"status={self.status})")


# An adjudicator's final word on a disputed rationale; it overrides the ratings.
class Adjudication(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("campaign_id", "rationale_id", "revision"),
        _one_of("decision", Decision),
        _between("accuracy", SCALE_MIN, SCALE_MAX),
        _between("faithfulness", SCALE_MIN, SCALE_MAX),
        _max_chars("comment", ADJUDICATION_REASON_MAX_CHARS),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True, ondelete="CASCADE")
    rationale_id: int = Field(foreign_key="rationale.id", index=True)
    adjudicator_id: int = Field(foreign_key="app_user.id", index=True)
    revision: int = 1
    decision: str = Field(max_length=10)
    accuracy: int | None = None
    faithfulness: int | None = None
    flags: list = _json()
    comment: str = Field(default="", max_length=ADJUDICATION_REASON_MAX_CHARS,
                         description="the adjudicator's reason")
    created_at: datetime = _timestamp()


# An automatic judge's pass over a campaign: which model, served how, with what prompt.
# Its scores live in `judge_rating`, never among the clinicians' annotations.
class JudgeRun(SQLModel, table=True):
    __tablename__ = "judge_run"
    __table_args__ = (UniqueConstraint("content_hash"), _one_of("status", RunStatus))

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True, ondelete="CASCADE")
    content_hash: str = Field(max_length=64, description="campaign, model, prompt, sampling")
    model: str = Field(max_length=300)
    backend: str = Field(max_length=20)
    served_by: dict | None = _json(nullable=True)
    settings: dict = _json()
    status: str = Field(default=RunStatus.queued, max_length=16)
    stats: dict | None = _json(nullable=True)
    created_at: datetime = _timestamp()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"JudgeRun(id={self.id}, model={self.model!r}, status={self.status})"


# One judge score per rationale: the sampled scores, and the expected score from the score
# tokens' probabilities where the backend gave them.
class JudgeRating(SQLModel, table=True):
    __tablename__ = "judge_rating"
    __table_args__ = (
        UniqueConstraint("judge_run_id", "rationale_id"),
        _between("accuracy", SCALE_MIN, SCALE_MAX),
        _between("faithfulness", SCALE_MIN, SCALE_MAX),
    )

    id: int | None = Field(default=None, primary_key=True)
    judge_run_id: int = Field(foreign_key="judge_run.id", index=True, ondelete="CASCADE")
    rationale_id: int = Field(foreign_key="rationale.id", index=True)
    accuracy: int
    faithfulness: int
    expected_accuracy: float | None = None
    expected_faithfulness: float | None = None
    probabilities: dict | None = _json(nullable=True)
    flags: list = _json()
    # claim review: {claim position: verdict}, one per claim of the rationale
    claim_verdicts: dict | None = _json(nullable=True)
    reason: str = Field(default="", sa_type=Text)
    raw_output: str = Field(default="", sa_type=Text)
    created_at: datetime = _timestamp()


# --- Measured faithfulness --------------------------------------------------------


# One evidence-ablation run: a scorer (a model spec, or a trained run's adapter) reading
# every rationale of a generation run with its cited evidence removed, kept alone, and
# random uncited evidence removed. Keyed by (generation run, scorer, settings), so a
# re-run resumes where it stopped.
class FaithfulnessRun(SQLModel, table=True):
    __tablename__ = "faithfulness_run"
    __table_args__ = (UniqueConstraint("content_hash"), _one_of("status", RunStatus))

    id: int | None = Field(default=None, primary_key=True)
    generation_run_id: int = Field(foreign_key="generation_run.id", index=True)
    content_hash: str = Field(max_length=64, description="generation run, scorer, settings")
    # the scorer's identity: model spec and weights checksum, or training run and adapter hash
    scorer: dict = _json()
    settings: dict = _json()
    status: str = Field(default=RunStatus.queued, max_length=16)
    stats: dict | None = _json(nullable=True)
    created_at: datetime = _timestamp()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"FaithfulnessRun(id={self.id}, generation_run_id={self.generation_run_id})"


# One rationale's evidence ablation: P(yes) on the full history, without the cited items,
# with only them, and with as many random uncited items removed (several draws); the
# ERASER quantities in the direction of the rationale's conclusion; the same per claim.
class FaithfulnessScore(SQLModel, table=True):
    __tablename__ = "faithfulness_score"
    __table_args__ = (UniqueConstraint("faithfulness_run_id", "rationale_id"),)

    id: int | None = Field(default=None, primary_key=True)
    faithfulness_run_id: int = Field(foreign_key="faithfulness_run.id", index=True,
                                     ondelete="CASCADE")
    rationale_id: int = Field(foreign_key="rationale.id", index=True)
    direction: int  # 1: the conclusion is yes (the probability read is P(yes)); 0: no
    shown_items: int  # evidence items in the budgeted history
    cited_shown: int  # cited items that the budgeted history shows (the ones removed)
    cited_missing: int  # cited ids the budgeted history does not show
    p_full: float
    p_without_cited: float | None = None
    p_only_cited: float | None = None
    p_random: list = _json()  # P(yes) with random uncited items removed, one per draw
    comprehensiveness: float | None = None  # drop in the conclusion's probability, cited out
    sufficiency: float | None = None  # drop with only the cited items kept (lower: sufficient)
    baseline: float | None = None  # mean drop with as many random uncited items out
    claims: list = _json()  # per claim citing shown items: position, cited, the same numbers
    created_at: datetime = _timestamp()


# --- Export and training ---------------------------------------------------------


# A published, immutable, content-addressed dataset of approved rationales.
class DatasetVersion(SQLModel, table=True):
    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("name"), UniqueConstraint("content_hash"))

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    content_hash: str = Field(max_length=64)
    manifest: dict = _json()
    path: str = Field(max_length=1000)
    created_by: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = _timestamp()
    deleted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"DatasetVersion({self.name!r}, {self.content_hash[:12]})"


# One SFT or few-shot run launched from a dataset version.
class TrainingRun(SQLModel, table=True):
    __tablename__ = "training_run"
    __table_args__ = (UniqueConstraint("config_hash"), _one_of("status", RunStatus))

    id: int | None = Field(default=None, primary_key=True)
    dataset_version_id: int | None = Field(
        default=None, foreign_key="dataset_version.id", index=True
    )
    kind: str = Field(max_length=20, description="sft or fewshot")
    target: str = Field(max_length=30)
    base_model: str = Field(max_length=300)
    config: dict = _json()
    config_hash: str = Field(max_length=64)
    run_dir: str = Field(max_length=1000)
    status: str = Field(default=RunStatus.queued, max_length=16)
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _timestamp()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"TrainingRun(id={self.id}, kind={self.kind}, target={self.target})"


# Test-set metrics of one run, with confidence intervals in `metrics`.
class EvaluationResult(SQLModel, table=True):
    __tablename__ = "evaluation_result"
    __table_args__ = (UniqueConstraint("training_run_id", "split", "scoring"),)

    id: int | None = Field(default=None, primary_key=True)
    training_run_id: int = Field(foreign_key="training_run.id", index=True, ondelete="CASCADE")
    split: str = Field(default=Split.test, max_length=16)
    # how the model was scored: auto (its target's own way), direct, generate or sampled
    scoring: str = Field(default="auto", max_length=16)
    n: int
    auroc: float | None = None
    auprc: float | None = None
    brier: float | None = None
    metrics: dict = _json()
    predictions_path: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _timestamp()


# A training job launched from the app: queued → running → finished / failed / cancelled.
class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (_one_of("status", RunStatus), _one_of("kind", JobKind))

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    config: dict = _json()
    command: str = Field(sa_type=Text)
    status: str = Field(default=RunStatus.queued, max_length=16, index=True)
    created_by: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = _timestamp()
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    pid: int | None = None
    log_path: str | None = Field(default=None, max_length=1000)
    error: str | None = Field(default=None, sa_type=Text)
    executor: str = Field(default="local", max_length=16,
                          description="local (a process on this host) or ray (a Ray job)")
    external_id: str | None = Field(default=None, max_length=200,
                                    description="the Ray job's submission id")
    token: str | None = Field(default=None, max_length=64,
                              description="random token given to the job's process at launch; "
                                          "a leftover process is adopted only if it carries it")
    resumed_from: int | None = Field(default=None, foreign_key="job.id")
    training_run_id: int | None = Field(default=None, foreign_key="training_run.id")

    def __repr__(self) -> str:
        return f"Job(id={self.id}, kind={self.kind}, status={self.status})"
