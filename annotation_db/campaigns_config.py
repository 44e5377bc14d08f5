"""The settings of `rationale-audit campaign` commands (pydantic only): who rates which
rationales, how often, in what order, with which checks shown.

These classes are also the single source of a campaign's defaults:
:func:`annotation_db.campaigns.create_campaign` reads them through
:func:`campaign_default`, so the command line and the library cannot drift apart.
"""

from typing import Any, Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig

Assignment = Literal["balanced", "adaptive", "escalation"]


class CampaignDesign(CommandConfig):
    """What every campaign is made of, whoever rates it: the rated runs, ratings per
    item, the calibration batch, gold items, the seed and claim review."""

    run: list[int] = Field(
        description="Generation run id(s) whose rationales are rated (repeatable).",
        json_schema_extra={"repeatable": True})
    k: int = Field(2, ge=1, description="Independent ratings per rationale.")
    calibration: int = Field(0, ge=0, description="Items that every annotator rates first.")
    gold_share: float = Field(0.0, ge=0.0, description="Gold (flawed) items per original item.")
    seed: int = Field(0, description="Seed of the assignment and orders.")
    claim_review: bool = Field(
        True, description="Raters give a verdict on every claim of each rationale "
        "(supported, partly supported, not in the record, contradicted, general knowledge) "
        "and mark lines it should have cited, beside the two scores.")


class CampaignCreateConfig(CampaignDesign):
    """`rationale-audit campaign create NAME`: a campaign and its assignments."""

    COMMAND = "rationale-audit campaign create"

    annotators: str = Field(description="Comma-separated usernames.")
    guidelines_version: str = Field("1.0", description="Guidelines shown to raters.")
    show_grounding: bool = Field(False, description="Show automatic check results to raters.")
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
    rate_corrections: bool = Field(
        False, description="A correction an adjudicator accepts joins the campaign and is "
        "rated by k raters like any rationale.")

    def annotator_names(self) -> list[str]:
        return [a.strip() for a in self.annotators.split(",") if a.strip()]


class CampaignSimulateConfig(CampaignDesign):
    """`rationale-audit campaign simulate NAME`: a campaign rated by simulated raters."""

    COMMAND = "rationale-audit campaign simulate"

    seed: int = Field(0, description="Seed of the assignment, the orders and the simulated "
                                     "ratings.")
    raters: int = Field(4, description="Number of simulated raters.")
    noise: float = Field(0.6, ge=0.0, description="SD of each rating's noise (scale points).")
    leniency: float = Field(0.4, ge=0.0,
                            description="SD of the raters' leniency (scale points).")
    claim_error: float = Field(
        0.15, ge=0.0, le=1.0, description="Chance that a simulated rater's verdict on a "
        "claim is another one than its cited lines imply.")


class CampaignStatusConfig(CommandConfig):
    """`rationale-audit campaign status NAME`: progress per annotator."""

    COMMAND = "rationale-audit campaign status"

    as_json: bool = Field(False, description="Print JSON.", json_schema_extra={"flag": "--json"})


def campaign_default(name: str) -> Any:
    """The default of campaign setting ``name`` (a field of :class:`CampaignCreateConfig`
    or :class:`CampaignSimulateConfig`), for code that creates campaigns without a config."""
    for config in (CampaignCreateConfig, CampaignSimulateConfig):
        if name in config.model_fields:
            return config.model_fields[name].get_default(call_default_factory=True)
    raise KeyError(f"no campaign setting {name!r}")


__all__ = ["Assignment", "CampaignCreateConfig", "CampaignDesign", "CampaignSimulateConfig",
           "CampaignStatusConfig", "campaign_default"]
