"""Experiment grids: a YAML of factors → resumable runs → a results table and figure.

A grid crosses SFT targets × training-set sizes × seeds × base models × LoRA
ranks (× learning rates × epochs, the tuning budget every target gets alike),
and few-shot k × with/without rationales. Every cell is an ordinary run (see
:mod:`training.sft`, :mod:`training.fewshot`), so re-running a grid skips what
is finished and resumes what was interrupted. When a cell has more than one
learning-rate/epoch combination, each is scored on the validation split and the
best one (by validation AUROC) is the cell's test result.

:func:`report` writes ``results.csv`` and ``results.md`` (one row per run:
factors, AUROC/AUPRC/Brier with CIs, dataset version hash, run folder),
``comparisons.csv`` (paired DeLong, label-only vs each rationale format, Holm
adjusted), and ``auroc_by_size.png``.
"""

import csv
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.command_config import CommandConfig
from annotation_db.export import get_version
from annotation_db.models import EvaluationResult, TrainingRun
from generation.models import DEFAULT_MODEL
from training import archive, runs, seed_report
from training.data import TARGETS, Target, read_view
from training.evaluate import (
    EvaluateConfig,
    ScorerPool,
    evaluate_run,
    judge_validity,
    read_predictions,
    scorer_kind,
)
from training.fewshot import FewShotConfig, run_fewshot
from training.metrics import delong_test, holm, joint_paired_difference
from training.reading_rule import ReadingRule
from training.sft import SFTRunConfig, train
from training.tables import align, format_metric, number, table


class SFTFactors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Target] = ["label", "rationale-free", "rationale-stepwise"]
    train_sizes: list[int | None] = [None]
    seeds: list[int] = [0]
    lora_ranks: list[int] = [16]
    learning_rates: list[float] = [2e-4]
    epochs: list[float] = [2.0]
    pair_targets: bool = Field(True, description="every target of a (size, seed) cell trains "
                                                 "on the same patients")
    pair_with: list[Target] | None = Field(
        None, description="the targets whose patients form that common pool (default: "
        "`targets`); a mechanism grid names the main grid's targets here to train on the "
        "main comparison's patients and reuse its runs")
    tune_with_first_seed: bool = Field(
        True, description="choose learning rate × epochs on validation with the first seed "
                          "and reuse that choice for the other seeds")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="any other SFTRunConfig field, for every run")


class FewShotFactors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = [0, 4, 8]
    with_rationales: list[bool] = [True, False]
    seeds: list[int] = Field([0], description="demonstration draws (random selection); the "
                             "report gives mean ± SD over them")
    selections: list[Literal["random", "nearest"]] = Field(
        ["random"], description="random: one seeded set per draw; nearest: each query's most "
        "similar training records (TF-IDF), one run (it draws nothing)")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="any other FewShotConfig field")


