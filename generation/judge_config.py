"""The settings of `rationale-audit judge run` (pydantic and the standard library).

Kept apart from :mod:`generation.judge` so the CLI, the Runs screen and configs load
without the judge's backends; the fields feed the judge run's identity, so they are
neither added, renamed nor re-defaulted."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig

# Keys, scores and every flag take fewer than this many tokens in the tightest JSON; the
# reason gets the rest at one character per token (its worst case), so the document
# always closes within max_tokens.
FIXED_TOKENS = 80


class JudgeConfig(CommandConfig):
    """Settings of `rationale-audit judge run` (YAML keys are the field names)."""

    COMMAND = "rationale-audit judge run"

    campaign: str = Field(description="campaign whose rationales the judge scores")
    model: str | None = Field(
        None, description="model spec: bundled:NAME, a local Hugging Face folder or "
        "hf:ORG/NAME (default: the bundled model); with --server-url, the served name")
    backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="the local engine the judge runs on (without --server-url)")
    server_url: str | None = Field(None, description="OpenAI-compatible server, e.g. vLLM's")
    cache_dir: str | None = Field(None, description="model cache directory (must exist)")
    max_tokens: int = Field(256, ge=FIXED_TOKENS + 16, le=4096,
                            description="the judge's whole answer, reason included")
    top_logprobs: int = Field(10, ge=0, le=20, description="alternatives read at each score "
                                                           "token for the expected score")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy)")
    seed: int = Field(0, description="sampling seed")
    history_budget: int = Field(1500, ge=40, description="tokens for the compact history")
    batch_size: int = Field(32, ge=1, le=4096, description="rationales per batch")
    max_model_len: int = Field(4096, ge=512, description="the engine's context length "
                                                         "(prompt and answer)")


__all__ = ["FIXED_TOKENS", "JudgeConfig"]
