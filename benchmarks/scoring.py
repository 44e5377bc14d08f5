"""Benchmark: P(yes) by one forward pass vs generate-and-parse, same engine, same prompts.

    .venv/bin/python benchmarks/scoring.py             # 64 test prompts, vLLM on CPU

Target: one-pass scoring ≥ 10× faster than generating an answer and parsing it.
Both use one vLLM engine on the bundled model and the label-only test prompts of a
small audited dataset (built in a temporary database):

- one pass: the prompt ends in "Final answer:"; ``max_tokens=1`` with
  ``logprob_token_ids=[yes, no]`` gives P(yes | yes or no) — a continuous score;
- generate-and-parse: greedy generation (up to ``--max-tokens``) from the opening of
  the assistant turn, then a regex for "Final answer: yes|no" — a hard label or none.

It also prints the figures a reproduction's ``--dry-run`` divides by: the engine's
start time, prefill tokens/s (the one-pass run), and rationale generation tokens/s
(greedy, stopped at "Final answer:", up to ``--rationale-tokens``) with every prompt in
one batch against batches of ``--small-batch``, the same prompts in the same run.

Writes benchmarks/results/scoring.json.
"""

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import re
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--history-budget", type=int, default=300)
    parser.add_argument("--rationale-tokens", type=int, default=160)
    parser.add_argument("--small-batch", type=int, default=8)
    args = parser.parse_args()

    from sqlmodel import Session
    from vllm import SamplingParams

    from annotation_db import migrate
    from annotation_db.export import get_version
    from annotation_db.session import make_engine
    from annotation_db.student_task import ANSWER_PREFIX
    from generation.engine import EngineOptions, load_vllm
    from generation.models import resolve_model
    from training.data import prompt_text, read_view
    from training.scoring import VLLMScorer
    from training.study import prepare_dataset
    from training.study_config import DataSettings

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'b.sqlite'}")
        migrate.upgrade(engine)
        prepare_dataset(engine, DataSettings(n=max(5 * args.prompts, 100), dataset="b",
                                             history_budget=args.history_budget),
                        exports_dir=Path(tmp) / "exports")
        with Session(engine) as session:
            rows = read_view(get_version(session, "b"), "label_only", "test")[:args.prompts]
    model = resolve_model("bundled:smollm2-135m-instruct")
    started = time.perf_counter()
    llm = load_vllm(model, EngineOptions(max_model_len=4096, dtype="float32"))
    engine_start = time.perf_counter() - started
    scorer = VLLMScorer(llm)
    heads = [prompt_text(scorer.tokenizer, r["prompt"]) for r in rows]
    scorer.label_probabilities(heads[:2])  # warm-up

    llm.reset_prefix_cache()
    started = time.perf_counter()
    p_yes, mass = scorer.label_probabilities([h + ANSWER_PREFIX for h in heads])
    one_pass = time.perf_counter() - started

    llm.reset_prefix_cache()
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    prompts = [{"prompt_token_ids": scorer.tokenizer(h, add_special_tokens=False)["input_ids"]}
               for h in heads]
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    generate = time.perf_counter() - started
    pattern = re.compile(r"final answer:\s*(yes|no)\b|^\s*(yes|no)\b", re.I)
    rationale = {}
    for label, size in (("one_batch", len(heads)), ("small_batches", args.small_batch)):
        llm.reset_prefix_cache()
        started = time.perf_counter()
        made = []
        for start in range(0, len(heads), size):
            made += scorer.continue_until_answer(heads[start:start + size],
                                                 args.rationale_tokens)
        seconds = time.perf_counter() - started
        tokens = sum(c.tokens for c in made)
        rationale[label] = {"batch": size, "seconds": round(seconds, 2),
                            "generated_tokens": tokens,
                            "tokens_per_second": round(tokens / seconds, 1)}
    parsed = [pattern.search(o.outputs[0].text) for o in outputs]
    result = {
        "prompts": len(rows),
        "prompt_tokens": sum(len(p["prompt_token_ids"]) for p in prompts),
        "one_pass_seconds": round(one_pass, 3), "generate_parse_seconds": round(generate, 3),
        "speedup": round(generate / one_pass, 2), "max_tokens": args.max_tokens,
        "generated_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
        "parsed_share": sum(m is not None for m in parsed) / len(parsed),
        "mean_label_mass": float(mass.mean()),
        "target": "speedup >= 10",
        "engine_start_seconds": round(engine_start, 1),
        "prefill_tokens_per_second": round(sum(len(p["prompt_token_ids"]) for p in prompts)
                                           / one_pass, 1),
        "rationale_generation": rationale,
        "one_batch_over_small": round(rationale["one_batch"]["tokens_per_second"]
                                      / rationale["small_batches"]["tokens_per_second"], 2),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "scoring.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
