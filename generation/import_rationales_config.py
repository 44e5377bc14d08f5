"""The settings of `rationale-audit generate import FILE` (pydantic and the standard
library).

Kept apart from :mod:`generation.import_rationales` so the CLI loads without the
database code; the fields feed an import run's identity, so they are neither added,
renamed nor re-defaulted."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig


class ImportConfig(CommandConfig):
    """`rationale-audit generate import FILE`: rationales written by another system."""

    COMMAND = "rationale-audit generate import FILE"

    model: str = Field(description="the model that wrote the rationales, as you name it "
                                   "(recorded as the run's model)", min_length=1, max_length=300)
    file_format: Literal["jsonl", "openai-batch"] = Field(
        "jsonl", description="jsonl: one output-schema object with patient_id per line; "
        "openai-batch: an OpenAI Batch API output file (custom_id = patient id)")
    format: Literal["free", "stepwise"] = Field("free", description="the rationales' format")
    mode: Literal["label-conditioned", "label-blind"] = Field(
        "label-blind", description="whether the writer was told the outcome")
    cohort: str | None = Field(None, description="the cohort the patient ids belong to "
                                                 "(default: the newest)")
    skip_invalid: bool = Field(False, description="import the good lines and write the "
                                                  "refused ones to FILE.refused.jsonl")


__all__ = ["ImportConfig"]
