"""The settings of `rationale-audit judge estimate` (pydantic and the standard library):
campaign quantities with and without the judge, and where it can be trusted."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig


class JudgeEstimateConfig(CommandConfig):
    """`rationale-audit judge estimate`: prediction-powered estimates and trust or
    escalate."""

    COMMAND = "rationale-audit judge estimate"

    campaign: str = Field(description="Campaign name.")
    run: int | None = Field(
        None, description="Judge run id (default: the one an escalation or adaptive campaign "
        "was created with, else the campaign's newest).")
    target_ci_width: float | None = Field(
        None, ge=0.0001, description="Also plan: rated items each quantity needs for a CI "
        "this wide, with the judge and without.")
    target_agreement: float = Field(
        0.9, ge=0.5, le=0.999, description="Trust or escalate: the agreement with the "
        "panel's approval decision the judge must be certified to reach on the items it is "
        "trusted on.")
    delta: float = Field(0.05, ge=0.001, le=0.5,
                         description="Trust or escalate: the certificate's error level.")
    include_simulated: bool = Field(False, description="Count simulated raters too.")
    format: Literal["md", "json"] = Field("md", description="The report's format.")
    out: str | None = Field(None, description="Output file (default "
                                              "judge-estimates.FORMAT).")


__all__ = ["JudgeEstimateConfig"]
