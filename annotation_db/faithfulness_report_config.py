"""The settings of `rationale-audit faithfulness report` (pydantic and the standard
library): how evidence ablation is set beside the clinicians' and the judge's scores."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig


class FaithfulnessReportConfig(CommandConfig):
    """`rationale-audit faithfulness report`: ablation against the random baseline and
    the raters' faithfulness scores."""

    COMMAND = "rationale-audit faithfulness report"

    run: int | None = Field(None, description="Faithfulness run id (default: the newest "
                                              "finished one).")
    campaign: str | None = Field(None, description="Campaign whose clinicians' and judge's "
                                                   "faithfulness scores are set beside it.")
    margin: float = Field(0.05, description="How far comprehensiveness must beat the random "
                                            "baseline to count (a probability difference).")
    judge_run: int | None = Field(None, description="Judge run (default: the campaign's "
                                                    "newest).")
    include_simulated: bool = Field(False, description="Count simulated raters' scores too.")
    format: Literal["md", "html", "json"] = Field("md", description="The report's format.")
    out: str | None = Field(None, description="Output file (default faithfulness.FORMAT).")
    replicates: int = Field(1000, description="Bootstrap resamples for the correlations' CIs.")


__all__ = ["FaithfulnessReportConfig"]
