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
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.export import get_version
from annotation_db.models import TrainingRun
from annotation_db.provenance import CommandConfig
from training import runs
from training.data import Target, read_view
from training.evaluate import EvaluateConfig, ScorerPool, evaluate_run, read_predictions
from training.fewshot import FewShotConfig, run_fewshot
from training.metrics import bootstrap_metrics, delong_test, holm
from training.sft import SFTRunConfig, train


class SFTFactors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Target] = ["label", "rationale-free", "rationale-stepwise"]
    train_sizes: list[int | None] = [None]
    seeds: list[int] = [0]
    lora_ranks: list[int] = [16]
    learning_rates: list[float] = [2e-4]
    epochs: list[float] = [2.0]
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="any other SFTRunConfig field, for every run")


class FewShotFactors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = [0, 4, 8]
    with_rationales: list[bool] = [True, False]
    seeds: list[int] = [0]
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="any other FewShotConfig field")


class ExperimentGrid(CommandConfig):
    """`rationale-audit experiment run GRID.yaml`."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                      description="names the report folder <runs_dir>/experiments/<name>")
    dataset: str = Field(description="dataset version every run trains and tests on")
    base_models: list[str] = ["bundled:smollm2-135m-instruct"]
    sft: SFTFactors | None = SFTFactors()
    fewshot: FewShotFactors | None = FewShotFactors()
    evaluation: dict[str, Any] = Field(default_factory=dict,
                                       description="EvaluateConfig fields (split is set here)")
    baseline: bool = Field(True, description="add a TF-IDF logistic regression on the same "
                                             "records as a non-LLM reference")
    runs_dir: str = "runs"
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
                runs_dir=self.runs_dir, cache_dir=self.cache_dir, **self.sft.settings)
                for lr, epochs in itertools.product(self.sft.learning_rates, self.sft.epochs)]
            cells.append(({"kind": "sft", "base_model": model, "target": target,
                           "train_size": size, "seed": seed, "lora_r": rank}, candidates))
        return cells

    def fewshot_runs(self) -> list[FewShotConfig]:
        if self.fewshot is None:
            return []
        evaluation = {k: v for k, v in self.evaluation.items()
                      if k in FewShotConfig.model_fields and k != "split"}
        out = []
        for model, k, with_r, seed in itertools.product(
                self.base_models, self.fewshot.ks, self.fewshot.with_rationales,
                self.fewshot.seeds):
            out.append(FewShotConfig(dataset=self.dataset, base_model=model, k=k,
                                     with_rationales=with_r, seed=seed, runs_dir=self.runs_dir,
                                     cache_dir=self.cache_dir,
                                     **{**evaluation, **self.fewshot.settings}))
        return out

    def evaluate_config(self, split: str) -> EvaluateConfig:
        return EvaluateConfig(**{**self.evaluation, "split": split})

    def size(self) -> dict[str, int]:
        cells = self.sft_cells()
        return {"sft_cells": len(cells), "sft_runs": sum(len(c) for _, c in cells),
                "fewshot_runs": len(self.fewshot_runs())}


_result = runs.result_for


def run_grid(engine: Engine, grid: ExperimentGrid, *,
             on_stage: Callable[[str], None] | None = None,
             on_run: Callable[[], None] | None = None) -> dict:
    """Train and score every cell (skipping what is done); return the selected run ids."""
    say = on_stage or (lambda _: None)
    tick = on_run or (lambda: None)
    pool = ScorerPool(grid.evaluation.get("engine", "auto"),
                      grid.evaluation.get("batch_size", 8),
                      max_lora_rank=max(grid.sft.lora_ranks) if grid.sft else 16)
    selected: list[dict] = []
    try:
        for factors, candidates in grid.sft_cells():
            scores = []
            for cfg in candidates:
                run = train(engine, cfg, on_stage=say)
                splits = ["validation", "test"] if len(candidates) > 1 else ["test"]
                for split in splits:
                    evaluation = grid.evaluate_config(split)
                    with Session(engine) as session:
                        done = _result(session, run.id, split,
                                       evaluation.settings_hash()) is not None
                    if not done:
                        evaluate_run(engine, str(run.id), evaluation, pool=pool, on_stage=say)
                with Session(engine) as session:
                    val = _result(session, run.id, splits[0])
                scores.append((val.auroc if val and val.auroc is not None else -1.0, run.id,
                               cfg))
                tick()
            best = max(scores, key=lambda s: s[0])
            selected.append({**factors, "run_id": best[1],
                             "learning_rate": best[2].learning_rate,
                             "epochs": best[2].num_train_epochs,
                             "tuned_on": "validation" if len(candidates) > 1 else None,
                             "candidates": [s[1] for s in scores]})
        pool.close()
        fewshot_pools: dict[str, ScorerPool] = {}
        for cfg in grid.fewshot_runs():
            if cfg.engine not in fewshot_pools:  # few-shot scores the base model only
                fewshot_pools[cfg.engine] = ScorerPool(cfg.engine, cfg.batch_size)
            result = run_fewshot(engine, cfg, pool=fewshot_pools[cfg.engine], on_stage=say)
            selected.append({"kind": "fewshot", "base_model": cfg.base_model, "k": cfg.k,
                             "with_rationales": cfg.with_rationales, "seed": cfg.seed,
                             "run_id": result.training_run_id})
            tick()
    finally:
        pool.close()
        for other in locals().get("fewshot_pools", {}).values():
            other.close()
    return {"name": grid.name, "cells": selected}


def _baseline(version, evaluation: EvaluateConfig) -> dict | None:
    """A TF-IDF logistic regression on the label-only records (all training rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train_rows = read_view(version, "label_only", "train")
    test_rows = read_view(version, "label_only", "test")
    if evaluation.limit:
        test_rows = test_rows[:evaluation.limit]
    if len({r["label"] for r in train_rows}) < 2 or len({r["label"] for r in test_rows}) < 2:
        return None
    vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z0-9.]+", sublinear_tf=True,
                                 ngram_range=(1, 2), min_df=1)
    x_train = vectorizer.fit_transform([r["prompt"][-1]["content"] for r in train_rows])
    x_test = vectorizer.transform([r["prompt"][-1]["content"] for r in test_rows])
    model = LogisticRegression(max_iter=2000, C=1.0).fit(x_train, [r["label"] for r in train_rows])
    y = np.asarray([r["label"] for r in test_rows])
    p = model.predict_proba(x_test)[:, 1]
    boot = bootstrap_metrics(y, p, threshold=evaluation.threshold,
                             n_resamples=evaluation.n_bootstrap, seed=evaluation.seed)
    return {name: est.as_dict() for name, est in boot.items()} | {
        "n": int(len(y)), "train_examples": len(train_rows)}


