"""The settings of one few-shot run, `rationale-audit train fewshot` (pydantic and the
standard library).

Kept apart from :mod:`training.fewshot` so the CLI, the Runs screen and grids load
without numpy and the scorers; the fields feed a run's identity, so they are neither
added, renamed nor re-defaulted."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig
from generation.models_config import DEFAULT_MODEL
from training.evaluate_config import EvaluateConfig

LOCATION_FIELDS = frozenset({"runs_dir", "cache_dir", "engine", "batch_size"})


class FewShotConfig(CommandConfig):
    """One few-shot evaluation of a base model with demonstrations from a version."""

    COMMAND = "rationale-audit train fewshot"

    dataset: str = Field(description="dataset version name")
    k: int = Field(default=4, ge=0, le=32, description="demonstrations per prompt")
    with_rationales: bool = Field(
        default=True, description="demonstrations show the audited rationale before the answer",
        json_schema_extra={"flag": "--with-rationales/--without-rationales"})
    rationale_format: Literal["free", "stepwise"] = Field(
        default="free", description="the audited rationales' format the demonstrations show")
    selection: Literal["random", "nearest"] = Field(
        default="random", description="random: one seeded set; nearest: the most similar "
                                      "records per query")
    base_model: str = Field(default=DEFAULT_MODEL, description="model spec: bundled:NAME, a "
                            "local Hugging Face folder or hf:ORG/NAME")
    seed: int = Field(default=0, description="seed of the demonstration draw")
    split: Literal["test", "validation"] = Field(default="test",
                                                 description="the split scored")
    limit: int | None = Field(default=None, ge=2, description="score only the first N "
                                                              "patients")
    max_rationale_tokens: int | None = Field(
        default=None, ge=1, description="unset: the 99th percentile of the pool's rationales "
                                        "plus the answer line")
    min_reached_answer: float = Field(
        default=0.95, ge=0, le=1, description="a run whose share of rationales that reach "
        "'Final answer:' is below this is reported invalid")
    threshold: float = Field(default=0.5, gt=0, lt=1, description="P(yes) at or above "
                             "which balanced accuracy says yes")
    n_bootstrap: int = Field(default=1000, ge=100, description="bootstrap resamples of the "
                             "patients for the metrics' CIs")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="auto: vLLM when installed, else transformers")
    batch_size: int = Field(default=8, ge=1, description="prompts scored per batch")
    runs_dir: str = Field(default="runs", description="where run folders go")
    cache_dir: str | None = Field(default=None, description="where prepared models are kept "
                                  "(default $RATIONALE_AUDIT_CACHE_DIR or "
                                  "~/.cache/rationale-audit)")

    NOT_IN_IDENTITY = LOCATION_FIELDS

    @property
    def target(self) -> str:
        return f"fewshot-k{self.k}-{'rationale' if self.with_rationales else 'label'}"

    def identity(self, dataset_hash: str) -> str:
        # nearest selection compares histories with histories (the query's user turn
        # without its fixed intro and question) since 2026-12-07: named, so a run
        # selected the earlier way is never reused as one of these
        extra = {"nearest_on": "history"} if self.selection == "nearest" else {}
        return self.content_hash(dataset_sha256=dataset_hash, **extra)

    def evaluate_config(self, scoring: str = "auto", n_samples: int = 5,
                        sample_temperature: float = 1.0) -> EvaluateConfig:
        """How the run is scored: its own way (``auto``: the rationale it writes, greedy,
        with rationales; else the answer directly), or ``sampled`` (with rationales only:
        the mean P(yes) over ``n_samples`` rationales sampled at ``sample_temperature``,
        each patient on its own stream from the draw's seed), stored beside it."""
        if scoring not in ("auto", "sampled") or (scoring == "sampled"
                                                  and not self.with_rationales):
            raise ValueError(f"a few-shot run {'with' if self.with_rationales else 'without'}"
                             f" rationales is not scored {scoring!r} (its own scoring, and "
                             "sampled rationales where it writes them)")
        return EvaluateConfig(split=self.split, engine=self.engine, limit=self.limit,
                              max_rationale_tokens=self.max_rationale_tokens,
                              min_reached_answer=self.min_reached_answer,
                              threshold=self.threshold, n_bootstrap=self.n_bootstrap,
                              batch_size=self.batch_size, seed=self.seed, scoring=scoring,
                              n_samples=n_samples, sample_temperature=sample_temperature)



__all__ = ["LOCATION_FIELDS", "FewShotConfig"]