class RunResources(BaseModel):
    """What each run asks a Ray cluster for (`experiment run --executor ray`)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0, description="1 on a GPU cluster: one run per GPU")
    memory_gb: float | None = Field(None, gt=0, description="RAM Ray reserves per run")


class ExperimentGrid(CommandConfig):
    """`rationale-audit experiment run GRID.yaml`."""

    ADDED_LATER = {"extra_scoring_targets": {}, "reading": None}

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                      description="names the report folder <runs_dir>/experiments/<name>")
    dataset: str = Field(description="dataset version every run trains and tests on")
    base_models: list[str] = [DEFAULT_MODEL]
    sft: SFTFactors | None = SFTFactors()
    fewshot: FewShotFactors | None = FewShotFactors()
    evaluation: EvaluateConfig = Field(
        default_factory=EvaluateConfig,
        description="how every run is scored (EvaluateConfig fields; the split is set per use)")
    extra_scorings: list[Literal["direct", "sampled"]] = Field(
        default_factory=list, description="scoring variants added on test for every selected "
        "model that writes a rationale before its answer (the cell's own scoring always "
        "runs and is the one compared in the main tables)")
    extra_scoring_targets: dict[Literal["direct", "sampled"], list[Target]] = Field(
        default_factory=dict, description="a variant of extra_scorings given only to the "
        "models trained on these targets (e.g. the costly sampled variant for the one model "
        "a contrast reads); a variant not named here goes to every rationale-writing model")
    reading: ReadingRule | None = Field(
        None, description="the mechanism section's reading rule, stated before the runs: "
        "its hash is in every SFT run's identity and the report refuses runs made under "
        "another (training/reading_rule.py); unset: the first report's post-hoc rule")
    baseline: bool = Field(True, description="add the non-LLM reference models "
                                             "(structured features, TF-IDF, age alone), "
                                             "fitted on each cell's training patients")
    runs_dir: str = "runs"
    resources: RunResources = Field(default_factory=RunResources,
                                    description="per run, when the runs are Ray tasks")
    archive: str | None = Field(
        None, description="a folder of finished runs carried between machines (small files "
        "that git can hold; see training/archive.py): restored into the database before the "
        "grid runs, and updated after every run and result")
    cache_dir: str | None = None

    def sft_cells(self) -> list[tuple[dict, list[SFTRunConfig]]]:
        """(cell factors, its tuning candidates) for every SFT cell of the grid."""
        if self.sft is None:
            return []
        cells = []
        for model, target, size, seed, rank in itertools.product(
                self.base_models, self.sft.targets, self.sft.train_sizes, self.sft.seeds,
                self.sft.lora_ranks):
            candidates = [SFTRunConfig(
                dataset=self.dataset, target=target, base_model=model, train_size=size,
                seed=seed, lora_r=rank, learning_rate=lr, num_train_epochs=epochs,
                paired_targets=self.paired_targets(),
                reading_rule=self.reading.digest() if self.reading else None,
                runs_dir=self.runs_dir, cache_dir=self.cache_dir, **self.sft.settings)
                for lr, epochs in itertools.product(self.sft.learning_rates, self.sft.epochs)]
            cells.append(({"kind": "sft", "base_model": model, "target": target,
                           "train_size": size, "seed": seed, "lora_r": rank}, candidates))
        return cells

    def paired_targets(self) -> list[str] | None:
        """The targets whose patients every run of a cell is drawn from (None: unpaired)."""
        if self.sft is None or not self.sft.pair_targets:
            return None
        pool = sorted(set(self.sft.pair_with or self.sft.targets))
        return pool if len(pool) > 1 or set(self.sft.targets) - set(pool) else None

    def fewshot_runs(self) -> list[FewShotConfig]:
        if self.fewshot is None:
            return []
        # the grid's scoring settings, where few-shot has a field of the same meaning (its
        # seed draws the demonstrations and the split is its own)
        evaluation = {k: v for k, v in self.evaluation.model_dump().items()
                      if k in FewShotConfig.model_fields and k not in ("split", "seed")}
        out, seen = [], set()
        for model, k, with_r, seed, selection in itertools.product(
                self.base_models, self.fewshot.ks, self.fewshot.with_rationales,
                self.fewshot.seeds, self.fewshot.selections):
            if k == 0:  # no demonstrations: nothing to draw, select or show rationales of
                with_r, seed, selection = False, self.fewshot.seeds[0], "random"
            elif selection == "nearest":
                seed = self.fewshot.seeds[0]
            settings = {**evaluation, **self.fewshot.settings}
            if len(self.fewshot.selections) > 1 or selection != "random":
                settings["selection"] = selection
            key = (model, k, with_r, seed, settings.get("selection"))
            if key in seen:
                continue
            seen.add(key)
            out.append(FewShotConfig(dataset=self.dataset, base_model=model, k=k,
                                     with_rationales=with_r, seed=seed, runs_dir=self.runs_dir,
                                     cache_dir=self.cache_dir, **settings))
        return out

    def evaluate_config(self, split: str, scoring: str | None = None) -> EvaluateConfig:
        update = {"split": split, **({"scoring": scoring} if scoring else {})}
        return self.evaluation.model_copy(update=update)

    def scorings_for(self, target: str) -> list[str]:
        """The extra scoring variants that apply to a model trained on ``target``."""
        if TARGETS[target].scoring != "generate":
            return []
        own = {"auto": "generate"}.get(self.evaluation.scoring, self.evaluation.scoring)
        return [v for v in self.extra_scorings if v != own
                and target in self.extra_scoring_targets.get(v, [target])]

    @model_validator(mode="after")
    def _extra_scoring_targets(self):
        for variant, targets in self.extra_scoring_targets.items():
            if variant not in self.extra_scorings:
                raise ValueError(f"extra_scoring_targets names {variant!r}, which is not in "
                                 f"extra_scorings {self.extra_scorings}")
            if not targets:
                raise ValueError(f"extra_scoring_targets[{variant!r}] is empty; to run no "
                                 f"{variant} scoring, leave it out of extra_scorings")
            wrong = [t for t in targets if TARGETS[t].scoring != "generate"]
            if wrong:
                raise ValueError(f"extra_scoring_targets[{variant!r}]: {', '.join(wrong)} "
                                 "answer without writing a rationale first, so no scoring "
                                 "variant applies to them")
            absent = [t for t in targets if self.sft is None or t not in self.sft.targets]
            if absent:
                raise ValueError(f"extra_scoring_targets[{variant!r}]: {', '.join(absent)} "
                                 "not among sft.targets")
        return self

    def size(self) -> dict[str, int]:
        cells = self.sft_cells()
        return {"sft_cells": len(cells), "sft_runs": sum(len(c) for _, c in cells),
                "fewshot_runs": len(self.fewshot_runs())}


_result = runs.result_for


def restore_archive(engine: Engine, grid: ExperimentGrid, say: Callable[[str], None]) -> None:
    if grid.archive:
        restored = archive.restore(engine, grid.archive, grid.runs_dir)
        say(f"archive {grid.archive}: {len(restored['restored'])} runs restored, "
            f"{len(restored['present'])} already here"
            + "".join(f"; skipped {s}" for s in restored["skipped"]))


def keep_archive(engine: Engine, grid: ExperimentGrid) -> None:
    """What is finished survives this machine (commit the archive folder). Called by the
    executor after each step, never inside one: Ray tasks run steps concurrently, and
    one process (the driver) writes the archive."""
    if grid.archive:
        archive.save(engine, grid.archive, grid.dataset)


def tuning_key(factors: dict) -> tuple:
    """Cells that share a tuning choice: the same everything but the seed."""
    return (factors["base_model"], factors["target"], factors["train_size"], factors["lora_r"])


def candidates_for(grid: ExperimentGrid, factors: dict, candidates: list[SFTRunConfig],
                   first_choice: dict[tuple, tuple[float, float]]
                   ) -> tuple[list[SFTRunConfig], str | None]:
    """The candidates a cell trains and how its choice is made: on validation, or
    (``tune_with_first_seed``) the first seed's choice reused."""
    tuned_on = "validation" if len(candidates) > 1 else None
    key = tuning_key(factors)
    if tuned_on and grid.sft.tune_with_first_seed and key in first_choice:
        candidates = [c for c in candidates
                      if (c.learning_rate, c.num_train_epochs) == first_choice[key]]
        tuned_on = f"validation, seed {grid.sft.seeds[0]}"
    return candidates, tuned_on


