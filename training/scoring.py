"""P(yes) from the label tokens' probabilities, by vLLM or by transformers.

Every model here answers ``… Final answer: yes|no``. The score of a prompt that
ends in ``Final answer:`` is ``P(" yes") / (P(" yes") + P(" no"))`` at the next
position, read from one forward pass — no text is parsed. ``P(" yes") + P(" no")``
(the *label mass*) is kept as a diagnostic: a low mass means the model wanted to
say something else.

Two interchangeable scorers share that contract:

- :class:`VLLMScorer` — vLLM, with a LoRA adapter through ``LoRARequest``
  (``SamplingParams(max_tokens=1, logprobs=2, logprob_token_ids=[yes, no])``);
- :class:`TransformersScorer` — transformers (+ peft), for machines without vLLM
  (the lent GPU) and as the cross-check in the tests.

Both also *continue* a prompt greedily until ``Final answer:`` — the rationale a
rationale-trained model writes before its label.
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from annotation_db.student_task import ANSWER_PREFIX, ANSWER_WORDS


@dataclass(frozen=True)
class Continuation:
    text: str
    reached_answer: bool  # generation stopped at "Final answer:" (else: end of turn or length)
    tokens: int


class Scorer(Protocol):
    tokenizer: object

    def label_probabilities(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """P(yes | yes or no) and the label mass at the position after each prompt."""

    def continue_until_answer(self, prompts: list[str], max_tokens: int) -> list[Continuation]:
        """Greedy continuations, stopped at ``Final answer:``."""

    def sample_until_answer(self, prompts: list[str], max_tokens: int, n: int,
                            temperature: float, seeds: Sequence[int]
                            ) -> list[list[Continuation]]:
        """``n`` sampled continuations per prompt, stopped at ``Final answer:``; prompt
        ``i`` draws from its own random stream, ``seeds[i]`` (see :func:`stream_seeds`)."""


def stream_seeds(seed: int, keys: Sequence[str]) -> list[int]:
    """One random stream per sampled prompt, from the scoring's ``seed`` and each prompt's
    key (a run's identity and a patient's id): reproducible, and independent of the
    prompt's position, its batch and every other prompt.

    Sharing one seed across prompts would not do: vLLM seeds sample ``j`` of every
    request with ``seed + j``, so sample ``j`` of every patient (and of every run scored
    with that seed) would draw the same random numbers, and its first token, where a
    template-taught rationale commits to its conclusion, would be the same draw for all.
    """
    return [int.from_bytes(hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()[:4], "big")
            >> 1 for key in keys]  # 31 bits: vLLM adds the sample's index to it


def label_token_ids(tokenizer) -> tuple[int, int]:
    """The ids of the tokens that follow ``Final answer:`` for yes and for no."""
    ids = {}
    base = tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    for label in reversed(ANSWER_WORDS):  # yes, no
        full = tokenizer(f"{ANSWER_PREFIX} {label}", add_special_tokens=False)["input_ids"]
        if full[:len(base)] != base or len(full) != len(base) + 1:
            raise ValueError(f"the tokenizer does not encode {label!r} after {ANSWER_PREFIX!r} "
                             "as one token; P(yes) scoring needs single-token labels")
        ids[label] = full[-1]
    return ids[ANSWER_WORDS[1]], ids[ANSWER_WORDS[0]]


def two_way(logprob_yes: float, logprob_no: float) -> tuple[float, float]:
    """(P(yes | yes or no), P(yes) + P(no)) from two log-probabilities."""
    top = max(logprob_yes, logprob_no)
    if top == -math.inf:
        return 0.5, 0.0
    a, b = math.exp(logprob_yes - top), math.exp(logprob_no - top)
    return a / (a + b), math.exp(top) * (a + b)


class TransformersScorer:
    """A transformers model (optionally with a peft adapter) in eval mode."""

    def __init__(self, model_path: str, adapter_path: str | None = None, *,
                 device: str | None = None, dtype: str = "auto", batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM

        from generation.models import load_tokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = (torch.bfloat16 if self.device == "cuda" else torch.float32) \
            if dtype == "auto" else getattr(torch, dtype)
        self.tokenizer = load_tokenizer(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
        # on the base model itself: a peft wrapper generates through it
        model.generation_config = _neutral_generation_config(model.generation_config)
        if adapter_path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_path)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.yes_id, self.no_id = label_token_ids(self.tokenizer)

    def _batch(self, prompts: list[str]):
        self.tokenizer.padding_side = "left"
        return self.tokenizer(prompts, return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.device)

    def label_probabilities(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        p_yes, mass = [], []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = self._batch(prompts[start:start + self.batch_size])
                logits = self.model(**batch).logits[:, -1, :].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                for row in logprobs:
                    p, m = two_way(row[self.yes_id].item(), row[self.no_id].item())
                    p_yes.append(p)
                    mass.append(m)
        return np.asarray(p_yes), np.asarray(mass)

    def continue_until_answer(self, prompts: list[str], max_tokens: int) -> list[Continuation]:
        import torch

        out: list[Continuation] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = self._batch(prompts[start:start + self.batch_size])
                generated = self.model.generate(
                    **batch, max_new_tokens=max_tokens, do_sample=False,
                    stop_strings=[ANSWER_PREFIX], tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id)
                out += self._continuations(generated[:, batch["input_ids"].shape[1]:])
        return out

    def _continuations(self, rows) -> list[Continuation]:
        out = []
        for row in rows:
            ids = [t for t in row.tolist() if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            out.append(Continuation(text.split(ANSWER_PREFIX)[0], ANSWER_PREFIX in text,
                                    len(ids)))
        return out

    def sample_until_answer(self, prompts: list[str], max_tokens: int, n: int,
                            temperature: float, seeds: Sequence[int]
                            ) -> list[list[Continuation]]:
        """Batched: each of a prompt's ``n`` samples is a row of its own, drawn by
        :class:`GumbelSampling` on the generator seeded ``seeds[i] + j`` (as vLLM numbers
        a request's samples). A row's noise depends on its seed alone; its logits are the
        same in any batch in float32 on one device (a test checks it on CPU), and close
        but not bit-equal in bf16 on a GPU, where padding changes the kernels' shapes."""
        import torch
        from transformers import LogitsProcessorList

        rows = [(prompt, seed + j)
                for prompt, seed in zip(prompts, one_seed_each(seeds, prompts), strict=True)
                for j in range(n)]
        flat: list[Continuation] = []
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                batch = self._batch([prompt for prompt, _ in chunk])
                sampler = GumbelSampling([seed for _, seed in chunk], temperature, self.device)
                generated = self.model.generate(
                    **batch, max_new_tokens=max_tokens, do_sample=False,
                    logits_processor=LogitsProcessorList([sampler]),
                    stop_strings=[ANSWER_PREFIX], tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id)
                flat += self._continuations(generated[:, batch["input_ids"].shape[1]:])
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]


