"""The options of `rationale-audit experiment run` and `experiment report` (pydantic and
the standard library). The grid itself is an :class:`~training.grid.config.ExperimentGrid`
YAML given as the commands' argument; these say where its runs execute and where its
report goes, which never changes a result."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig


class ExperimentRunConfig(CommandConfig):
    """`rationale-audit experiment run GRID`: where the grid's runs execute."""

    COMMAND = "rationale-audit experiment run"

    executor: Literal["local", "ray"] = Field(
        "local", description="local: one run after another in this process; ray: each run "
        "a Ray task (the project's ray extra; see docs/scale.md).")
    ray_address: str | None = Field(
        None, description="A running Ray cluster (auto, or ray://HOST:10001); none: a local "
        "Ray instance for this command.")
    max_concurrent: int | None = Field(None, ge=1, description="At most this many runs at "
                                       "once on Ray.")


class ExperimentReportConfig(CommandConfig):
    """`rationale-audit experiment report GRID`: where the rewritten report goes."""

    COMMAND = "rationale-audit experiment report"

    out: str | None = Field(None, description="Output folder (default: beside the runs).")


__all__ = ["ExperimentReportConfig", "ExperimentRunConfig"]