def waits_for_first_seed(grid: ExperimentGrid, factors: dict, candidates: list) -> bool:
    return (len(candidates) > 1 and grid.sft.tune_with_first_seed
            and factors["seed"] != grid.sft.seeds[0])


def score(engine: Engine, grid: ExperimentGrid, run_id: int, split: str,
          scoring: str | None, pool: ScorerPool, say: Callable[[str], None]
          ) -> EvaluationResult:
    """The run's stored result under the grid's evaluation settings, scored if missing."""
    evaluation = grid.evaluate_config(split, scoring)
    with Session(engine) as session:
        result = _result(session, run_id, split, evaluation.settings_hash(), evaluation.scoring)
    return result or evaluate_run(engine, str(run_id), evaluation, pool=pool, on_stage=say)


def train_candidate(engine: Engine, grid: ExperimentGrid, cfg: SFTRunConfig, tuned: bool,
                    pool: ScorerPool, say: Callable[[str], None]) -> tuple[tuple, int]:
    """Train one candidate (reused when finished) and, when the cell is tuned, score it
    on validation; returns (its rank key, run id)."""
    run = train(engine, cfg, on_stage=say)
    if not tuned:
        return (True, 0.0), run.id
    val = score(engine, grid, run.id, "validation", None, pool, say)
    valid = (val.metrics or {}).get("valid", True)
    return (valid, val.auroc if val.auroc is not None else -1.0), run.id


def score_chosen(engine: Engine, grid: ExperimentGrid, run_id: int, target: str,
                 pool: ScorerPool, say: Callable[[str], None]) -> None:
    """The chosen candidate on test, in its own scoring and the grid's variants."""
    score(engine, grid, run_id, "test", None, pool, say)
    for variant in grid.scorings_for(target):
        score(engine, grid, run_id, "test", variant, pool, say)


def chosen(scores: list[tuple[tuple, int, SFTRunConfig]]) -> tuple[tuple, int, SFTRunConfig]:
    """The best-ranked candidate: valid first, then validation AUROC; ties to the first."""
    return max(scores, key=lambda s: s[0])


def selection_entry(grid: ExperimentGrid, factors: dict, scores: list, tuned_on: str | None
                    ) -> dict:
    best = chosen(scores)
    return {**factors, "run_id": best[1], "learning_rate": best[2].learning_rate,
            "epochs": best[2].num_train_epochs, "tuned_on": tuned_on,
            "candidates": [s[1] for s in scores],
            "extra_scorings": grid.scorings_for(factors["target"])}


def fewshot_entry(cfg: FewShotConfig, run_id: int) -> dict:
    return {"kind": "fewshot", "base_model": cfg.base_model, "k": cfg.k,
            "with_rationales": cfg.with_rationales, "seed": cfg.seed,
            "selection": cfg.selection, "run_id": run_id}


