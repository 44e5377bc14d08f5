"""The settings of `rationale-audit judge report` (pydantic and the standard library): how
the judge is calibrated against the clinicians' panel."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig


class JudgeReportConfig(CommandConfig):
    """`rationale-audit judge report`: the judge against the panel, and the alt-test."""

    COMMAND = "rationale-audit judge report"

    campaign: str = Field(description="Campaign name.")
    run: int | None = Field(None, description="Judge run id (default: the newest).")
    epsilon: float = Field(
        0.2, description="The alt-test's cost-benefit margin ε: 0.2 for experts, 0.15 for "
        "trained raters, 0.1 for crowd workers (Calderon et al. 2025).")
    q: float = Field(0.05, description="False discovery rate over clinicians (BY).")
    min_items: int = Field(30, description="Items per clinician the t-test needs.")
    include_simulated: bool = Field(False, description="Compare with simulated raters too.")
    format: Literal["md", "json"] = Field("md", description="The report's format.")
    out: str | None = Field(None, description="Output file (default "
                                              "judge-calibration.FORMAT).")
    replicates: int = Field(1000, description="Bootstrap resamples of items.")


__all__ = ["JudgeReportConfig"]
