"""Benchmark: vLLM offline vs transformers batched generate, and structured-output overhead.

    .venv/bin/python benchmarks/generation.py             # 64 rationale prompts × 128 tokens
    .venv/bin/python benchmarks/generation.py --chats 16 --tokens 64

Same prompts (the label-conditioned free-form prompt on synthetic patients) and the same
output length for both engines (min = max tokens, so neither stops early). Then vLLM with
the per-patient JSON schema vs without it, same prompts, natural output lengths, compared
in tokens per second. Targets: vLLM ≥ 10× transformers; structured overhead ≤ 25 %.
Writes benchmarks/results/generation.json.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# This file is named like the `generation` package: keep its folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CHATS = 64  # prompts per measurement
TOKENS = 128  # generated tokens per prompt (forced) in the engine comparison
TF_BATCH = 16  # transformers batch size
WARMUP = 2  # prompts generated once before timing each engine


def prompts(n: int) -> tuple[list[list[dict]], list[dict]]:
    from generation.cohort import CohortConfig, generate
    from generation.prompts import template_for
    from generation.rationale_schema import json_schema

    records, _ = generate(CohortConfig(n=n, seed=13))
    template = template_for("label-conditioned", "free")
    chats = [template.messages(r, history_budget=700) for r in records]
    schemas = [json_schema([i["id"] for i in r["items"]], "free") for r in records]
    return chats, schemas


def bench_vllm(llm, chats, tokens: int, schemas=None, forced=True) -> dict:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    def params(schema):
        return SamplingParams(
            max_tokens=tokens, min_tokens=tokens if forced else 0, temperature=0.0,
            structured_outputs=StructuredOutputsParams(json=schema) if schema else None)

    warm = [params(s) for s in (schemas or [None] * len(chats))[:WARMUP]]
    llm.chat(chats[:WARMUP], warm, use_tqdm=False)
    all_params = [params(s) for s in (schemas or [None] * len(chats))]
    start = time.perf_counter()
    outputs = llm.chat(chats, all_params, use_tqdm=False)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    valid = None
    if schemas:
        valid = sum(_is_json(o.outputs[0].text) for o in outputs)
    return {"seconds": round(seconds, 2), "tokens": generated,
            "tokens_per_second": round(generated / seconds, 1), "valid_json": valid}


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def bench_transformers(path: str, chats, tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()

    def run(batch):
        texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                 for c in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return (out.shape[1] - inputs["input_ids"].shape[1]) * len(batch)

    run(chats[:WARMUP])
    start = time.perf_counter()
    generated = sum(run(chats[i:i + TF_BATCH]) for i in range(0, len(chats), TF_BATCH))
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "tokens": generated,
            "tokens_per_second": round(generated / seconds, 1), "batch_size": TF_BATCH}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=CHATS)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    args = parser.parse_args()

    from generation.engine import EngineOptions, load_vllm
    from generation.models import resolve_model

    model = resolve_model(args.model)
    chats, schemas = prompts(args.chats)
    llm = load_vllm(model, EngineOptions(max_model_len=4096))
    plain = bench_vllm(llm, chats, args.tokens)
    print(f"vLLM offline       : {args.chats} chats × {args.tokens} tokens in {plain['seconds']} s "
          f"= {plain['tokens_per_second']} tok/s")
    free = bench_vllm(llm, chats, 256, forced=False)
    structured = bench_vllm(llm, chats, 256, schemas=schemas, forced=False)
    overhead = 1 - structured["tokens_per_second"] / free["tokens_per_second"]
    print(f"vLLM unstructured  : {free['tokens']} tokens, {free['tokens_per_second']} tok/s")
    print(f"vLLM JSON schema   : {structured['tokens']} tokens, "
          f"{structured['tokens_per_second']} tok/s, {structured['valid_json']}/{args.chats} "
          f"valid JSON · throughput overhead {overhead:.1%} (target ≤ 25%)")
    del llm
    hf = bench_transformers(model.path, chats, args.tokens)
    ratio = plain["tokens_per_second"] / hf["tokens_per_second"]
    print(f"transformers       : {args.chats} chats × {args.tokens} tokens in {hf['seconds']} s "
          f"= {hf['tokens_per_second']} tok/s (batch {TF_BATCH})")
    print(f"vLLM / transformers: {ratio:.1f}x (target ≥ 10x)")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "generation.json").write_text(json.dumps({
        "chats": args.chats, "tokens": args.tokens, "model": args.model,
        "vllm": plain, "vllm_unstructured": free, "vllm_structured": structured,
        "structured_overhead": round(overhead, 4), "transformers": hf,
        "vllm_over_transformers": round(ratio, 2), "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