def _neutral_generation_config(config):
    """The model's generation config with only its special tokens kept: generate() fills
    every setting a call leaves unset from it (a repetition penalty, say), and vLLM
    scores with its own neutral defaults (``generation_config="vllm"``), so neither the
    greedy nor the sampled rationales would be the ones vLLM writes."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                            pad_token_id=config.pad_token_id)


class GumbelSampling:
    """A logits processor that turns greedy decoding into sampling at ``temperature``
    over the whole vocabulary (no top-k, no top-p): the argmax of logits / T plus
    independent Gumbel noise is a draw from softmax(logits / T) (the Gumbel-max trick).
    Each row takes its noise from its own generator, so rows of different prompts and
    seeds share one batch and each still gets the noise it would get alone."""

    def __init__(self, seeds: Sequence[int], temperature: float, device: str = "cpu"):
        import torch

        if temperature <= 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        self.temperature = temperature
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows for {len(self.generators)} generators")
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device)
                               for g in self.generators])
        return scores.float() / self.temperature - torch.log(-torch.log(uniform))


class VLLMScorer:
    """A ``vllm.LLM`` (started with ``enable_lora`` when an adapter is given)."""

    def __init__(self, llm, adapter_path: str | None = None, *, adapter_id: int = 1):
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.yes_id, self.no_id = label_token_ids(self.tokenizer)
        self.lora = None
        if adapter_path:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(f"adapter-{adapter_id}", adapter_id, adapter_path)

    def _prompts(self, prompts: list[str]) -> list[dict]:
        return [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]}
                for p in prompts]

    def label_probabilities(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=2,
                                logprob_token_ids=[self.yes_id, self.no_id])
        outputs = self.llm.generate(self._prompts(prompts), params, lora_request=self.lora,
                                    use_tqdm=False)
        p_yes, mass = [], []
        for output in outputs:
            position = output.outputs[0].logprobs[0]
            p, m = two_way(position[self.yes_id].logprob, position[self.no_id].logprob)
            p_yes.append(p)
            mass.append(m)
        return np.asarray(p_yes), np.asarray(mass)

    def continue_until_answer(self, prompts: list[str], max_tokens: int) -> list[Continuation]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=[ANSWER_PREFIX])
        outputs = self.llm.generate(self._prompts(prompts), params, lora_request=self.lora,
                                    use_tqdm=False)
        return [Continuation(o.outputs[0].text, o.outputs[0].stop_reason == ANSWER_PREFIX,
                             len(o.outputs[0].token_ids)) for o in outputs]

    def sample_until_answer(self, prompts: list[str], max_tokens: int, n: int,
                            temperature: float, seeds: Sequence[int]
                            ) -> list[list[Continuation]]:
        from vllm import SamplingParams

        params = [SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature,
                                 top_p=1.0, top_k=0, seed=seed, stop=[ANSWER_PREFIX])
                  for seed in one_seed_each(seeds, prompts)]
        outputs = self.llm.generate(self._prompts(prompts), params, lora_request=self.lora,
                                    use_tqdm=False)
        return [[Continuation(c.text, c.stop_reason == ANSWER_PREFIX, len(c.token_ids))
                 for c in o.outputs] for o in outputs]


def one_seed_each(seeds: Sequence[int], prompts: list) -> list[int]:
    """``seeds`` as a list, one per prompt, or a clear error."""
    seeds = list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: give each prompt "
                         "its own stream")
    return seeds
