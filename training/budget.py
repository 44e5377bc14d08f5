"""What a reproduction scale will cost before it runs: `experiment reproduce --dry-run`.

The token counts are measured, not guessed: a small sample of the scale's own
cohort settings goes through the real pipeline (cohort → template rationales →
simulated audit → export) in a throw-away SQLite database, and its views are
tokenized with the base model's chat template. The times divide those counts by
the scale's ``throughput`` block — figures measured on a named machine by the
named benchmark commands (or, for an accelerator not measured here, stated and
labelled as such).
"""

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.data import (
    TARGET_VIEWS,
    TARGETS,
    completion_lengths,
    target_rows_by_patient,
)
from training.grid.config import candidates_for, tuning_key, waits_for_first_seed

SAMPLE_PATIENTS = 80


class Throughput(BaseModel):
    """Speeds a scale's budget is computed from (tokens per second, seconds)."""

    model_config = ConfigDict(extra="forbid")

    train_tokens_per_second: float = Field(gt=0, description="LoRA SFT, real tokens")
    prefill_tokens_per_second: float = Field(gt=0, description="scoring: prompt tokens")
    decode_tokens_per_second: float = Field(gt=0, description="scoring: generated tokens, "
                                                              "batched")
    sampled_decode_tokens_per_second: float | None = Field(
        None, gt=0, description="scoring: generated tokens of sampled rationales (n per "
        "patient decode together, so a batch holds n times the sequences); default: "
        "decode_tokens_per_second")
    engine_start_seconds: float = Field(ge=0, description="per scored run (merge + start)")
    data_seconds_per_patient: float = Field(ge=0, description="cohort → export, per patient")
    forward_over_training: float = Field(
        3, gt=0, description="tokens/s of the trainer's forward-only validation pass over "
        "those of a training step (CPU, 2026-12-02: 3.6; a forward is about a third of a "
        "step's work)")
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
            wanted = list(TARGET_VIEWS) + [t for t in (grid.sft.targets if grid.sft else [])
                                           if t not in TARGET_VIEWS]
            for target in wanted:
                groups = list(target_rows_by_patient(version, target, tokenizer).values())
                rows = [r for g in groups for r in g]
                if not rows:
                    continue
                completions = completion_lengths(tokenizer, rows)
                prompts = [len(tokenizer.apply_chat_template(
                    r["prompt"], add_generation_prompt=True, tokenize=True,
                    return_dict=True)["input_ids"]) for r in rows]
                per_patient = len(rows) / len(groups)
                out["targets"][target] = {
                    "prompt_tokens": float(np.mean(prompts)),
                    "completion_tokens": float(np.mean(completions)),
                    "completion_p99": float(np.percentile(completions, 99)),
                    "rows_per_patient": per_patient,
                    # per patient: multitask teaches two rows
                    "example_tokens": float(np.mean(prompts) + np.mean(completions))
                    * per_patient}
            counts = version.manifest["counts"]
            out["approved_share"] = {
                target: counts[view]["train"] / max(counts["label_only"]["train"], 1)
                for target, view in TARGET_VIEWS.items() if view in counts}
        engine.dispose()
    return out


def finished_work(engine, grid) -> dict | None:
    """What a database already holds for ``grid``: its dataset version's hash, and per
    finished SFT or few-shot run (by config hash) the results it has as (split, scoring, settings
    hash), which finished SFT runs have no weights here (``weightless``), each stored
    validation score's rank as a tuned cell ranks it (``ranks``: (config hash, scoring,
    settings hash) → (valid, AUROC)), and every run it holds, finished or not (``held``).
    None when the dataset version does not exist there yet."""
    from sqlalchemy import inspect, select, text
    from sqlmodel import Session

    from annotation_db.models import DatasetVersion, RunStatus, TrainingRun
    from training.grid.config import validation_rank

    tables = set(inspect(engine).get_table_names())
    if not {"dataset_version", "training_run", "evaluation_result"} <= tables:
        return None
    has_scoring = "scoring" in {c["name"] for c in inspect(engine).get_columns(
        "evaluation_result")}
    with Session(engine) as session:
        version = session.execute(select(DatasetVersion).where(
            DatasetVersion.name == grid.dataset)).scalars().first()
        if version is None:
            return None
        held = list(session.execute(select(TrainingRun).where(
            TrainingRun.dataset_version_id == version.id)).scalars())
        finished_runs = [run for run in held if run.status == RunStatus.finished]
        done: dict[str, set] = {run.config_hash: set() for run in finished_runs}
        # SFT runs restored without their weights: retrained if scored anew
        weightless = {run.config_hash for run in finished_runs if run.kind == "sft"
                      and not (Path(run.run_dir) / "adapter").is_dir()}
        ranks: dict[tuple, tuple] = {}
        for row in session.execute(text(
                "SELECT r.config_hash, e.split, e.metrics, e.auroc"
                + (", e.scoring" if has_scoring else "") + " FROM evaluation_result e "
                "JOIN training_run r ON r.id = e.training_run_id")):
            metrics = json.loads(row[2]) if isinstance(row[2], str) else (row[2] or {})
            if row[0] in done:
                key = (row[1], row[4] if has_scoring else "auto", metrics.get("settings_hash"))
                done[row[0]].add(key)
                if row[1] == "validation":
                    ranks[(row[0], *key[1:])] = validation_rank(metrics, row[3])
        return {"version_hash": version.content_hash, "runs": done, "weightless": weightless,
                "ranks": ranks, "held": {run.config_hash for run in held}}


