"""The settings of `rationale-audit experiment reproduce` (pydantic and the standard
library): the reproduction config (data, a base grid, named scales) and the command's
own options. Kept apart from :mod:`training.reproduce` so that reading the flags or a
config file imports no training code; :meth:`ReproduceConfig.resolve` imports the
grid's class only when it builds one.
"""

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, ValidationError

from annotation_db.command_config import CommandConfig, ConfigError
from training.study_config import DataSettings

if TYPE_CHECKING:
    from training.budget import Throughput
    from training.grid.config import ExperimentGrid


class ReproduceConfig(CommandConfig):
    """experiments/reproduce.yaml: data settings, a base grid, and named scales."""

    COMMAND = "rationale-audit experiment reproduce"
    DEFAULT_FILE: ClassVar[str] = "experiments/reproduce.yaml"

    name: str = Field("reproduce", description="name of the reproduction (its report folder "
                      "and grids are named after it and the scale)")
    data: DataSettings = Field(DataSettings(), description="what the training data are "
                               "made from")
    grid: dict[str, Any] = Field(default_factory=dict, description="ExperimentGrid fields")
    scales: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per scale: overrides of `data` and `grid` fields "
        "(`based_on: SCALE` starts from another scale's overrides)")
    exports_dir: str = Field("exports", description="where dataset versions are written")
    output_dir: str = Field("reports", description="where the reproduction's report goes")

    def resolve(self, scale: str) -> tuple[DataSettings, "ExperimentGrid"]:
        from training.grid.config import ExperimentGrid

        if scale not in self.scales:
            raise ConfigError(f"unknown scale {scale!r}; the config defines "
                              f"{', '.join(self.scales) or 'none'}")
        over = self._overrides(scale)
        try:
            data = DataSettings.model_validate(_merge(self.data.model_dump(),
                                                      over.get("data", {})))
            grid = ExperimentGrid.model_validate({"name": f"{self.name}-{scale}",
                                                  **_merge(self.grid, over.get("grid", {})),
                                                  "dataset": data.dataset})
            if data.history_tokenizer is None:  # count histories in the student's tokens
                data = data.model_copy(update={"history_tokenizer": grid.base_models[0]})
        except ValidationError as exc:
            raise ConfigError(f"scale {scale!r} of {self.name!r}: {exc.errors()[0]['loc']}: "
                              f"{exc.errors()[0]['msg']}") from exc
        return data, grid

    def _overrides(self, scale: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        """Scale ``scale``'s overrides, those of the scale it is ``based_on`` first (so a
        variant states only what it changes)."""
        if scale not in self.scales:
            raise ConfigError(f"scale {seen[-1]!r} is based on {scale!r}, which the config "
                              "does not define")
        if scale in seen:
            raise ConfigError(f"scales based on each other: {' → '.join((*seen, scale))}")
        over = dict(self.scales[scale])
        unknown = set(over) - {"data", "grid", "throughput", "based_on"}
        if unknown:
            raise ConfigError(f"scale {scale!r} has unknown keys {sorted(unknown)}; a scale "
                              "holds data, grid, throughput and based_on")
        base = over.pop("based_on", None)
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"scale {scale!r}: based_on names one scale, not {base!r}")
        return _merge(self._overrides(base, (*seen, scale)), over) if base else over

    def throughput(self, scale: str) -> "Throughput":
        from training.budget import Throughput

        self.resolve(scale)
        block = self._overrides(scale).get("throughput")
        if block is None:
            raise ConfigError(f"scale {scale!r} has no throughput block; --dry-run needs the "
                              "measured speeds it divides by (see docs/reproduction.md)")
        try:
            return Throughput.model_validate(block)
        except ValidationError as exc:
            raise ConfigError(f"scale {scale!r} throughput: {exc.errors()[0]['loc']}: "
                              f"{exc.errors()[0]['msg']}") from exc


class ReproduceOptions(BaseModel):
    """`experiment reproduce`'s options: which scale to run and how far, never part of
    the reproduction config's identity."""

    scale: str = Field("smoke", description="A scale the config defines: smoke (CI-sized "
                       "plumbing check, minutes), cpu (the study's question on a CPU, hours), "
                       "cpu-balanced (the same with the balanced teacher) or gpu (one "
                       "accelerator window).")
    dry_run: bool = Field(False, description="Print per stage the examples, tokens, "
                          "optimizer steps, generations and expected time (from the scale's "
                          "measured throughput), and run nothing.",
                          json_schema_extra={"flag": "--dry-run"})
    data_only: bool = Field(False, description="Make the dataset version (cohort → "
                            "rationales → audit → export) and stop: the CPU part, done ahead "
                            "of an accelerator window.", json_schema_extra={"flag": "--data-only"})


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


__all__ = ["ReproduceConfig", "ReproduceOptions"]
