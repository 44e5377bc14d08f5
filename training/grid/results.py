"""A finished grid's results, read from the database: one typed row per scored run.

:func:`collect` is the only place a report reads the database for its runs (and
:func:`references` for the reference models' data); statistics and writing
(:mod:`.stats`, :mod:`.report`) take what these return.
"""

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.export import get_version
from annotation_db.models import TrainingRun
from annotation_db.provenance import sessions
from training import runs, seed_report
from training.data import TARGETS, read_view
from training.evaluate import judge_validity
from training.fewshot_config import FewShotConfig
from training.grid.config import ExperimentGrid
from training.targets import patient_of

Metric = dict[str, float | None]  # {"value", "low", "high"}: a metric and its 95% CI


@dataclass(frozen=True)
class ResultRow:
    """One selected run under one scoring: its factors, test metrics, validity and
    provenance. Factors a run's kind does not have (``k`` for SFT, ``lora_r`` for
    few-shot) are None; so are the figures of a run without predictions."""

    kind: str
    base_model: str | None = None
    target: str | None = None
    train_size: int | None = None
    seed: int | None = None
    lora_r: int | None = None
    run_id: int | None = None
    learning_rate: float | None = None
    epochs: float | None = None
    tuned_on: str | None = None
    k: int | None = None
    with_rationales: bool | None = None
    selection: str | None = None
    scoring: str | None = None
    extra_scoring: bool = False
    n_test: int | None = None
    auroc: Metric | None = None
    auprc: Metric | None = None
    brier: Metric | None = None
    balanced_accuracy: Metric | None = None
    reached_answer_share: float | None = None
    mean_label_mass: float | None = None
    valid: bool = True
    invalid_reason: str | None = None
    invalid_code: str | None = None
    rationale_token_cap: int | None = None
    completion_max: int | None = None
    truncated_train_rows: int | None = None
    train_tokens: int | None = None
    train_loss_tokens: int | None = None
    answer_weight_share: float | None = None
    truncated_test_prompts: int | None = None
    precision: str | None = None
    padding_share: float | None = None
    trained_under: str | None = None
    train_draw: str | None = None
    train_seconds: float | None = None
    dataset_version: str | None = None
    dataset_sha256: str | None = None
    run_dir: str | None = None
    predictions: str | None = None
    yes_rate: float | None = None
    mean_p_yes: float | None = None
    degenerate: str | None = None
    balanced_accuracy_matched: float | None = None
    align_alpha: float | None = None  # rationale-align: the label part's weight

    def as_dict(self) -> dict[str, Any]:
        """The row as the section writers that read rows by key take it
        (:mod:`training.seed_report`, :mod:`training.mechanism`), and as CSV writes it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELDS = frozenset(f.name for f in fields(ResultRow))


def _json_file(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collect(engine: Engine, grid: ExperimentGrid, selection: dict) -> list[ResultRow]:
    """One row per selected run and scoring (its own, then the grid's extra variants)."""
    rows = []
    with Session(engine) as session:
        version = get_version(session, grid.dataset)
        # a few-shot run's other scorings were made with the grid's own config of it (its
        # engine is no part of its identity, but of its results' settings)
        fewshots = {cfg.identity(version.content_hash): cfg for cfg in grid.fewshot_runs()}
        for cell in selection["cells"]:
            run = session.get(TrainingRun, cell["run_id"])
            variants = [None, *cell.get("extra_scorings", [])]
            for variant in variants:
                rows.append(_collect_row(session, grid, version, cell, run, variant,
                                         fewshots.get(run.config_hash)))
    return rows


def _collect_row(session, grid: ExperimentGrid, version, cell: dict, run: TrainingRun,
                 variant: str | None, fewshot: FewShotConfig | None = None) -> ResultRow:
    evaluation = grid.evaluate_config("test", variant)
    if run.kind == "sft":
        result = runs.result_for(session, run.id, "test", evaluation.settings_hash(),
                                 evaluation.scoring)
    elif variant:  # a few-shot run's scoring beside its own (sampled rationales)
        scored = grid.fewshot_evaluate_config(
            fewshot or FewShotConfig.from_stored(run.config), variant)
        result = runs.result_for(session, run.id, "test", scored.settings_hash(), variant)
    else:
        result = runs.result_for(session, run.id, "test")
    if result is None and (run.kind == "sft" or variant):
        raise runs.RunError(f"run {run.id} has no test result made with this grid's "
                            f"evaluation settings{f' ({variant})' if variant else ''} (was "
                            "it re-scored elsewhere?); run `rationale-audit experiment run` "
                            "again to re-score it")
    metrics = judge_validity(dict(result.metrics), evaluation.min_reached_answer) \
        if result else {}
    folder = Path(run.run_dir)
    trained = _json_file(folder / "dataset.json")
    target = cell.get("target") or run.target
    row = {**{k: v for k, v in cell.items() if k in FIELDS},
           "target": target, "scoring": _scoring(grid, run, target, variant),
           "extra_scoring": variant is not None, "n_test": result.n if result else None,
           **_metric_fields(metrics),
           **_training_fields(trained, _json_file(folder / "train_summary.json")),
           "align_alpha": run.config.get("align_alpha")
           if run.kind == "sft" and TARGETS.get(run.target) is not None
           and TARGETS[run.target].weighting == "align" else None,
           "trained_under": trained_under(folder) if run.kind == "sft" else None,
           "train_draw": train_draw(trained) if run.kind == "sft" else None,
           "dataset_version": version.name, "dataset_sha256": version.content_hash,
           "run_dir": run.run_dir,
           "predictions": result.predictions_path if result else None}
    if row["predictions"]:
        figures = seed_report.run_figures(row, evaluation.max_one_answer_share)
        row.update(figures)
        if row["valid"] and figures["degenerate"]:  # left out like a run with no answer
            row.update(valid=False, invalid_reason=figures["degenerate"],
                       invalid_code="degenerate")
    return ResultRow(**row)


def _scoring(grid: ExperimentGrid, run: TrainingRun, target: str, variant: str | None
             ) -> str | None:
    """How the row's run was scored: the variant, else its target's own way."""
    return variant or (grid.own_scoring(target)
                       if run.kind == "sft" and target in TARGETS else None)


def _metric_fields(metrics: dict) -> dict:
    cap = metrics.get("rationale_token_cap") or {}
    return {"auroc": metrics.get("auroc"), "auprc": metrics.get("auprc"),
            "brier": metrics.get("brier"),
            "balanced_accuracy": metrics.get("balanced_accuracy"),
            "reached_answer_share": metrics.get("reached_answer_share"),
            "mean_label_mass": metrics.get("mean_label_mass"),
            "valid": metrics.get("valid", True),
            "invalid_reason": metrics.get("invalid_reason"),
            "invalid_code": metrics.get("invalid_code"),
            "rationale_token_cap": cap.get("cap"), "completion_max": cap.get("completion_max"),
            "truncated_test_prompts": metrics.get("truncated_prompts")}


def _training_fields(trained: dict, summary: dict) -> dict:
    """What the run folder says of its training data and its training."""
    return {"truncated_train_rows": trained.get("truncated_examples"),
            "train_tokens": trained.get("tokens"),
            "train_loss_tokens": trained.get("loss_tokens"),
            "answer_weight_share": trained.get("answer_weight_share"),
            "precision": summary.get("precision"),
            "padding_share": summary.get("padding_share"),
            "train_seconds": summary.get("seconds")}


def train_draw(trained: dict) -> str | None:
    """The training patients a run was trained on, as a short digest of their sorted ids
    (the patients of ``dataset.json``'s ``example_ids``): two runs with the same digest
    trained on the same patients, whatever their target or dataset version (None where
    the folder does not say)."""
    ids = trained.get("example_ids")
    if not ids:
        return None
    patients = sorted({patient_of({"id": i}) for i in ids})
    return hashlib.sha256("\n".join(patients).encode()).hexdigest()[:12]


def trained_under(folder: Path) -> str | None:
    """The code a training run was trained under: its commit (12 characters; ``+dirty``
    for an uncommitted tree), then ``resumed under`` each later one. Where the session
    that began the run was not kept (its record predates ``resumed`` in
    ``provenance.json``, and the run was resumed), the text says the first commit is
    unknown."""
    records = [r for r in sessions(folder) if r.get("code_version")]
    if not records:
        return None
    versions = [_short(r["code_version"]) for r in records]
    steps = [versions[0]] + [v for prev, v in zip(versions, versions[1:], strict=False)
                             if v != prev]
    resumed_from = _json_file(folder / "train_summary.json").get("resumed_from")
    first = records[0]
    if "resumed" in first:
        known = first["resumed"] is False
    else:  # written before records were kept: known only for a run never resumed
        known = len(records) == 1 and not resumed_from
    text = RESUMED.join(steps)
    if known:
        return text
    what = f"resumed from {resumed_from}; " if resumed_from and len(records) == 1 else ""
    return f"{text} ({what}{UNKNOWN_FIRST})"


RESUMED = " resumed under "
UNKNOWN_FIRST = "the commit that began it is unknown"


def first_commit(trained: str | None) -> str | None:
    """The commit that began a run, from its ``trained_under`` (None where unknown)."""
    if not trained or UNKNOWN_FIRST in trained:
        return None
    return trained.split(RESUMED)[0].split(" (")[0]


def _short(version: str) -> str:
    """A commit as 12 characters (``+dirty`` kept); any other version as written."""
    if len(version) < 40:
        return version
    return version[:12] + ("+dirty" if version.endswith("+dirty") else "")


def references(engine: Engine, grid: ExperimentGrid, rows: list[ResultRow]) -> list[dict]:
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
    cells = sorted({(r.train_size, r.seed) for r in rows if r.kind == "sft"},
                   key=lambda c: (c[0] or 0, c[1])) or [(None, 0)]
    out = []
    for size, seed in cells:
        train_rows = training_rows(version, "label", size, seed, paired)
        for name, result in fit_references(features, train_rows, test_rows, evaluation).items():
            out.append({"model": name, "train_size": size, "seed": seed,
                        "ids": [r["id"] for r in test_rows],
                        "labels": [int(r["label"]) for r in test_rows], **result})
    return out
