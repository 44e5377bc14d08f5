"""The options of `rationale-audit experiment compare REPORT_A REPORT_B` (pydantic and the
standard library), kept apart from :mod:`training.report_comparison` so that reading them
imports no numerical code."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class ReportComparisonConfig(CommandConfig):
    """`rationale-audit experiment compare A B`: where the comparison goes, and its
    bootstrap."""

    COMMAND = "rationale-audit experiment compare"

    out: str | None = Field(None, description="Output folder (default reports/compare-A-vs-B, "
                            "named after the two report folders).")
    n_resamples: int = Field(2000, ge=100, description="Bootstrap replicates (each draws "
                             "every setting's seeds, then the test patients).")
    seed: int = Field(0, description="Seed of the bootstrap's draws.")
    max_one_answer_share: float = Field(
        0.95, gt=0.5, le=1.0, description="A run whose mean P(yes) over the test patients "
        "is above this share or below one minus it is left out as degenerate, on top of "
        "the runs its report already marked invalid (a report written before the rule is "
        "held to it here; a looser share cannot bring back a run its report left out).")


__all__ = ["ReportComparisonConfig"]
