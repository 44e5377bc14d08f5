"""Inference engines: vLLM offline (the default) and transformers (the reference).

vLLM is imported inside functions so that ``--help``, the database commands and
CPU-only tests never pay for it. On CPU the engine needs an explicit KV-cache
budget (``VLLM_CPU_KVCACHE_SPACE``, GiB) and starts in about 4 s with
``enforce_eager=True`` instead of about 60 s with ``torch.compile``.

Scripts that create a :func:`load_vllm` engine need an
``if __name__ == "__main__":`` guard: vLLM spawns its engine core process.
"""

import os
import time
from dataclasses import dataclass
from typing import Any

from generation.models import ResolvedModel

DEFAULT_KV_CACHE_GIB = "2"


@dataclass(frozen=True)
class EngineOptions:
    """Settings shared by every vLLM engine this project starts."""

    max_model_len: int = 4096
    dtype: str = "auto"  # see engine_dtype
    enforce_eager: bool = True
    seed: int = 0
    enable_lora: bool = False
    max_lora_rank: int = 16
    gpu_memory_utilization: float = 0.85
    # Every rationale prompt starts with the same system turn and instructions: their
    # KV blocks are computed once and reused (see benchmarks/generation.py).
    prefix_caching: bool = True


# vLLM accepts only these values for ``max_lora_rank`` (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank "
                     f"({VLLM_LORA_RANKS[-1]}); score this run with --engine transformers")


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), not by emulation."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def engine_dtype(dtype: str = "auto") -> str:
    """``auto``: bf16 on a GPU or on a CPU that computes it natively, else float32.

    On a CPU without AVX512-BF16 or AMX, vLLM's bf16 linear layers fall back to an
    emulated path: the bundled model wrote 242 tokens in 106 s there (2 tokens/s).
    """
    if dtype != "auto":
        return dtype
    return "bfloat16" if not on_cpu() or cpu_has_native_bf16() else "float32"


CPU_BATCHED_TOKENS = 4096  # vLLM's default per-step token budget


def load_vllm(model: ResolvedModel, options: EngineOptions | None = None) -> Any:
    """Create a ``vllm.LLM`` for a resolved model with CPU-safe defaults."""
    options = options or EngineOptions()
    if on_cpu():
        # vLLM refuses to start on CPU without a KV-cache budget it can reserve.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KV_CACHE_GIB)
        # Offline batches gain nothing from a separate engine-core process on CPU,
        # and an in-process engine needs no __main__ guard in the caller.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    kwargs: dict[str, Any] = dict(
        model=model.path,
        dtype=engine_dtype(options.dtype),
        max_model_len=options.max_model_len,
        enforce_eager=options.enforce_eager,
        seed=options.seed,
        generation_config="vllm",  # sampling comes only from our SamplingParams
        enable_prefix_caching=options.prefix_caching,
        # JSON without free whitespace: a schema-sized document then has a bounded length
        # (generation.output_budget), so a constrained decode closes within max_tokens.
        structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
    )
    if options.enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(options.max_lora_rank),
                      max_loras=1)
    if on_cpu():
        # vLLM 0.32 on CPU: a seeded request (sampled scoring) whose prompt is split by
        # chunked prefill crashes the engine ("CPU Generator does not use offset": it
        # rewinds the request's generator, which only CUDA generators allow). Whole
        # prompts only, so a batch never splits one.
        kwargs.update(enable_chunked_prefill=False,
                      max_num_batched_tokens=max(CPU_BATCHED_TOKENS, options.max_model_len))
    else:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
    return LLM(**kwargs)


@dataclass(frozen=True)
class ChatResult:
    texts: list[str]
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def vllm_chat(llm: Any, conversations: list[list[dict]], *, max_tokens: int,
              temperature: float = 0.0, seed: int = 0) -> ChatResult:
    """Batched chat completion; returns texts and throughput."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    started = time.perf_counter()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return ChatResult(
        texts=[out.outputs[0].text for out in outputs],
        completion_tokens=sum(len(out.outputs[0].token_ids) for out in outputs),
        seconds=seconds,
    )
