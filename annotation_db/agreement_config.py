"""The settings of `rationale-audit agreement report` (pydantic only): whose ratings,
which report format, and how many bootstrap resamples."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig

ReportFormat = Literal["html", "md", "json"]


class AgreementReportConfig(CommandConfig):
    """`rationale-audit agreement report`: agreement of a campaign or a ratings CSV."""

    COMMAND = "rationale-audit agreement report"

    campaign: str | None = Field(None, description="Campaign name in the database.")
    ratings_csv: str | None = Field(None, description="CSV with rater,item,dimension,score.")
    format: ReportFormat = Field("html", description="Report format.")
    out: str | None = Field(None, description="Output file (default agreement.FORMAT).")
    replicates: int = Field(1000, description="Bootstrap resamples of units.")
    seed: int = Field(0, description="Bootstrap seed.")
    include_simulated: bool = Field(False, description="Include simulated raters' ratings.")
    include_judge: int | None = Field(
        None, description="Add this judge run's scores as one more rater (left out by "
        "default).")


__all__ = ["AgreementReportConfig", "ReportFormat"]
