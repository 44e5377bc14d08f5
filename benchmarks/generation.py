"""Benchmark: what generation costs, how often it closes, and how close to the machine.

    .venv/bin/python benchmarks/generation.py              # 64 prompts per measurement
    .venv/bin/python benchmarks/generation.py --chats 16   # a quick look

All on one vLLM engine (the bundled model, this machine's engine dtype), in one run:

1. **First-attempt validity**: the `generate` path (schema sized to the budget, no
   retries) on 64 patients per format at 128, 256 and 384 tokens. Target: 100 %.
2. **The project's own cost**: `generate` end to end (bounds, prompt rendering, engine,
   validation, grounding checks, database writes) against raw ``vllm.LLM.generate`` on
   the same token prompts with the same sampling parameters. Target: ≥ 90 % of raw tok/s.
3. **Shared-prefix reuse**: prefill tokens submitted vs computed (vLLM's
   ``num_cached_tokens``) and raw tok/s with prefix caching on vs off.
4. **Against the machine's limit**: a torch GEMM of the model's own shapes in float32 and
   bfloat16, and generation's achieved FLOP/s (2 × matmul parameters × tokens; a prefill
   token without the LM head, which runs for the last prompt token only; attention not
   counted), prefill and decode timed separately, as a share of the GEMM figure in the
   engine's dtype.
5. **vLLM vs transformers** batched ``generate`` at a forced length.

Writes benchmarks/results/generation.json.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the `generation` package: keep its folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CHATS = 64  # prompts per measurement
BUDGETS = (128, 256, 384)
FORCED_TOKENS = 128  # generated tokens per prompt (forced) in the engine comparison
TF_BATCH = 16  # transformers batch size
GEMM_TOKENS = 512  # rows of the GEMM benchmark (a prefill chunk)


class Recording:
    """A backend that passes requests to another and keeps what it was asked."""

    def __init__(self, backend):
        self.backend, self.name, self.calls = backend, backend.name, []

    def complete(self, requests, params):
        self.calls.append((list(requests), params))
        return self.backend.complete(requests, params)


def database(chats: int):
    from annotation_db import migrate
    from annotation_db.session import make_engine
    from generation.cohort_config import CohortConfig
    from generation.cohort_store import store_generated_cohort

    folder = tempfile.mkdtemp(prefix="bench-generation-")
    engine = make_engine(f"sqlite:///{folder}/bench.sqlite")
    migrate.upgrade(engine)
    store_generated_cohort(engine, CohortConfig(n=chats, seed=13))
    return engine


def run_generate(engine, backend, fmt: str, tokens: int, chats: int, seed: int = 0
                 ) -> tuple[dict, list]:
    """One `generate` run (a new run key per format, budget and seed); returns its figures
    and the requests it made."""
    from generation.rationales import generate_rationales
    from generation.rationales_config import GenerateConfig

    recording = Recording(backend)
    cfg = GenerateConfig(split="all", n=chats, format=fmt, max_tokens=tokens, retries=0,
                         batch_size=chats, seed=seed)
    started = time.perf_counter()
    summary = generate_rationales(engine, cfg, backend=recording)
    seconds = time.perf_counter() - started
    figures = {"format": fmt, "max_tokens": tokens, "prompts": summary.generated,
               "first_attempt_valid": summary.generated - summary.failed,
               "tokens": summary.tokens, "seconds": round(seconds, 2),
               "tokens_per_second": round(summary.tokens / seconds, 1),
               "bounds": summary.bounds.as_dict()}
    return figures, recording.calls


def raw_requests(llm, calls) -> tuple[list, list]:
    """The recorded chats as token prompts and the same SamplingParams as the backend's."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    tokenizer = llm.get_tokenizer()
    prompts, sampling = [], []
    for requests, params in calls:
        for r in requests:
            ids = tokenizer.apply_chat_template(r.messages, add_generation_prompt=True,
                                                tokenize=True)
            prompts.append({"prompt_token_ids": list(getattr(ids, "input_ids", ids))})
            sampling.append(SamplingParams(
                max_tokens=params.max_tokens, temperature=r.temperature, top_p=params.top_p,
                repetition_penalty=params.repetition_penalty, seed=r.seed,
                structured_outputs=StructuredOutputsParams(json=r.schema)))
    return prompts, sampling


