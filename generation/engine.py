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
    dtype: str = "bfloat16"
    enforce_eager: bool = True
    seed: int = 0
    enable_lora: bool = False
    max_lora_rank: int = 16
    gpu_memory_utilization: float = 0.85


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


def reclaim_torch_threads() -> int:
    """Give torch every CPU this process may use again; returns the thread count.

    Starting an in-process vLLM engine sets torch to one intra-op thread for serving
    (``vllm.utils.torch_utils.set_torch_threads_for_runtime``), for the rest of the
    process: an SFT run after a scored run, as in every grid, would then train on one
    core. ``OMP_NUM_THREADS``, when set, wins, as it does for vLLM.
    """
    import torch

    wanted = os.environ.get("OMP_NUM_THREADS")
    threads = int(wanted) if wanted and wanted.isdigit() else len(os.sched_getaffinity(0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


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
        dtype=options.dtype,
        max_model_len=options.max_model_len,
        enforce_eager=options.enforce_eager,
        seed=options.seed,
        generation_config="vllm",  # sampling comes only from our SamplingParams
    )
    if options.enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=vllm_lora_rank(options.max_lora_rank),
                      max_loras=1)
    if not on_cpu():
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
