"""How runs are scored and compared: the settings of `rationale-audit evaluate run` and
`evaluate compare` (pydantic and the standard library), and the validity gate's code.

Kept apart from :mod:`training.evaluate` (which imports the database models and the
scorers) so that the CLI, the Runs screen, a grid's configuration
(:mod:`training.grid.config`) and the mechanism's reading rule validate with pydantic
alone; :class:`EvaluateConfig`'s fields feed every stored result's settings hash, so
they are neither added, renamed nor re-defaulted."""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from annotation_db.command_config import CommandConfig

ANSWER_NOT_REACHED = "answer_not_reached"  # ``invalid_code`` of the validity gate
# The scoring variant a model is compared (and, with ``select_on: primary``, tuned) in,
# first found first: a filler model read after its filler (only a filler model has it),
# then sampled rationales; else the target's own scoring.
PRIMARY_VARIANTS = ("prefilled", "sampled")


def lead_scoring(available, own: str | None = None) -> str | None:
    """The scoring a model is compared in, among the ``available`` ones: the first of
    :data:`PRIMARY_VARIANTS` there, else ``own``."""
    return next((v for v in PRIMARY_VARIANTS if v in available), own)


class EvaluateConfig(CommandConfig):
    """How a run is scored (the run itself is named on the command line)."""

    COMMAND = "rationale-audit evaluate run RUN"

    split: Literal["test", "validation"] = Field(default="test",
                                                 description="the split scored")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="auto: vLLM when installed, else transformers")
    max_rationale_tokens: int | None = Field(
        default=None, ge=1, description="cap on a rationale model's own text before its "
        "answer; unset: the 99th percentile of the view's training completions plus the "
        "answer line (a smaller explicit cap is refused)")
    min_reached_answer: float = Field(
        default=0.95, ge=0, le=1, description="a rationale run whose share of rationales that "
        "reach 'Final answer:' is below this is reported invalid")
    max_one_answer_share: float = Field(
        default=0.95, gt=0.5, le=1, description="a run whose mean P(yes) over the patients "
        "(the share of yes answers it gives when each is drawn from its P(yes)) is above "
        "this, or below 1 minus this, is reported degenerate and left out of comparisons; "
        "1 turns the rule off")
    threshold: float = Field(default=0.5, gt=0, lt=1,
                             description="P(yes) at or above which balanced accuracy says yes")
    scoring: Literal["auto", "generate", "direct", "sampled", "prefilled"] = Field(
        default="auto", description="auto: the target's own way (direct for label, "
        "answer-first and multitask; generate for the rest). generate: write until 'Final "
        "answer:', then score; direct: score right after the prompt, skipping the "
        "rationale; sampled: the mean P(yes) over n_samples sampled rationales; "
        "prefilled (label-padded only): score after its filler, written in at the taught "
        "median length")
    n_samples: int = Field(default=5, ge=1, description="sampled: rationales per patient")
    sample_temperature: float = Field(default=1.0, gt=0, description="sampled: temperature")
    n_bootstrap: int = Field(default=1000, ge=100, description="bootstrap resamples of the "
                             "patients for the metrics' CIs")
    limit: int | None = Field(default=None, ge=2, description="score only the first N patients")
    batch_size: int = Field(default=8, ge=1, description="prompts scored per batch")
    seed: int = Field(default=0, description="seed of the bootstrap and of sampled "
                      "rationales")
    server_url: str | None = Field(
        default=None, description="score through an OpenAI-compatible server (vllm serve "
        "BASE --enable-lora) that serves the run's adapter, instead of a local engine")

    # Batching does not change the numbers; a served model scores as the local engine does
    # (to 1e-3, tests/training/test_served.py), so where it ran is not part of the result.
    NOT_IN_IDENTITY = frozenset({"batch_size", "server_url"})

    @field_validator("server_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        parts = urlsplit(value or "")
        if value and (parts.username or parts.password or parts.query):
            raise ValueError("put no credentials or query in --server-url (it is echoed into "
                             "the run folder); give the key with --api-key or OPENAI_API_KEY")
        return value

    ADDED_LATER = {"scoring": "auto", "n_samples": 5, "sample_temperature": 1.0,
                   "max_one_answer_share": 0.95}
    # How sampled scoring draws its random numbers, in the identity of sampled results
    # only: results drawn with one seed for every patient (sample j of each patient on the
    # same stream, until 2026-12-07) are not reused, and are scored again.
    SAMPLE_STREAMS: ClassVar[str] = "one per run and patient"
    # What prefilled scoring writes in, in the identity of prefilled results only (a new
    # rule scores them again).
    PREFILL: ClassVar[str] = "filler as long as the median of the training split's fillers"

    def identity_data(self) -> dict:
        data = super().identity_data()
        if self.scoring == "sampled":
            data["sample_streams"] = self.SAMPLE_STREAMS
        if self.scoring == "prefilled":
            data["prefill"] = self.PREFILL
        return data

    def settings_hash(self) -> str:
        """Hash of the settings that change the numbers.

        Stored with each result, so a grid re-scores a run whose stored result was
        made with other settings (say, a ``limit`` from a quick check in the app).
        Written as compact JSON, as stored results have always been keyed, so results
        scored before ``stable_hash`` are still found."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.identity_data(), sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()[:16]


class EvaluateCompareConfig(CommandConfig):
    """`rationale-audit evaluate compare RUN_A RUN_B`: DeLong's test on one split."""

    COMMAND = "rationale-audit evaluate compare RUN_A RUN_B"

    split: str = Field("test", description="The split both were scored on.")


__all__ = ["ANSWER_NOT_REACHED", "EvaluateCompareConfig", "EvaluateConfig"]