def estimate(data, grid, throughput: Throughput, tokens: dict,
             finished: dict | None = None) -> list[dict]:
    """One row per stage: runs, examples, tokens, optimizer steps, generations, seconds.

    With ``finished`` (:func:`finished_work`), a run already trained, or a result
    already stored, costs nothing and is counted in the stage's ``reused``."""
    from generation.cohort_config import CohortConfig

    split = CohortConfig(n=data.n).split_fractions
    n_val, n_test = round(data.n * split[1]), round(data.n * split[2])
    limit = grid.evaluation.limit
    if limit:
        n_val, n_test = min(n_val, limit), min(n_test, limit)
    rows = [_data_row(data, throughput, finished)]
    sft, scoring = _stage_row("SFT training"), _stage_row("SFT scoring")
    first_choice: dict[tuple, tuple] = {}  # the first seed's cells come before the later
    for factors, candidates in grid.sft_cells():
        _add_sft_cell(sft, scoring, factors, candidates, data=data, grid=grid,
                      throughput=throughput, tokens=tokens, finished=finished,
                      first_choice=first_choice, train_share=split[0], n_val=n_val,
                      n_test=n_test)
    rows += [sft, scoring]
    rows.append(_fewshot_row(grid, throughput, tokens, finished, n_test))
    return rows


def _stage_row(stage: str) -> dict:
    """A stage's row with nothing counted yet."""
    return {"stage": stage, "runs": 0, "examples": 0, "tokens": 0.0, "steps": 0,
            "generations": 0, "seconds": 0.0, "reused": 0}


def _data_row(data, t: Throughput, finished: dict | None) -> dict:
    """The cohort → export stage (reused when the dataset version exists)."""
    # an archive holds runs but not the dataset version: the data stage still runs
    data_done = bool(finished) and finished.get("data_done", True)
    return {"stage": "data: cohort → export (CPU; --data-only runs it ahead)", "runs": 1,
            "examples": data.n, "tokens": 0, "steps": 0, "generations": 0,
            "seconds": 0.0 if data_done else data.n * t.data_seconds_per_patient,
            "reused": 1 if data_done else 0}


def _stored(grid, finished: dict | None, cfg, split: str, variant: str | None = None) -> bool:
    """Whether ``finished`` holds this run's result on ``split`` under the evaluation's
    current scoring and settings."""
    if not finished:
        return False
    evaluation = grid.evaluate_config(split, variant)
    return (split, evaluation.scoring, evaluation.settings_hash()) in finished.get(
        "runs", {}).get(cfg.identity(finished["version_hash"]), set())


