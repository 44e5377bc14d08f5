"""The settings of `rationale-audit campaign plan` (pydantic only): the CI width to reach,
the designs to compare and, for a campaign not yet run, the agreement expected."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class PlanConfig(CommandConfig):
    """`rationale-audit campaign plan [NAME]`: items × raters for a target CI width."""

    COMMAND = "rationale-audit campaign plan"

    target_ci_width: float = Field(0.1, description="Width of α's 95% CI to reach.")
    raters: str = Field("2,3,4", description="Raters per item to compare (comma-separated).")
    expected_alpha: float | None = Field(
        None, description="For a new campaign: the α you expect (with --distribution).")
    distribution: str | None = Field(
        None, description="For a new campaign: expected shares of scores 1–5, e.g. "
        "0.05,0.1,0.2,0.35,0.3.")
    seconds_per_rating: float | None = Field(
        None, description="Seconds one rating takes (default: measured in the campaign).")
    include_simulated: bool = Field(False, description="Use simulated ratings as the pilot.")
    as_json: bool = Field(False, description="Print JSON.", json_schema_extra={"flag": "--json"})
    seed: int = Field(0, description="Simulation seed.")

    def rater_counts(self) -> list[int]:
        """--raters as whole numbers (ValueError if one is not)."""
        return [int(x) for x in self.raters.split(",") if x.strip()]

    def score_shares(self) -> list[float] | None:
        """--distribution as numbers, None when not given (ValueError if one is not)."""
        return [float(x) for x in self.distribution.split(",")] if self.distribution else None


__all__ = ["PlanConfig"]