def run_grid(engine: Engine, grid: ExperimentGrid, *,
             on_stage: Callable[[str], None] | None = None,
             on_run: Callable[[], None] | None = None) -> dict:
    """Train and score every cell (skipping what is done), one run after another in this
    process; return the selected run ids. (``training/ray_grid.py`` runs the same steps
    as Ray tasks.)

    A cell with several learning-rate × epochs candidates scores each on the
    validation split and only the chosen one on test; with ``tune_with_first_seed``
    the other seeds train only the first seed's choice.
    """
    from training.sft import process_group

    if process_group()[1] > 1:
        raise runs.RunError("a grid runs in one process (it trains, then scores, each run in "
                            "turn); data-parallel training is for `train sft` under "
                            "`accelerate launch`")
    say = on_stage or (lambda _: None)
    tick = on_run or (lambda: None)
    pool = ScorerPool(grid.evaluation.engine, grid.evaluation.batch_size,
                      max_lora_rank=max(grid.sft.lora_ranks) if grid.sft else 16,
                      server_url=grid.evaluation.server_url)
    # few-shot scores the base model: the SFT engine serves it when the kind is the same
    # (on CPU it loads the base weights back in place)
    fewshot_pools: dict[str, ScorerPool] = {pool.kind: pool}
    selected: list[dict] = []
    first_choice: dict[tuple, tuple[float, float]] = {}
    restore_archive(engine, grid, say)
    try:
        for factors, all_candidates in grid.sft_cells():
            candidates, tuned_on = candidates_for(grid, factors, all_candidates, first_choice)
            scores = []
            for cfg in candidates:
                rank, run_id = train_candidate(engine, grid, cfg, len(candidates) > 1, pool, say)
                keep_archive(engine, grid)
                scores.append((rank, run_id, cfg))
                tick()
            best = chosen(scores)
            score_chosen(engine, grid, best[1], factors["target"], pool, say)
            keep_archive(engine, grid)
            if len(scores) > 1 and factors["seed"] == grid.sft.seeds[0]:
                first_choice[tuning_key(factors)] = (best[2].learning_rate,
                                                     best[2].num_train_epochs)
            selected.append(selection_entry(grid, factors, scores, tuned_on))
        for cfg in grid.fewshot_runs():
            kind = scorer_kind(cfg.engine)
            if kind not in fewshot_pools:
                fewshot_pools[kind] = ScorerPool(kind, cfg.batch_size)
            result = run_fewshot(engine, cfg, pool=fewshot_pools[kind], on_stage=say)
            keep_archive(engine, grid)
            selected.append(fewshot_entry(cfg, result.training_run_id))
            tick()
    finally:
        for open_pool in fewshot_pools.values():  # the SFT pool is one of them
            open_pool.close()
    return {"name": grid.name, "cells": selected}


def references(engine: Engine, grid: ExperimentGrid, rows: list[dict]) -> list[dict]:
    """Both reference models per (size, seed) cell, on that cell's training patients."""
    from training.data import training_rows
    from training.reference import fit_references, structured_features

    evaluation = grid.evaluate_config("test")
    with Session(engine) as session:
        version = get_version(session, grid.dataset)
    test_rows = read_view(version, "label_only", "test")
    if evaluation.limit:
        test_rows = test_rows[:evaluation.limit]
    features = structured_features(engine, version)
    paired = grid.paired_targets()
    cells = sorted({(r["train_size"], r["seed"]) for r in rows if r["kind"] == "sft"},
                   key=lambda c: (c[0] or 0, c[1])) or [(None, 0)]
    out = []
    for size, seed in cells:
        train_rows = training_rows(version, "label", size, seed, paired)
        for name, result in fit_references(features, train_rows, test_rows, evaluation).items():
            out.append({"model": name, "train_size": size, "seed": seed,
                        "ids": [r["id"] for r in test_rows],
                        "labels": [int(r["label"]) for r in test_rows], **result})
    return out


def _json_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect(engine: Engine, grid: ExperimentGrid, selection: dict) -> list[dict]:
    """One row per selected run with its factors, metrics, validity and provenance."""
    rows = []
    with Session(engine) as session:
        version = get_version(session, grid.dataset)
        for cell in selection["cells"]:
            run = session.get(TrainingRun, cell["run_id"])
            variants = [None, *cell.get("extra_scorings", [])] if run.kind == "sft" else [None]
            for variant in variants:
                rows.append(_collect_row(session, grid, version, cell, run, variant))
    return rows