def run_raw(llm, prompts, sampling) -> dict:
    llm.reset_prefix_cache()
    started = time.perf_counter()
    outputs = llm.generate(prompts, sampling, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    submitted = sum(len(o.prompt_token_ids) for o in outputs)
    cached = sum(o.num_cached_tokens or 0 for o in outputs)
    return {"tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1), "prefill_submitted": submitted,
            "prefill_cached": cached, "prefill_computed": submitted - cached}


def run_prefill_only(llm, prompts) -> float:
    from vllm import SamplingParams

    llm.reset_prefix_cache()
    started = time.perf_counter()
    llm.generate(prompts, SamplingParams(max_tokens=1), use_tqdm=False)
    return time.perf_counter() - started


def model_shapes(path: str) -> tuple[list[tuple[int, int]], int, int]:
    """The (in, out) shapes of one token's matmuls, their parameter count, and the count
    without the LM head (a prefill computes logits for the last prompt token only)."""
    config = json.loads(Path(path, "config.json").read_text())
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads",
                                                          config["num_attention_heads"])
    head = h // heads
    layer = [(h, h), (h, kv * head), (h, kv * head), (h, h), (h, inter), (h, inter), (inter, h)]
    shapes = layer * config["num_hidden_layers"] + [(h, config["vocab_size"])]
    total = sum(a * b for a, b in shapes)
    return shapes, total, total - h * config["vocab_size"]


def gemm_flops(shapes, dtype: str, tokens: int = GEMM_TOKENS, repeats: int = 3) -> float:
    """FLOP/s of torch matmuls of the model's shapes at ``tokens`` rows, in ``dtype``: each
    distinct shape timed (best of ``repeats``) and weighted by how often the model has it."""
    from collections import Counter

    import torch

    kind = getattr(torch, dtype)
    seconds = 0.0
    for (rows_in, cols), count in Counter(shapes).items():
        weight = torch.randn(rows_in, cols, dtype=kind)
        x = torch.randn(tokens, rows_in, dtype=kind)
        x @ weight  # warm-up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            x @ weight
            best = min(best, time.perf_counter() - started)
        seconds += count * best
    return 2 * tokens * sum(a * b for a, b in shapes) / seconds


def bench_forced(llm, prompts, tokens: int) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=0.0)
    llm.generate(prompts[:2], params, use_tqdm=False)
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"seconds": round(seconds, 2), "tokens": generated,
            "tokens_per_second": round(generated / seconds, 1)}


