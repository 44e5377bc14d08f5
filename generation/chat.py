"""What every generation backend takes and returns: chat requests, sampling, completions.

Backends (:mod:`generation.backends` for vLLM, a server and transformers;
:mod:`generation.teacher` for the template teacher) implement :class:`Backend`.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings recorded on a generation run (and part of its key)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 384
    repetition_penalty: float = 1.05
    retry_temperature: float = 0.7

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ChatRequest:
    messages: list[dict]
    schema: dict | None
    seed: int
    temperature: float = 0.0
    record: dict | None = None  # only the template teacher reads it
    logprobs: int = 0  # top alternatives to return per generated token (0: none)


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token and the log-probabilities of the model's top alternatives there
    (the raw distribution, before any schema mask)."""

    token: str
    top: dict[str, float]


@dataclass
class Completion:
    text: str
    completion_tokens: int
    finish_reason: str | None = None
    logprobs: list[TokenLogprobs] | None = None  # when the request asked and the backend gives


class Backend(Protocol):
    name: str

    def complete(self, requests: list[ChatRequest], params: SamplingConfig) -> list[Completion]:
        ...