def _collect_row(session, grid: ExperimentGrid, version, cell: dict, run: TrainingRun,
                 variant: str | None) -> dict:
    evaluation = grid.evaluate_config("test", variant)
    result = _result(session, run.id, "test",
                     evaluation.settings_hash() if run.kind == "sft" else None,
                     evaluation.scoring if run.kind == "sft" else "auto")
    if result is None and run.kind == "sft":
        raise runs.RunError(f"run {run.id} has no test result made with this grid's "
                            "evaluation settings (was it re-scored elsewhere?); "
                            "run `rationale-audit experiment run` again to re-score it")
    metrics = judge_validity(dict(result.metrics), evaluation.min_reached_answer) \
        if result else {}
    folder = Path(run.run_dir)
    trained = _json_file(folder / "dataset.json")
    summary = _json_file(folder / "train_summary.json")
    target = cell.get("target") or run.target
    own = grid.evaluation.scoring
    scoring = variant or ((TARGETS[target].scoring if own == "auto" else own)
                          if run.kind == "sft" and target in TARGETS else None)
    row = {**{k: v for k, v in cell.items() if k not in ("candidates", "extra_scorings")},
            "target": target, "scoring": scoring, "extra_scoring": variant is not None,
            "n_test": result.n if result else None,
            "auroc": metrics.get("auroc"), "auprc": metrics.get("auprc"),
            "brier": metrics.get("brier"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "reached_answer_share": metrics.get("reached_answer_share"),
            "mean_label_mass": metrics.get("mean_label_mass"),
            "valid": metrics.get("valid", True),
            "invalid_reason": metrics.get("invalid_reason"),
            "invalid_code": metrics.get("invalid_code"),
            "rationale_token_cap": (metrics.get("rationale_token_cap") or {}).get("cap"),
            "completion_max": (metrics.get("rationale_token_cap") or {}).get("completion_max"),
            "truncated_train_rows": trained.get("truncated_examples"),
            "train_tokens": trained.get("tokens"),
            "train_loss_tokens": trained.get("loss_tokens"),
            "answer_weight_share": trained.get("answer_weight_share"),
            "truncated_test_prompts": metrics.get("truncated_prompts"),
            "precision": summary.get("precision"),
            "padding_share": summary.get("padding_share"),
            "train_seconds": summary.get("seconds"),
            "dataset_version": version.name,
            "dataset_sha256": version.content_hash,
            "run_dir": run.run_dir,
            "predictions": result.predictions_path if result else None}
    if row["predictions"]:
        figures = seed_report.run_figures(row, evaluation.max_one_answer_share)
        row.update(figures)
        if row["valid"] and figures["degenerate"]:  # left out like a run with no answer
            row.update(valid=False, invalid_reason=figures["degenerate"],
                       invalid_code="degenerate")
    return row


CELL = ("base_model", "train_size", "seed", "lora_r")


def _label_pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(label-only run, rationale run) of the same cell, both valid and scored."""
    sft = [r for r in rows if r["kind"] == "sft" and r["predictions"] and r["valid"]]
    labels = {tuple(r[k] for k in CELL): r for r in sft if r["target"] == "label"}
    return [(labels[tuple(r[k] for k in CELL)], r) for r in sft
            if r["target"] != "label" and tuple(r[k] for k in CELL) in labels]


def comparisons(rows: list[dict]) -> list[dict]:
    """Paired DeLong tests, label-only vs each valid rationale run per matched cell, Holm
    adjusted. Runs marked invalid are left out (see :func:`excluded`)."""
    out = []
    for ref, r in _label_pairs(rows):
        _, y, a, b = align(ref, r)
        if len(set(y.tolist())) < 2:
            continue
        test = delong_test(y, a, b)
        out.append({**{k: r[k] for k in CELL}, "comparison": f"label vs {r['target']}",
                    "auroc_label": test.auc1, "auroc_rationale": test.auc2,
                    "difference": test.difference, "ci_low": test.ci_low,
                    "ci_high": test.ci_high, "z": test.z, "p_value": test.p_value,
                    "label_run": ref["run_id"], "rationale_run": r["run_id"]})
    for row, adjusted in zip(out, holm([r["p_value"] for r in out]), strict=True):
        row["p_holm"] = adjusted
    return out


def excluded(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r["valid"]]


def joint_differences(rows: list[dict], n_resamples: int, seed: int) -> list[dict]:
    """Label-only minus each rationale target over all its valid cells at once, from one
    patient-level bootstrap shared by the cells (they share one test set)."""
    by_target: dict[str, list[tuple[dict, dict]]] = {}
    for ref, r in _label_pairs(rows):
        by_target.setdefault(r["target"], []).append((ref, r))
    out = []
    for target, pairs in sorted(by_target.items()):
        aligned = [align(ref, r) for ref, r in pairs]
        ids, y = aligned[0][0], aligned[0][1]
        if any(a[0] != ids for a in aligned):
            raise runs.RunError(f"label vs {target}: the cells were not scored on the same "
                                "patients; the joint bootstrap needs one test set")
        result = joint_paired_difference(y, [(a, b) for _, _, a, b in aligned], "auroc",
                                         n_resamples=n_resamples, seed=seed)
        out.append({"comparison": f"label vs {target}", **result,
                    "cells": [{k: r[k] for k in CELL} for _, r in pairs]})
    return out


def cell_summary(rows: list[dict], refs: list[dict]) -> list[dict]:
    """Mean ± SD of test AUROC over seeds, per target (and reference model) and size."""
    groups: dict[tuple, list[float]] = {}
    sft = [r for r in rows if r["kind"] == "sft"]
    several = len({(r["base_model"], r["lora_r"]) for r in sft}) > 1
    for r in sft:
        if r["auroc"] and r["auroc"].get("value") is not None:
            name = r["target"] + (f" [{r['base_model']}, r={r['lora_r']}]" if several else "") \
                + ("" if r["valid"] else " (invalid)")
            groups.setdefault((name, r["train_size"]), []).append(r["auroc"]["value"])
    for ref in refs:
        groups.setdefault((f"reference: {ref['model']}", ref["train_size"]), []).append(
            ref["auroc"]["value"])
    return [{"setting": name, "train_size": size, "seeds": len(values),
             "mean_auroc": float(np.mean(values)),
             "sd_auroc": float(np.std(values, ddof=1)) if len(values) > 1 else None}
            for (name, size), values in sorted(groups.items(), key=lambda g: (g[0][1] or 0,
                                                                               g[0][0]))]


def _figure(rows: list[dict], refs: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sft = [r for r in rows if r["kind"] == "sft" and r["valid"] and r["auroc"]
           and r["auroc"]["value"]]
    if not sft:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = sorted({r["train_size"] or 0 for r in sft})
    series = [(t, [(r["train_size"] or 0, r["auroc"]) for r in sft if r["target"] == t], "-")
              for t in sorted({r["target"] for r in sft})]
    series += [(f"{m} (reference)", [(r["train_size"] or 0, r["auroc"]) for r in refs
                                     if r["model"] == m], "--")
               for m in sorted({r["model"] for r in refs})]
    for offset, (name, members, style) in enumerate(series):
        xs, means, lows, highs = [], [], [], []
        for size in sizes:
            cell = [auroc for s, auroc in members if s == size]
            if not cell:
                continue
            shift = 1 + 0.04 * (offset - len(series) / 2)
            xs.append(size * shift if size else offset)
            means.append(float(np.mean([c["value"] for c in cell])))
            lows.append(float(np.mean([c["low"] if c["low"] is not None else c["value"]
                                       for c in cell])))
            highs.append(float(np.mean([c["high"] if c["high"] is not None else c["value"]
                                        for c in cell])))
            ax.scatter([xs[-1]] * len(cell), [c["value"] for c in cell], alpha=0.25, s=10)
        ax.errorbar(xs, means, yerr=[np.subtract(means, lows), np.subtract(highs, means)],
                    marker="o", capsize=3, label=name, ls=style)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    if len(sizes) > 1 and min(sizes) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("training patients")
    ax.set_ylabel("test AUROC (mean over seeds; bars: mean 95% CI)")
    ax.set_title("AUROC by target and training-set size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


COLUMNS = ["kind", "base_model", "target", "scoring", "train_size", "seed", "lora_r",
           "learning_rate",
           "epochs", "tuned_on", "k", "with_rationales", "n_test", "auroc", "auprc", "brier",
           "balanced_accuracy", "reached_answer_share", "mean_label_mass", "valid",
           "invalid_reason", "rationale_token_cap", "truncated_train_rows",
           "truncated_test_prompts", "precision", "padding_share", "run_id", "dataset_version",
           "dataset_sha256", "run_dir"]
PREDICTION_COLUMNS = ["run_id", "kind", "target", "scoring", "train_size", "seed", "k",
                      "with_rationales", "id", "label", "p_yes"]


def _write_predictions(rows: list[dict], refs: list[dict], path: Path) -> None:
    """Every scored patient of every run and reference, P(yes) at full precision."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            if not r["predictions"]:
                continue
            for pid, (label, p) in read_predictions(r["predictions"]).items():
                writer.writerow({**r, "id": pid, "label": label, "p_yes": repr(p)})
        for ref in refs:
            for pid, label, p in zip(ref["ids"], ref["labels"], ref["p_yes"], strict=True):
                writer.writerow({"run_id": "", "kind": "reference",
                                 "target": ref["model"], "train_size": ref["train_size"],
                                 "seed": ref["seed"], "id": pid, "label": label,
                                 "p_yes": repr(float(p))})


def report(engine: Engine, grid: ExperimentGrid, selection: dict, out_dir: str | Path) -> dict:
    """Write results.csv/.md, comparisons.csv, predictions.csv and the figure."""
    import os

    from training import mechanism

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    every_row = collect(engine, grid, selection)
    rows = [r for r in every_row if not r["extra_scoring"]]  # each cell's own scoring
    tests = comparisons(rows)
    evaluation = grid.evaluate_config("test")
    n_resamples = max(evaluation.n_bootstrap, 2000)
    joint = joint_differences(rows, n_resamples=n_resamples, seed=evaluation.seed)
    refs = references(engine, grid, rows) if grid.baseline else []
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS + [f"{m}_{b}" for m in
                                                   ("auroc", "auprc", "brier")
                                                   for b in ("low", "high")],
                                extrasaction="ignore")
        writer.writeheader()
        for row in every_row:
            flat = dict(row, run_dir=os.path.relpath(row["run_dir"], out))
            for m in ("auroc", "auprc", "brier", "balanced_accuracy"):
                metric = row.get(m) or {}
                flat[m] = metric.get("value")
                flat[f"{m}_low"], flat[f"{m}_high"] = metric.get("low"), metric.get("high")
            writer.writerow(flat)
    with (out / "comparisons.csv").open("w", newline="") as handle:
        if tests:
            writer = csv.DictWriter(handle, list(tests[0]))
            writer.writeheader()
            writer.writerows(tests)
    _write_predictions(every_row, refs, out / "predictions.csv")
    figure = _figure(rows, refs, out / "auroc_by_size.png")
    cells = cell_summary(rows, refs)
    text = markdown(grid, rows, tests, joint, cells, refs, figure)
    mechanism_data = None
    seed_lines, seed_data = seed_report.section(every_row, n_resamples, evaluation.seed)
    text += "\n".join(seed_lines) + "\n"
    if mechanism.applies(grid):
        lines, mechanism_data = mechanism.section(every_row, out, n_resamples, evaluation.seed,
                                                  grid.reading)
        text += "\n".join(lines) + "\n"
    if selection.get("failed"):
        text += "\n## Failed cells\n\nLeft out of every table above; re-run the grid once "\
                "the cause is fixed (finished runs are reused).\n\n" + "".join(
                    f"- {f.get('target', 'few-shot')}, size {f.get('train_size')}, seed "
                    f"{f.get('seed')}: {f['error']}\n" for f in selection["failed"])
    (out / "results.md").write_text(text)
    refs_brief = [{k: v for k, v in r.items() if k not in ("ids", "labels", "p_yes")}
                  for r in refs]
    summary = {"rows": len(rows), "comparisons": len(tests), "joint": joint,
               "references": refs_brief, "cells": cells, "figure": figure,
               "excluded": [{"run_id": r["run_id"], "scoring": r["scoring"],
                             "reason": r["invalid_reason"]}
                            for r in excluded(every_row)], "mechanism": mechanism_data,
               "seeds": seed_data,
               "selection": selection}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return {"folder": str(out), "rows": rows, "comparisons": tests, "joint": joint,
            "seeds": seed_data,
            "references": refs_brief, "cells": cells, "selection": selection,
            "mechanism": mechanism_data}