def _fmt(metric: dict | None) -> str:
    if not metric or metric.get("value") is None:
        return "–"
    if metric.get("low") is None:
        return f"{metric['value']:.3f}"
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def collect(engine: Engine, grid: ExperimentGrid, selection: dict) -> list[dict]:
    """One row per selected run with its factors, metrics and provenance."""
    rows = []
    test_hash = grid.evaluate_config("test").settings_hash()
    with Session(engine) as session:
        version = get_version(session, grid.dataset)
        for cell in selection["cells"]:
            run = session.get(TrainingRun, cell["run_id"])
            result = _result(session, run.id, "test", test_hash if run.kind == "sft" else None)
            if result is None and run.kind == "sft":
                raise runs.RunError(f"run {run.id} has no test result made with this grid's "
                                    "evaluation settings (was it re-scored elsewhere?); "
                                    "run `rationale-audit experiment run` again to re-score it")
            metrics = result.metrics if result else {}
            rows.append({**{k: v for k, v in cell.items() if k != "candidates"},
                         "target": cell.get("target") or run.target,
                         "n_test": result.n if result else None,
                         "auroc": metrics.get("auroc"), "auprc": metrics.get("auprc"),
                         "brier": metrics.get("brier"),
                         "balanced_accuracy": metrics.get("balanced_accuracy"),
                         "reached_answer_share": metrics.get("reached_answer_share"),
                         "mean_label_mass": metrics.get("mean_label_mass"),
                         "dataset_version": version.name,
                         "dataset_sha256": version.content_hash,
                         "run_dir": run.run_dir,
                         "predictions": result.predictions_path if result else None})
    return rows


