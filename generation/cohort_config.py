"""The settings of `rationale-audit cohort` commands (pydantic and the standard library).

:class:`CohortConfig` says how a synthetic cohort is made and is hashed with it; the
other classes are the options of the commands that read, check or write a stored
cohort. Kept apart from :mod:`generation.cohort` so that the CLI and the Runs screen
read the flags without importing the simulator (numpy, the parameter files).
"""

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from annotation_db.command_config import CommandConfig


class CohortConfig(CommandConfig):
    """Settings of `rationale-audit cohort generate`."""

    COMMAND = "rationale-audit cohort generate"

    name: str = Field("synthetic", description="cohort name, unique in the database "
                      "(`cohort generate` without one: synthetic-s{seed}-n{n})")
    n: int = Field(5000, ge=1, le=5_000_000, description="number of patients")
    seed: int = Field(7, description="everything is deterministic given the seed")
    mode: Literal["population", "case-enriched"] = Field(
        "case-enriched", description="population: everyone simulated is kept; "
        "case-enriched: cases and controls are sampled to --case-ratio, and both sampling "
        "fractions are recorded")
    case_ratio: str = Field("1:1", description="cases:controls in case-enriched mode")
    age_min: int = Field(40, ge=18, le=90, description="youngest age at the index date")
    age_max: int = Field(70, ge=19, le=95, description="oldest age at the index date")
    index_start: dt.date = Field(dt.date(2006, 3, 13),
                                 description="first possible index (recruitment) date")
    index_end: dt.date = Field(dt.date(2010, 10, 1),
                               description="last possible index (recruitment) date")
    horizon_years: float = Field(5.0, gt=0, le=20, description="years after the index date "
                                 "in which a diagnosis makes the label positive")
    prediction_gap_days: int = Field(0, ge=0, le=3650, description="no items this close to index")
    history_years: float = Field(15.0, gt=1, le=40, description="years of history written "
                                 "before the index date")
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.1, 0.2), description="train, validation and test shares of the patients")

    @field_validator("case_ratio")
    @classmethod
    def _ratio(cls, value: str) -> str:
        parts = value.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ValueError("case_ratio must look like 1:1 or 1:3 (positive whole numbers)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "CohortConfig":
        if self.age_min >= self.age_max:
            raise ValueError("age_min must be below age_max")
        if self.index_start > self.index_end:
            raise ValueError("index_start must not be after index_end")
        if abs(sum(self.split_fractions) - 1) > 1e-9 or min(self.split_fractions) < 0:
            raise ValueError("split_fractions must be three non-negative shares summing to 1")
        return self

    @property
    def case_share(self) -> float:
        cases, controls = (int(p) for p in self.case_ratio.split(":"))
        return cases / (cases + controls)


class CohortGenerateOptions(BaseModel):
    """`cohort generate`'s options that never change the cohort, so they stay out of
    :class:`CohortConfig` and its hash."""

    workers: int = Field(2, description="Processes that build histories while one writes.")


class StoredCohortConfig(CommandConfig):
    """Base of the commands that read one stored cohort."""

    cohort: str | None = Field(None, description="Cohort name (default: the newest cohort).")


class CohortValidateConfig(StoredCohortConfig):
    """`rationale-audit cohort validate`: a cohort checked against its targets."""

    COMMAND = "rationale-audit cohort validate"

    out: str = Field("reports/cohort", description="Folder for report.html and .json.")


class CohortExportConfig(StoredCohortConfig):
    """`rationale-audit cohort export PATH`: a cohort as JSONL."""

    COMMAND = "rationale-audit cohort export"

    format: Literal["jsonl"] = Field("jsonl", description="Only jsonl for now.")


class CohortShowConfig(StoredCohortConfig):
    """`rationale-audit cohort show PATIENT`: one history as a clinician reads it."""

    COMMAND = "rationale-audit cohort show"

    compact: bool = Field(False, description="Show the compact prompt rendering instead.")
    budget: int | None = Field(None, description="Token budget for --compact.")


class CohortImportConfig(CommandConfig):
    """`rationale-audit cohort import PATH`: a cohort from JSONL or a Synthea export."""

    COMMAND = "rationale-audit cohort import"

    format: Literal["jsonl", "synthea"] = Field(
        description="jsonl: the documented record format; synthea: a Synthea output/csv "
        "folder.")
    name: str = Field(description="Name of the new cohort.")
    seed: int = Field(0, description="Seed for splits of records that have none.")
    index_date: str = Field("2010-01-01", description="Synthea: the index date for "
                            "everyone (YYYY-MM-DD).")
    age_min: int = Field(40, description="Synthea: youngest age at the index date.")
    age_max: int = Field(70, description="Synthea: oldest age at the index date.")


__all__ = ["CohortConfig", "CohortExportConfig", "CohortGenerateOptions", "CohortImportConfig",
           "CohortShowConfig", "CohortValidateConfig", "StoredCohortConfig"]