def _add_sft_cell(sft: dict, scoring: dict, factors: dict, candidates: list, *, data, grid,
                  throughput: Throughput, tokens: dict, finished: dict | None,
                  first_choice: dict, train_share: float, n_val: int, n_test: int) -> None:
    """One SFT cell as the grid runs it (:mod:`training.grid.steps`): train each candidate
    (score it on validation when tuning), score the chosen one on test, and once per
    extra scoring variant. ``first_choice`` carries the first seed's expected choices
    (tuning key → learning rate, epochs) to the later seeds that reuse them."""
    t = throughput
    runs_done = (finished or {}).get("runs", {})
    target = tokens["targets"][factors["target"]]
    generates = TARGETS[factors["target"]].scoring == "generate"
    candidates, _ = candidates_for(grid, factors, candidates, first_choice)
    if waits_for_first_seed(grid, factors, candidates):  # its choice cannot be told yet
        candidates = _trained_or_first(candidates, finished)
    tuned = len(candidates) > 1
    selected = grid.selection_scoring(factors["target"])  # the validation score ranked
    val_samples = grid.evaluation.n_samples if selected == "sampled" else 0
    val_generates = generates if selected is None else selected == "sampled"
    retrained = [c for c in candidates if _must_retrain(  # scored on validation if tuned
        grid, finished, c, tuned, factors["target"])]
    choice = _expected_choice(grid, finished, candidates, retrained, selected) if tuned \
        else candidates[0]
    if tuned and choice is not None:
        first_choice[tuning_key(factors)] = (choice.learning_rate, choice.num_train_epochs)
    if choice is not None and choice not in retrained and finished and _lacks(
            grid, finished, choice, grid.scores_needed(factors["target"], tuned=False,
                                                       chosen=True)):
        # without weights and lacking a test score, the choice is trained again (and in
        # a tuned cell validated again) before any test score (steps.score_chosen); the
        # cell may then choose another candidate, which this estimate cannot know
        retrained.append(choice)
    for cfg in candidates:
        if finished and cfg.identity(finished["version_hash"]) in runs_done \
                and cfg not in retrained:
            sft["runs"] += 1
            sft["reused"] += 1
            if tuned:
                _score(scoring, t, n_val, target, val_generates, samples=val_samples,
                       reused=_stored(grid, finished, cfg, "validation", selected),
                       prefilled=selected == "prefilled")
            continue
        patients = cfg.train_size or round(data.n * train_share)
        _add_training(sft, cfg, t, target, tokens["targets"]["label"], patients, n_val)
        if tuned:
            _score(scoring, t, n_val, target, val_generates, samples=val_samples,
                   prefilled=selected == "prefilled")
    # the chosen candidate is scored on test; when the choice cannot be told yet, count
    # a test scoring reused if any candidate whose results stay holds it
    tested = [choice] if choice is not None else candidates
    kept = [c for c in tested if c not in retrained]  # a retrained run's results go
    for variant in [None, *grid.scorings_for(factors["target"])]:
        samples = grid.evaluation.n_samples if variant == "sampled" else 0
        _score(scoring, t, n_test, target,
               generates if variant is None else variant == "sampled",
               samples=samples, reused=any(_stored(grid, finished, c, "test", variant)
                                           for c in kept), prefilled=variant == "prefilled")


def _trained_or_first(candidates: list, finished: dict | None) -> list:
    """A later seed's one candidate while the first seed's choice cannot be told: one this
    seed already trained (it was the choice once), else the first (every candidate of a
    cell costs about the same per epoch)."""
    done = (finished or {}).get("runs", {})
    trained = [c for c in candidates if finished
               and c.identity(finished["version_hash"]) in done]
    return (trained or candidates)[:1]


def _must_retrain(grid, finished: dict | None, cfg, tuned: bool, target: str) -> bool:
    """Whether the grid will train this finished run again before its validation score:
    it has no weights here and lacks the validation score its cell ranks it by
    (:meth:`ExperimentGrid.scores_needed`). Test scores are the choice's: a candidate
    holding test scores from an earlier choice is not trained again for them (the
    expected choice is, below)."""
    if not finished:
        return False
    return _lacks(grid, finished, cfg, grid.scores_needed(
        target, tuned=tuned, chosen=False))


def _lacks(grid, finished: dict, cfg, needed: list) -> bool:
    """Whether a finished run without weights here lacks one of the ``needed`` scores."""
    if cfg.identity(finished["version_hash"]) not in finished.get("weightless", set()):
        return False
    return any(not _stored(grid, finished, cfg, split, variant) for split, variant in needed)


def _expected_choice(grid, finished: dict | None, candidates: list, retrained: list,
                     selected: str | None = None):
    """The candidate a tuned cell will choose from the stored validation scores (in the
    ``selected`` scoring variant); None when some candidate still has to be trained,
    retrained or scored first."""
    if not finished or retrained:
        return None
    evaluation = grid.evaluate_config("validation", selected)
    ranks = [finished.get("ranks", {}).get((cfg.identity(finished["version_hash"]),
                                            evaluation.scoring, evaluation.settings_hash()))
             for cfg in candidates]
    if any(rank is None for rank in ranks):
        return None
    return candidates[max(range(len(candidates)), key=ranks.__getitem__)]  # ties: first


