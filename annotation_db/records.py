"""The patient record: one documented format for generated, imported and exported cohorts.

A record is what a clinician would see on the index (baseline) date: demographics,
genotype, family history, lifestyle, and dated diagnoses, medications, measurements
and symptoms — each item with a stable evidence id (``E1``, ``E2``, …) that rationales
cite. Nothing in ``items`` may be dated after the index date. ``outcome`` holds what
happened afterwards (for synthetic cohorts); it is never rendered into a prompt.

The JSONL format read by ``rationale-audit cohort import --format jsonl`` and written
by ``cohort export`` is one :class:`PatientRecord` per line (see docs/cohort.md).
"""

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ItemKind = Literal[
    "demographic", "genotype", "family_history", "diagnosis", "medication",
    "measurement", "lifestyle", "symptom",
]
ItemRole = Literal["risk_factor", "possible_prodrome", "context"]

KIND_ORDER = {
    "demographic": 0, "genotype": 1, "family_history": 2, "lifestyle": 3, "diagnosis": 4,
    "symptom": 5, "medication": 6, "measurement": 7,
}
KIND_LABEL = {
    "demographic": "Demographic", "genotype": "Genotype", "family_history": "Family history",
    "diagnosis": "Diagnosis", "medication": "Medication", "measurement": "Measurement",
    "lifestyle": "Lifestyle", "symptom": "Symptom",
}


class HistoryItem(BaseModel):
    """One citable item of a record."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^E[1-9][0-9]*$", description="evidence id")
    kind: ItemKind
    date: dt.date | None = None
    code: str | None = Field(default=None, max_length=32)
    code_system: str | None = Field(default=None, max_length=16)
    description: str = Field(min_length=1, max_length=300)
    value: str | None = Field(default=None, max_length=64)
    unit: str | None = Field(default=None, max_length=32)
    role: ItemRole = "context"


class Outcome(BaseModel):
    """What happened after the index date (synthetic cohorts); never shown to a model."""

    model_config = ConfigDict(extra="forbid")

    adrd_date: dt.date | None = None
    adrd_code: str | None = None
    death_date: dt.date | None = None
    expected_risk: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)


class PatientRecord(BaseModel):
    """A patient as of the index date, with a five-year ADRD label."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(min_length=1, max_length=64)
    sex: Literal["F", "M"]
    birth_date: dt.date
    index_date: dt.date
    # Strict: a JSON true or false only ("yes", 1 or "false" would be guessed at).
    label: bool = Field(strict=True,
                        description="ADRD diagnosed within the horizon after the index date")
    split: Literal["train", "validation", "test"] | None = None
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False,
                          description="inverse sampling fraction (finite)")
    items: list[HistoryItem]
    outcome: Outcome | None = None

    @field_validator("items")
    @classmethod
    def _unique_ids(cls, items: list[HistoryItem]) -> list[HistoryItem]:
        ids = [item.id for item in items if item.id is not None]
        if len(ids) != len(set(ids)):
            raise ValueError("evidence ids must be unique within a patient")
        return items

    @model_validator(mode="after")
    def _nothing_after_index(self) -> "PatientRecord":
        late = [item for item in self.items if item.date and item.date > self.index_date]
        if late:
            first = late[0]
            raise ValueError(
                f"item {first.id or first.description!r} is dated {first.date}, after the "
                f"index date {self.index_date}; a history may only hold what was known then"
            )
        if self.birth_date >= self.index_date:
            raise ValueError("birth_date must be before index_date")
        return self

    @property
    def age_at_index(self) -> int:
        return age_on(self.birth_date, self.index_date)


DAYS_PER_YEAR = 365.25


def years_between(start: dt.date | str, end: dt.date | str) -> float:
    """Fractional years from ``start`` to ``end`` (an age, when ``start`` is the birth date)."""
    return (_as_date(end) - _as_date(start)).days / DAYS_PER_YEAR


def age_on(birth: dt.date | str, day: dt.date | str) -> int:
    birth, day = _as_date(birth), _as_date(day)
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _as_date(value: dt.date | str) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def sort_key(item: dict) -> tuple:
    date = item.get("date")  # ISO text or a date; both order chronologically
    return (date is not None, str(date or ""), KIND_ORDER[item["kind"]])


def assign_evidence_ids(items: list[dict]) -> list[dict]:
    """Order items chronologically (undated first) and number them E1, E2, ….

    The sort is stable: items of one kind on one day keep the order they were given in.
    """
    items.sort(key=sort_key)
    for number, item in enumerate(items, start=1):
        item["id"] = f"E{number}"
    return items