def bench_transformers(path: str, prompts, tokens: int, dtype: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()

    def run(batch):
        texts = [tokenizer.decode(p["prompt_token_ids"]) for p in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return (out.shape[1] - inputs["input_ids"].shape[1]) * len(batch)

    run(prompts[:2])
    started = time.perf_counter()
    generated = sum(run(prompts[i:i + TF_BATCH]) for i in range(0, len(prompts), TF_BATCH))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "tokens": generated,
            "tokens_per_second": round(generated / seconds, 1), "batch_size": TF_BATCH}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=CHATS)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    args = parser.parse_args()

    from generation.backends import VLLMBackend
    from generation.engine import EngineOptions, engine_dtype, load_vllm
    from generation.models import resolve_model

    model = resolve_model(args.model)
    dtype = engine_dtype()
    engine = database(args.chats)
    llm = load_vllm(model, EngineOptions(max_model_len=4096))
    backend = VLLMBackend(model, llm=llm)
    results: dict = {"chats": args.chats, "model": args.model, "engine_dtype": dtype}

    print(f"1. first-attempt validity, `generate` path, {args.chats} patients, no retries "
          "(the prompts' prefill is cached after the first run)")
    validity, recorded = [], {}
    for fmt in ("free", "stepwise"):
        for tokens in BUDGETS:
            figures, calls = run_generate(engine, backend, fmt, tokens, args.chats)
            validity.append(figures)
            recorded[(fmt, tokens)] = calls
            b = figures["bounds"]
            shape = (f"≤ {b['rationale_chars']} chars" if fmt == "free"
                     else f"≤ {b['steps']} steps × {b['step_chars']} chars")
            print(f"   {fmt:8} {tokens:3} tokens: {figures['first_attempt_valid']}/"
                  f"{figures['prompts']} valid · schema {shape}, ≤ {b['evidence']} ids · "
                  f"{figures['tokens_per_second']} tok/s")
    results["validity"] = validity

    print("2. the project's cost: `generate` end to end vs raw vllm.LLM.generate, "
          "both from an empty prefix cache")
    llm.reset_prefix_cache()
    project, calls = run_generate(engine, backend, "free", 384, args.chats, seed=1)
    prompts, sampling = raw_requests(llm, calls)
    raw = run_raw(llm, prompts, sampling)
    share = project["tokens_per_second"] / raw["tokens_per_second"]
    print(f"   raw vLLM {raw['tokens_per_second']} tok/s ({raw['tokens']} tokens) · generate "
          f"{project['tokens_per_second']} tok/s ({project['tokens']} tokens) · "
          f"{share:.1%} of raw (target ≥ 90%)")
    results["project_cost"] = {"raw": raw, "generate": project, "share_of_raw": round(share, 4)}

    print("3. shared-prefix reuse (prefix caching on)")
    print(f"   prefill: {raw['prefill_submitted']} tokens submitted, {raw['prefill_cached']} "
          f"from the cache, {raw['prefill_computed']} computed "
          f"({raw['prefill_cached'] / raw['prefill_submitted']:.1%} reused)")

    print("4. against the machine's limit")
    shapes, params, body_params = model_shapes(model.path)
    prefill_seconds = run_prefill_only(llm, prompts)
    decode_seconds = max(1e-9, raw["seconds"] - prefill_seconds)
    gemm = {d: gemm_flops(shapes, d) for d in ("float32", "bfloat16")}
    achieved = {"prefill": 2 * body_params * raw["prefill_computed"] / prefill_seconds,
                "decode": 2 * params * raw["tokens"] / decode_seconds}
    for d, value in gemm.items():
        print(f"   GEMM of the model's shapes ({GEMM_TOKENS} rows), {d}: "
              f"{value / 1e9:.1f} GFLOP/s")
    for phase, value in achieved.items():
        print(f"   {phase}: {value / 1e9:.2f} GFLOP/s = {value / gemm[dtype]:.1%} of the {dtype} "
              f"GEMM")
    results["machine"] = {
        "matmul_parameters": params, "matmul_parameters_without_lm_head": body_params,
        "gemm_rows": GEMM_TOKENS,
        "gemm_flops": {d: round(v) for d, v in gemm.items()},
        "prefill_seconds": round(prefill_seconds, 2), "decode_seconds": round(decode_seconds, 2),
        "achieved_flops": {k: round(v) for k, v in achieved.items()},
        "share_of_engine_dtype_gemm": {k: round(v / gemm[dtype], 4) for k, v in achieved.items()}}

    forced = bench_forced(llm, prompts, FORCED_TOKENS)
    del llm, backend
    print("   prefix caching off (a second engine, same prompts and sampling):")
    uncached = run_raw(load_vllm(model, EngineOptions(max_model_len=4096,
                                                      prefix_caching=False)), prompts, sampling)
    print(f"   raw vLLM {uncached['tokens_per_second']} tok/s without prefix caching vs "
          f"{raw['tokens_per_second']} with; {uncached['prefill_computed']} prefill tokens "
          f"computed vs {raw['prefill_computed']}")
    results["prefix_caching"] = {"on": raw, "off": uncached}

    print(f"5. vLLM vs transformers, {args.chats} prompts × {FORCED_TOKENS} tokens (forced)")
    hf = bench_transformers(model.path, prompts, FORCED_TOKENS, dtype)
    ratio = forced["tokens_per_second"] / hf["tokens_per_second"]
    print(f"   vLLM {forced['tokens_per_second']} tok/s · transformers "
          f"{hf['tokens_per_second']} tok/s (batch {TF_BATCH}) · {ratio:.1f}x")
    results["engines"] = {"vllm": forced, "transformers": hf,
                          "vllm_over_transformers": round(ratio, 2)}
    results.update(cpu_count=os.cpu_count(), machine=platform.machine())
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "generation.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