def experiment_folder(grid: ExperimentGrid) -> Path:
    """Where a grid's ``selection.json`` and (by default) its report live."""
    return Path(grid.runs_dir) / "experiments" / grid.name


def saved_selection(grid: ExperimentGrid) -> dict:
    """The selection a finished :func:`run_experiment` of ``grid`` wrote."""
    path = experiment_folder(grid) / "selection.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run the grid first "
                                "(`rationale-audit experiment run GRID`)")
    return json.loads(path.read_text())


def run_experiment(engine: Engine, grid: ExperimentGrid, *, out_dir: str | Path | None = None,
                   on_stage: Callable[[str], None] | None = None,
                   on_run: Callable[[], None] | None = None,
                   runner: Callable[..., dict] | None = None) -> dict:
    """The "run a grid" stage: every run (finished ones reused), its ``selection.json``,
    then its report in ``out_dir`` (default :func:`experiment_folder`). Called by the
    CLI, the job runner and ``experiment reproduce`` alike. ``runner`` executes the
    runs (default :func:`run_grid`; :func:`training.ray_grid.ray_runner` makes them Ray
    tasks); cells it reports failed are left out of the report and raised after it."""
    selection = (runner or run_grid)(engine, grid, on_stage=on_stage, on_run=on_run)
    folder = experiment_folder(grid)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    out = report(engine, grid, selection, out_dir or folder)
    if selection.get("failed"):
        raise runs.RunError(
            f"{len(selection['failed'])} of the grid's cells failed (the report in "
            f"{out['folder']} holds the others): " + "; ".join(
                f"{f.get('target', 'few-shot')} seed {f.get('seed')}: {f['error']}"
                for f in selection["failed"]))
    return out


