"""The settings of `rationale-audit faithfulness run` (pydantic and the standard library).

Kept apart from :mod:`training.evidence_ablation` so the CLI and configs load without
numpy and the scorers; the fields feed a faithfulness run's identity, so they are
neither added, renamed nor re-defaulted."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig

DEFAULT_BUDGET = 1500  # the approval policy's default history_budget


class FaithfulnessConfig(CommandConfig):
    """Settings of `rationale-audit faithfulness run` (YAML keys are the field names)."""

    COMMAND = "rationale-audit faithfulness run"

    run: int = Field(description="generation run whose rationales are ablated")
    scorer: str | None = Field(
        None, description="model spec that reads the histories: bundled:NAME, a local Hugging "
        "Face folder or hf:ORG/NAME (default: the bundled base model)")
    scorer_run: str | None = Field(
        None, description="a finished SFT run (id, config-hash prefix or folder) whose adapter "
        "reads the histories instead, e.g. a label-only run: does the evidence the teacher "
        "cited drive the student's prediction?")
    history_budget: int | None = Field(
        None, ge=40, description="tokens of history in each prompt (default: the scorer run's "
        f"dataset policy, else {DEFAULT_BUDGET}, the export policy's default)")
    history_tokenizer: str | None = Field(
        None, description="model spec whose tokenizer counts the history budget, as exports "
        "count it (default: the scorer run's dataset policy, else the export policy's default)")
    draws: int = Field(5, ge=1, le=50, description="random draws of as many uncited items "
                                                   "removed: the baseline")
    per_claim: bool = Field(True, description="also ablate each claim's own cited items")
    seed: int = Field(0, description="seeds the random draws (with each rationale's id)")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when installed, else transformers")
    batch_size: int = Field(32, ge=1, description="rationales scored per batch (each is "
                                                  "several prompts)")
    prefix_caching: bool = Field(True, description="vLLM's prefix cache (the same numbers "
                                                   "either way; only faster with it)")
    limit: int | None = Field(None, ge=1, description="score only the first N rationales not "
                                                      "yet scored (a later run goes on)")
    cache_dir: str | None = Field(None, description="model cache directory (must exist)")

    # Where and how fast the numbers are made, not what they are.
    NOT_IN_IDENTITY = frozenset({"engine", "batch_size", "prefix_caching", "limit",
                                 "cache_dir", "run", "scorer", "scorer_run"})


__all__ = ["DEFAULT_BUDGET", "FaithfulnessConfig"]