def comparisons(rows: list[dict]) -> list[dict]:
    """Paired DeLong tests, label-only vs each rationale target per matched cell, Holm adjusted."""
    sft = [r for r in rows if r["kind"] == "sft" and r["predictions"]]
    key = ("base_model", "train_size", "seed", "lora_r")
    labels = {tuple(r[k] for k in key): r for r in sft if r["target"] == "label"}
    out = []
    for r in sft:
        if r["target"] == "label" or tuple(r[k] for k in key) not in labels:
            continue
        ref = labels[tuple(r[k] for k in key)]
        pa, pb = read_predictions(ref["predictions"]), read_predictions(r["predictions"])
        ids = sorted(set(pa) & set(pb))
        y = np.asarray([pa[i][0] for i in ids])
        if len(set(y.tolist())) < 2:
            continue
        test = delong_test(y, np.asarray([pa[i][1] for i in ids]),
                           np.asarray([pb[i][1] for i in ids]))
        out.append({**{k: r[k] for k in key}, "comparison": f"label vs {r['target']}",
                    "auroc_label": test.auc1, "auroc_rationale": test.auc2,
                    "difference": test.difference, "ci_low": test.ci_low,
                    "ci_high": test.ci_high, "z": test.z, "p_value": test.p_value,
                    "label_run": ref["run_id"], "rationale_run": r["run_id"]})
    for row, adjusted in zip(out, holm([r["p_value"] for r in out]), strict=True):
        row["p_holm"] = adjusted
    return out