def summary_by_target(rows: list[dict]) -> list[dict]:
    """Mean test AUROC/AUPRC over seeds and sizes per SFT target and few-shot setting."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        name = r["target"] if r["kind"] == "sft" else \
            f"few-shot k={r['k']} {'with' if r['with_rationales'] else 'without'} rationales"
        groups.setdefault(name + ("" if r["valid"] else " (invalid)"), []).append(r)
    out = []
    for name, members in groups.items():
        aurocs = [m["auroc"]["value"] for m in members if m["auroc"] and m["auroc"]["value"]
                  is not None]
        auprcs = [m["auprc"]["value"] for m in members if m["auprc"] and m["auprc"]["value"]
                  is not None]
        out.append({"setting": name, "runs": len(members),
                    "mean_auroc": float(np.mean(aurocs)) if aurocs else None,
                    "sd_auroc": float(np.std(aurocs, ddof=1)) if len(aurocs) > 1 else None,
                    "mean_auprc": float(np.mean(auprcs)) if auprcs else None})
    return out



def _describe(row: dict) -> str:
    if row["kind"] == "sft":
        return f"{row['target']}, size {row['train_size'] or 'all'}, seed {row['seed']}"
    return (f"few-shot k={row['k']} {'with' if row['with_rationales'] else 'without'} "
            f"rationales, seed {row['seed']}")


def markdown(grid: ExperimentGrid, rows: list[dict], tests: list[dict], joint: list[dict],
             cells: list[dict], refs: list[dict], figure: bool) -> str:
    lines = [f"# Experiment `{grid.name}`", "",
             f"Dataset version **{grid.dataset}** (sha256 `{rows[0]['dataset_sha256']}`)."
             if rows else "", "",
             "## Summary (mean over seeds and sizes)", ""]
    lines += table(["setting", "runs", "mean AUROC", "SD", "mean AUPRC"], (
        [s["setting"], s["runs"], number(s["mean_auroc"]), number(s["sd_auroc"]),
         number(s["mean_auprc"])] for s in summary_by_target(rows)))
    lines += ["", "## Per cell: test AUROC, mean ± SD over seeds", ""]
    lines += table(["setting", "training patients", "seeds", "mean AUROC", "SD"], (
        [c["setting"], c["train_size"] or "all", c["seeds"], f"{c['mean_auroc']:.3f}",
         number(c["sd_auroc"])] for c in cells))
    lines += ["", "## Label-only vs rationale SFT over all cells (joint paired bootstrap)", "",
              "Each replicate resamples the test patients once (stratified by label) and "
              "recomputes every cell's AUROC difference on them; the cells share one test "
              "set, so they are not independent evidence.", ""]
    lines += table(["comparison", "cells", "mean AUROC difference (label − rationale) "
                     "[95% CI]", "p"], (
        [j["comparison"], j["pairs"], f"{j['difference']:+.3f} [{j['low']:+.3f}, "
         f"{j['high']:+.3f}]", f"{j['p_value']:.3g}"] for j in joint)
        if joint else [["–", 0, "no valid pair of runs", "–"]])
    bad = excluded(rows)
    lines += ["", "## Validity", ""]
    if bad:
        lines += ["Runs left out of every comparison:", ""]
        lines += [f"- run {r['run_id']} ({_describe(r)}): {r['invalid_reason']}" for r in bad]
    else:
        lines.append("Every rationale run reached its answer line in at least the required "
                     "share of test patients; none was left out.")
    truncation: dict[str, list[int]] = {}
    for r in rows:
        if r["kind"] == "sft":
            truncation.setdefault(r["target"], []).append(r["truncated_train_rows"] or 0)
    if truncation:
        lines += ["", "Training rows whose history lost lines to `max_length` (per run): "
                  + "; ".join(f"{t}: {', '.join(map(str, v))}" for t, v in truncation.items())
                  + ". Test prompts truncated by the same rule: "
                  + "; ".join(f"{r['target']} run {r['run_id']}: {r['truncated_test_prompts']}"
                              for r in rows if r["kind"] == "sft"
                              and r["truncated_test_prompts"]) + (
                      "" if any(r["truncated_test_prompts"] for r in rows
                                if r["kind"] == "sft") else "none") + "."]
    padding = [r["padding_share"] for r in rows if r["kind"] == "sft"
               and r.get("padding_share") is not None]
    precisions = sorted({r["precision"] for r in rows if r["kind"] == "sft" and r["precision"]})
    if padding:
        lines += ["", f"Training precision: {', '.join(precisions)}; padding share of the "
                      f"training batches (grouped by length): {min(padding):.1%}–"
                      f"{max(padding):.1%}."]
    if refs:
        lines += ["", "## Reference models (same training and test patients as each cell)", ""]
        lines += table(["model", "training patients", "seed", "AUROC", "AUPRC"], (
            [r["model"], r["train_size"] or "all", r["seed"], format_metric(r["auroc"]),
             format_metric(r["auprc"])] for r in refs))
        lines += ["", "`structured`: logistic regression on age, sex, APOE ε4 count, "
                      "education, family history and indicators of every coded risk factor "
                      "and possible prodrome in the full record (the ceiling). `tfidf`: "
                      "logistic regression on the prompt's history text. `age`: logistic "
                      "regression on age alone (the floor)."]
    if figure:
        lines += ["", "![AUROC by target and training-set size](auroc_by_size.png)"]
    lines += ["", "## SFT runs (test split; 95% bootstrap CIs)", ""]
    lines += table(["target", "size", "seed", "r", "lr", "epochs", "tuned on", "AUROC",
                     "AUPRC", "Brier", "reached answer", "cap", "valid", "run"], (
        [r["target"], r["train_size"] or "all", r["seed"], r["lora_r"],
         f"{r['learning_rate']:g}", f"{r['epochs']:g}", r.get("tuned_on") or "–",
         format_metric(r["auroc"]), format_metric(r["auprc"]), format_metric(r["brier"]),
         number(r["reached_answer_share"], 2), r["rationale_token_cap"] or "–",
         "yes" if r["valid"] else "no", f"`{Path(r['run_dir']).name}`"]
        for r in rows if r["kind"] == "sft"))
    lines += ["", "## Paired DeLong tests per cell: label-only vs every other target "
                  "(Holm adjusted over all of them)", ""]
    lines += table(["comparison", "size", "seed", "AUROC label", "AUROC rationale",
                     "difference [95% CI]", "p", "p (Holm)"], (
        [t["comparison"], t["train_size"] or "all", t["seed"], f"{t['auroc_label']:.3f}",
         f"{t['auroc_rationale']:.3f}", f"{t['difference']:+.3f} [{t['ci_low']:+.3f}, "
         f"{t['ci_high']:+.3f}]", f"{t['p_value']:.3g}", f"{t['p_holm']:.3g}"]
        for t in tests))
    lines += ["", "## Few-shot (base model, demonstrations from the fewshot_pool)", ""]
    lines += table(["k", "demonstrations", "seed", "AUROC", "AUPRC", "reached answer",
                     "valid", "run"], (
        [r["k"], f"{'with' if r['with_rationales'] else 'without'} rationales", r["seed"],
         format_metric(r["auroc"]), format_metric(r["auprc"]),
         number(r["reached_answer_share"], 2), "yes" if r["valid"] else "no",
         f"`{Path(r['run_dir']).name}`"] for r in rows if r["kind"] == "fewshot"))
    return "\n".join(lines) + "\n"