def _add_training(sft: dict, cfg, t: Throughput, target: dict, label: dict, patients: int,
                  n_val: int) -> None:
    """One SFT run's examples, steps, tokens and seconds (with its diagnostics)."""
    examples = round(patients * target.get("rows_per_patient", 1))
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    steps = math.ceil(examples / batch) * cfg.num_train_epochs
    n_tokens = patients * target["example_tokens"] * cfg.num_train_epochs
    sft["runs"] += 1
    sft["examples"] += examples
    sft["steps"] += int(steps)
    sft["tokens"] += n_tokens
    sft["seconds"] += n_tokens / t.train_tokens_per_second
    # diagnostics: a direct validation pass per epoch and the gradient probe
    # (one forward and two backward passes ≈ three token passes of its rows); the
    # validation pass is the trainer's own model, forward only
    if cfg.validate_each_epoch:
        sft["seconds"] += (math.ceil(cfg.num_train_epochs) * n_val
                           * label["prompt_tokens"]
                           / (t.forward_over_training * t.train_tokens_per_second))
    probes = steps // cfg.probe_steps + 1
    sft["seconds"] += (probes * cfg.probe_rows * target["example_tokens"]
                       / target.get("rows_per_patient", 1)
                       / t.train_tokens_per_second)


def _fewshot_row(grid, t: Throughput, tokens: dict, finished: dict | None,
                 n_test: int) -> dict:
    """The few-shot runs: each scores the test split with its demonstrations."""
    from training.evaluate import scorer_kind

    fewshot = _stage_row("few-shot")
    runs_done = (finished or {}).get("runs", {})
    free = tokens["targets"].get("rationale-free") or tokens["targets"]["label"]
    label = tokens["targets"]["label"]
    for cfg in grid.fewshot_runs():
        held = runs_done.get(cfg.identity(finished["version_hash"]), ()) if finished else ()
        demos = cfg.k * (free if cfg.with_rationales else label)["example_tokens"]
        # `random` shows every query one seeded set of demonstrations: vLLM's prefix
        # cache computes them once, so each query pays for its own record only
        shared = cfg.selection == "random" and scorer_kind(cfg.engine) == "vllm"
        prompt = {"prompt_tokens": label["prompt_tokens"] + (0 if shared else demos),
                  "completion_tokens": free["completion_tokens"]}
        n = n_test if not cfg.limit else min(cfg.limit, n_test)
        # its own scoring (any stored result on its split is it), then sampled rationales
        passes = [(None, any(split == cfg.split and scoring == "auto"
                             for split, scoring, _ in held))]
        for variant in grid.fewshot_scorings(cfg):
            evaluation = grid.fewshot_evaluate_config(cfg, variant)
            passes.append((evaluation, (cfg.split, variant, evaluation.settings_hash())
                           in held))
        for evaluation, reused in passes:
            _score(fewshot, t, n, prompt, cfg.with_rationales,
                   samples=evaluation.n_samples if evaluation else 0, reused=reused)
            if shared and not reused:
                fewshot["tokens"] += demos
                fewshot["seconds"] += demos / t.prefill_tokens_per_second
    return fewshot


def _score(row: dict, t: Throughput, n: int, target: dict, generates: bool,
           samples: int = 0, reused: bool = False, prefilled: bool = False) -> None:
    if reused:
        row["runs"] += 1
        row["reused"] += 1
        return
    per = max(samples, 1)
    # a prefilled pass reads its filler too (about a completion's length), generating none
    prefill = n * (target["prompt_tokens"] + (target["completion_tokens"] if prefilled
                                              else 0))
    decode = n * target["completion_tokens"] * per if generates else 0
    if samples:  # each sample's text is read again for its P(yes)
        prefill += n * samples * (target["prompt_tokens"] + target["completion_tokens"])
    row["runs"] += 1
    row["examples"] += n
    row["tokens"] += prefill + decode
    row["generations"] += n * per if generates else 0
    decode_rate = (t.sampled_decode_tokens_per_second or t.decode_tokens_per_second
                   ) if samples else t.decode_tokens_per_second
    row["seconds"] += (t.engine_start_seconds + prefill / t.prefill_tokens_per_second
                       + decode / decode_rate)