def _figure(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sft = [r for r in rows if r["kind"] == "sft" and r["auroc"] and r["auroc"]["value"]]
    if not sft:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = sorted({r["train_size"] or 0 for r in sft})
    for offset, target in enumerate(sorted({r["target"] for r in sft})):
        xs, means, lows, highs = [], [], [], []
        for size in sizes:
            cell = [r["auroc"] for r in sft if r["target"] == target and (r["train_size"] or 0)
                    == size]
            if not cell:
                continue
            values = [c["value"] for c in cell]
            xs.append(size * (1 + 0.03 * (offset - 1)) if size else offset)
            means.append(float(np.mean(values)))
            lows.append(float(np.mean([c["low"] if c["low"] is not None else c["value"]
                                       for c in cell])))
            highs.append(float(np.mean([c["high"] if c["high"] is not None else c["value"]
                                        for c in cell])))
        yerr = [np.subtract(means, lows), np.subtract(highs, means)]
        ax.errorbar(xs, means, yerr=yerr, marker="o", capsize=3, label=target)
        for size in sizes:  # individual seeds as faint points
            cell = [r["auroc"]["value"] for r in sft if r["target"] == target
                    and (r["train_size"] or 0) == size]
            ax.scatter([size * (1 + 0.03 * (offset - 1))] * len(cell), cell, alpha=0.25, s=10)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    if len(sizes) > 1 and min(sizes) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples")
    ax.set_ylabel("test AUROC (mean over seeds; bars: mean 95% CI)")
    ax.set_title("AUROC by target and training-set size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


COLUMNS = ["kind", "base_model", "target", "train_size", "seed", "lora_r", "learning_rate",
           "epochs", "k", "with_rationales", "n_test", "auroc", "auprc", "brier",
           "balanced_accuracy", "reached_answer_share", "mean_label_mass", "run_id",
           "dataset_version", "dataset_sha256", "run_dir"]


def report(engine: Engine, grid: ExperimentGrid, selection: dict, out_dir: str | Path) -> dict:
    """Write results.csv/.md, comparisons.csv and the figure; return their paths and rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(engine, grid, selection)
    tests = comparisons(rows)
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS + [f"{m}_{b}" for m in
                                                   ("auroc", "auprc", "brier")
                                                   for b in ("low", "high")],
                                extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = dict(row)
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
    baseline = None
    if grid.baseline:
        with Session(engine) as session:
            baseline = _baseline(get_version(session, grid.dataset), grid.evaluate_config("test"))
    figure = _figure(rows, out / "auroc_by_size.png")
    (out / "results.md").write_text(markdown(grid, rows, tests, baseline, figure))
    summary = {"rows": len(rows), "comparisons": len(tests), "baseline": baseline,
               "figure": figure, "selection": selection}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return {"folder": str(out), "rows": rows, "comparisons": tests, "baseline": baseline}


def summary_by_target(rows: list[dict]) -> list[dict]:
    """Mean test AUROC/AUPRC over seeds and sizes per SFT target and few-shot setting."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        name = r["target"] if r["kind"] == "sft" else \
            f"few-shot k={r['k']} {'with' if r['with_rationales'] else 'without'} rationales"
        groups.setdefault(name, []).append(r)
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


def markdown(grid: ExperimentGrid, rows: list[dict], tests: list[dict], baseline: dict | None,
             figure: bool) -> str:
    lines = [f"# Experiment `{grid.name}`", "",
             f"Dataset version **{grid.dataset}** (sha256 `{rows[0]['dataset_sha256']}`)."
             if rows else "", "",
             "## Summary (mean over seeds and sizes)", "",
             "| setting | runs | mean AUROC | SD | mean AUPRC |", "|---|---|---|---|---|"]
    for s in summary_by_target(rows):
        lines.append(f"| {s['setting']} | {s['runs']} | "
                     + " | ".join("–" if v is None else f"{v:.3f}" for v in
                                  (s["mean_auroc"], s["sd_auroc"], s["mean_auprc"])) + " |")
    if baseline:
        lines += ["", f"Non-LLM reference (TF-IDF logistic regression on all "
                      f"{baseline['train_examples']} training records): AUROC "
                      f"{_fmt(baseline['auroc'])}, AUPRC {_fmt(baseline['auprc'])}."]
    if figure:
        lines += ["", "![AUROC by target and training-set size](auroc_by_size.png)"]
    lines += ["", "## SFT runs (test split; 95% bootstrap CIs)", "",
              "| target | size | seed | r | lr | epochs | AUROC | AUPRC | Brier | reached answer "
              "| run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "sft":
            continue
        reached = r["reached_answer_share"]
        lines.append(f"| {r['target']} | {r['train_size'] or 'all'} | {r['seed']} | "
                     f"{r['lora_r']} | {r['learning_rate']:g} | {r['epochs']:g} | "
                     f"{_fmt(r['auroc'])} | {_fmt(r['auprc'])} | {_fmt(r['brier'])} | "
                     f"{'–' if reached is None else f'{reached:.2f}'} | "
                     f"`{Path(r['run_dir']).name}` |")
    lines += ["", "## Paired DeLong tests: label-only vs rationale targets (Holm adjusted)", "",
              "| comparison | size | seed | AUROC label | AUROC rationale | difference [95% CI] "
              "| p | p (Holm) |", "|---|---|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(f"| {t['comparison']} | {t['train_size'] or 'all'} | {t['seed']} | "
                     f"{t['auroc_label']:.3f} | {t['auroc_rationale']:.3f} | "
                     f"{t['difference']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] | "
                     f"{t['p_value']:.3g} | {t['p_holm']:.3g} |")
    lines += ["", "## Few-shot (base model, demonstrations from the fewshot_pool)", "",
              "| k | demonstrations | seed | AUROC | AUPRC | reached answer | run |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "fewshot":
            continue
        reached = r["reached_answer_share"]
        lines.append(f"| {r['k']} | {'with' if r['with_rationales'] else 'without'} rationales "
                     f"| {r['seed']} | {_fmt(r['auroc'])} | {_fmt(r['auprc'])} | "
                     f"{'–' if reached is None else f'{reached:.2f}'} | "
                     f"`{Path(r['run_dir']).name}` |")
    return "\n".join(lines) + "\n"
