"""The settings of `rationale-audit campaign` commands (pydantic only): who rates which
rationales, how often, in what order, with which checks shown."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig

Assignment = Literal["balanced", "adaptive", "escalation"]


class CampaignCreateConfig(CommandConfig):
    """`rationale-audit campaign create NAME`: a campaign and its assignments."""

    COMMAND = "rationale-audit campaign create"

    run: list[int] = Field(
        description="Generation run id(s) whose rationales are rated (repeatable).",
        json_schema_extra={"repeatable": True})
    annotators: str = Field(description="Comma-separated usernames.")
    k: int = Field(2, ge=1, description="Independent ratings per rationale.")
    calibration: int = Field(0, ge=0, description="Items that every annotator rates first.")
    gold_share: float = Field(0.0, ge=0.0, description="Gold (flawed) items per original item.")
    guidelines_version: str = Field("1.0", description="Guidelines shown to raters.")
    show_grounding: bool = Field(False, description="Show automatic check results to raters.")
    seed: int = Field(0, description="Seed of the assignment and orders.")
    assignment: Assignment = Field(
        "balanced", description="balanced: k raters per item, fixed at creation; adaptive: "
        "after the calibration batch each rater gets the item whose rating is most "
        "informative (every item still reaches k; extras go to uncertain approval "
        "decisions); escalation: as adaptive, but the items the judge (--judge-run) is "
        "least sure of reach k first.")
    max_ratings: int | None = Field(
        None, description="adaptive: cap on ratings per item (default k + 2, at most the "
        "annotators).")
    judge_run: int | None = Field(
        None, description="adaptive: a judge run whose scores are the prior of each item's "
        "belief; escalation (required): the judge whose doubt orders the items.")
    claim_review: bool = Field(
        True, description="Raters give a verdict on every claim of each rationale "
        "(supported, partly supported, not in the record, contradicted, general knowledge) "
        "and mark lines it should have cited, beside the two scores.")
    rate_corrections: bool = Field(
        False, description="A correction an adjudicator accepts joins the campaign and is "
        "rated by k raters like any rationale.")

    def annotator_names(self) -> list[str]:
        return [a.strip() for a in self.annotators.split(",") if a.strip()]


class CampaignStatusConfig(CommandConfig):
    """`rationale-audit campaign status NAME`: progress per annotator."""

    COMMAND = "rationale-audit campaign status"

    as_json: bool = Field(False, description="Print JSON.", json_schema_extra={"flag": "--json"})


__all__ = ["Assignment", "CampaignCreateConfig", "CampaignStatusConfig"]
