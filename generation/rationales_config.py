"""The settings of `rationale-audit generate` (pydantic and the standard library).

Kept apart from :mod:`generation.rationales` so the CLI, the study and configs load
without the generation backends; the fields feed a generation run's identity, so they
are neither added, renamed nor re-defaulted."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig
from generation.models_config import DEFAULT_MODEL


class GenerateConfig(CommandConfig):
    """Settings of `rationale-audit generate` (YAML keys are the field names)."""

    COMMAND = "rationale-audit generate"

    cohort: str | None = Field(None, description="cohort name (default: the newest)")
    split: Literal["train", "validation", "test", "all"] = Field(
        "train", description="the cohort split whose patients get rationales")
    n: int | None = Field(500, ge=1, description="first n patients of the split (None: all)")
    mode: Literal["label-conditioned", "label-blind"] = Field(
        "label-conditioned", description="whether the teacher is told the outcome")
    format: Literal["free", "stepwise"] = Field(
        "free", description="free text, or numbered steps")
    prompt_version: str = Field("1", description="version of the teacher prompt")
    model: str | None = Field(
        None, description="model spec: bundled:NAME, a local Hugging Face folder or "
        "hf:ORG/NAME (default: the bundled model); with --server-url, the name the server "
        "serves the model under (default: its only model)")
    cache_dir: str | None = Field(None, description="model cache directory (must exist)")
    backend: Literal["vllm", "transformers", "template", "template-balanced"] = Field(
        "vllm", description="template: the deterministic label-conditioned template teacher; "
        "template-balanced: its variant that gives the evidence first and the conclusion last")
    server_url: str | None = Field(None, description="OpenAI-compatible server, e.g. vLLM's")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling's probability mass")
    max_tokens: int = Field(384, ge=16, le=8192, description="tokens per rationale at most")
    repetition_penalty: float = Field(1.05, ge=1, le=2, description="penalty on repeated "
                                                                   "tokens (1: none)")
    retry_temperature: float = Field(0.7, ge=0, le=2, description="temperature of the "
                                     "attempts after an invalid output")
    retries: int = Field(2, ge=0, le=10, description="further attempts per patient after an "
                                                     "invalid output")
    seed: int = Field(0, description="sampling seed")
    batch_size: int = Field(16, ge=1, le=4096, description="patients per batch")
    history_budget: int = Field(1500, ge=40, description="tokens for the compact history")
    history_tokenizer: str = Field(
        DEFAULT_MODEL, description="model whose tokenizer counts the history budget (the "
                                   "export's, so teacher and student see the same items)")
    max_model_len: int = Field(4096, ge=512, description="the engine's context length "
                                                         "(prompt and answer)")
    gold_share: float = Field(0.0, ge=0, le=1, description="share of rationales given flawed "
                                                           "gold copies")


__all__ = ["GenerateConfig"]
