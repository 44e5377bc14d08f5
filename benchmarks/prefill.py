"""Benchmark: where generation time goes at real prompt lengths, and what the prefix cache saves.

    .venv/bin/python benchmarks/prefill.py               # 32 patients, history budget 1500
    .venv/bin/python benchmarks/prefill.py --patients 8

On one vLLM engine (the bundled model, this machine's engine dtype), the label-conditioned
free-form prompts of synthetic patients, as token prompts:

1. prefill only (1 token each) from an empty prefix cache;
2. 64 unconstrained tokens each, from an empty cache: the shared system-and-instruction
   prefix is computed once and reused (vLLM's ``num_cached_tokens``);
3. the same again with the cache warm (whole prompts reused);
4. under the run's JSON schema (one schema for all patients, as `generate` builds it),
   cache warm, natural lengths: structured decode against unconstrained decode.

Prints tokens/s and prefill tokens submitted vs cached for each. Writes
benchmarks/results/prefill.json.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# This file sits beside one named like the `generation` package: keep its folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=32)
    parser.add_argument("--history-budget", type=int, default=1500)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    args = parser.parse_args()

    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from generation.cohort import generate
    from generation.cohort_config import CohortConfig
    from generation.engine import EngineOptions, engine_dtype, load_vllm
    from generation.models import resolve_model
    from generation.prompts import template_for
    from generation.rationale_schema import json_schema
    from generation.rationales import run_evidence_ids

    model = resolve_model(args.model)
    records, _ = generate(CohortConfig(n=args.patients, seed=13))
    template = template_for("label-conditioned", "free")
    chats = [template.messages(r, history_budget=args.history_budget) for r in records]
    schema = json_schema(run_evidence_ids(records), "free")
    llm = load_vllm(model, EngineOptions(max_model_len=4096))
    tokenizer = llm.get_tokenizer()
    prompts = [{"prompt_token_ids": list(tokenizer.apply_chat_template(
        c, add_generation_prompt=True, tokenize=True)["input_ids"])} for c in chats]
    submitted = sum(len(p["prompt_token_ids"]) for p in prompts)
    print(f"{args.patients} prompts, {submitted} prompt tokens, engine dtype {engine_dtype()}")

    def run(label: str, params, cold: bool) -> dict:
        if cold:
            llm.reset_prefix_cache()
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - started
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        cached = sum(o.num_cached_tokens or 0 for o in outputs)
        print(f"{label:34}: {seconds:6.1f} s · {tokens} tokens ({tokens / seconds:.1f} tok/s) · "
              f"prefill {submitted - cached} computed, {cached} from the cache")
        return {"seconds": round(seconds, 2), "tokens": tokens, "prefill_cached": cached,
                "prefill_computed": submitted - cached}

    results = {
        "prefill_only": run("prefill only, cold cache", SamplingParams(max_tokens=1), True),
        "decode_cold": run("64 tokens, cold cache", SamplingParams(max_tokens=64,
                                                                   temperature=0.0), True),
        "decode_warm": run("64 tokens, warm cache", SamplingParams(max_tokens=64,
                                                                   temperature=0.0), False),
        "structured_warm": run("JSON schema (384 max), warm cache", SamplingParams(
            max_tokens=384, temperature=0.0,
            structured_outputs=StructuredOutputsParams(json=schema)), False),
    }
    prefill_rate = submitted / results["prefill_only"]["seconds"]
    free_rate = results["decode_warm"]["tokens"] / results["decode_warm"]["seconds"]
    structured_rate = (results["structured_warm"]["tokens"]
                       / results["structured_warm"]["seconds"])
    print(f"prefill {prefill_rate:.0f} tok/s · decode {free_rate:.1f} tok/s unconstrained, "
          f"{structured_rate:.1f} tok/s under the schema "
          f"({1 - structured_rate / free_rate:.0%} slower)")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "prefill.json").write_text(json.dumps({
        "patients": args.patients, "history_budget": args.history_budget, "model": args.model,
        "prompt_tokens": submitted, **results, "prefill_tokens_per_second": round(prefill_rate),
        "cpu_count": os.cpu_count(), "machine": platform.machine()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
