"""What a reproduction scale will cost before it runs: `experiment reproduce --dry-run`.

The token counts are measured, not guessed: a small sample of the scale's own
cohort settings goes through the real pipeline (cohort → template rationales →
simulated audit → export) in a throw-away SQLite database, and its views are
tokenized with the base model's chat template. The times divide those counts by
the scale's ``throughput`` block — figures measured on a named machine by the
named benchmark commands (or, for an accelerator not measured here, stated and
labelled as such).
"""

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.data import TARGET_VIEWS, completion_lengths, read_view

SAMPLE_PATIENTS = 80


class Throughput(BaseModel):
    """Speeds a scale's budget is computed from (tokens per second, seconds)."""

    model_config = ConfigDict(extra="forbid")

    train_tokens_per_second: float = Field(gt=0, description="LoRA SFT, real tokens")
    prefill_tokens_per_second: float = Field(gt=0, description="scoring: prompt tokens")
    decode_tokens_per_second: float = Field(gt=0, description="scoring: generated tokens, "
                                                              "batched")
    engine_start_seconds: float = Field(ge=0, description="per scored run (merge + start)")
    data_seconds_per_patient: float = Field(ge=0, description="cohort → export, per patient")
    source: str = Field(description="where the figures come from: machine and command, or "
                                    "'stated, not measured'")


def sample_token_counts(data, grid) -> dict:
    """Mean tokens per example (and per completion) of each target, from a real sample."""
    from sqlmodel import Session

    from annotation_db import migrate
    from annotation_db.export import get_version
    from annotation_db.session import make_engine
    from generation.models import load_tokenizer, resolve_model
    from training.study import prepare_dataset

    base = grid.base_models[0]
    tokenizer = load_tokenizer(resolve_model(base, cache_dir=grid.cache_dir).path)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'sample.sqlite'}")
        migrate.upgrade(engine)
        n = min(SAMPLE_PATIENTS, data.n)
        started = time.perf_counter()
        sample = data.model_copy(update={"n": n, "dataset": "budget-sample"})
        prepare_dataset(engine, sample, exports_dir=Path(tmp) / "exports")
        seconds = time.perf_counter() - started
        out = {"sample_patients": n, "data_seconds_per_patient": seconds / n, "targets": {}}
        with Session(engine) as session:
            version = get_version(session, "budget-sample")
            for target, view in TARGET_VIEWS.items():
                rows = read_view(version, view, "train")
                if not rows:
                    continue
                completions = completion_lengths(tokenizer, rows)
                prompts = [len(tokenizer.apply_chat_template(
                    r["prompt"], add_generation_prompt=True, tokenize=True,
                    return_dict=True)["input_ids"]) for r in rows]
                out["targets"][target] = {
                    "prompt_tokens": float(np.mean(prompts)),
                    "completion_tokens": float(np.mean(completions)),
                    "completion_p99": float(np.percentile(completions, 99)),
                    "example_tokens": float(np.mean(prompts) + np.mean(completions))}
            counts = version.manifest["counts"]
            out["approved_share"] = {
                target: counts[view]["train"] / max(counts["label_only"]["train"], 1)
                for target, view in TARGET_VIEWS.items() if view in counts}
        engine.dispose()
    return out


def estimate(data, grid, throughput: Throughput, tokens: dict) -> list[dict]:
    """One row per stage: runs, examples, tokens, optimizer steps, generations, seconds."""
    from generation.cohort import CohortConfig

    split = CohortConfig(n=data.n).split_fractions
    n_val, n_test = round(data.n * split[1]), round(data.n * split[2])
    limit = grid.evaluation.limit
    if limit:
        n_val, n_test = min(n_val, limit), min(n_test, limit)
    t = throughput
    rows = [{"stage": "data: cohort → export (CPU; --data-only runs it ahead)", "runs": 1,
             "examples": data.n, "tokens": 0, "steps": 0, "generations": 0,
             "seconds": data.n * t.data_seconds_per_patient}]
    sft = {"stage": "SFT training", "runs": 0, "examples": 0, "tokens": 0.0, "steps": 0,
           "generations": 0, "seconds": 0.0}
    scoring = {"stage": "SFT scoring",
               "runs": 0, "examples": 0, "tokens": 0.0, "steps": 0, "generations": 0,
               "seconds": 0.0}
    first_seed = grid.sft.seeds[0] if grid.sft else None
    for factors, candidates in grid.sft_cells():
        target = tokens["targets"][factors["target"]]
        tuned = len(candidates) > 1
        if tuned and grid.sft.tune_with_first_seed and factors["seed"] != first_seed:
            candidates = candidates[:1]  # the first seed's choice only
        for cfg in candidates:
            examples = cfg.train_size or round(data.n * split[0])
            batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
            steps = math.ceil(examples / batch) * cfg.num_train_epochs
            n_tokens = examples * target["example_tokens"] * cfg.num_train_epochs
            sft["runs"] += 1
            sft["examples"] += examples
            sft["steps"] += int(steps)
            sft["tokens"] += n_tokens
            sft["seconds"] += n_tokens / t.train_tokens_per_second
            if len(candidates) > 1:
                _score(scoring, t, n_val, target, factors["target"] != "label")
        _score(scoring, t, n_test, target, factors["target"] != "label")
    rows += [sft, scoring]
    fewshot = {"stage": "few-shot", "runs": 0, "examples": 0, "tokens": 0.0,
               "steps": 0, "generations": 0, "seconds": 0.0}
    free = tokens["targets"].get("rationale-free") or tokens["targets"]["label"]
    label = tokens["targets"]["label"]
    for cfg in grid.fewshot_runs():
        demo = (free if cfg.with_rationales else label)["example_tokens"]
        prompt = {"prompt_tokens": label["prompt_tokens"] + cfg.k * demo,
                  "completion_tokens": free["completion_tokens"]}
        _score(fewshot, t, n_test if not cfg.limit else min(cfg.limit, n_test), prompt,
               cfg.with_rationales)
    rows.append(fewshot)
    return rows


def _score(row: dict, t: Throughput, n: int, target: dict, generates: bool) -> None:
    prefill = n * target["prompt_tokens"]
    decode = n * target["completion_tokens"] if generates else 0
    row["runs"] += 1
    row["examples"] += n
    row["tokens"] += prefill + decode
    row["generations"] += n if generates else 0
    row["seconds"] += (t.engine_start_seconds + prefill / t.prefill_tokens_per_second
                       + decode / t.decode_tokens_per_second)
