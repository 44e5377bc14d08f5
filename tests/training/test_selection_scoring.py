"""A tuned rationale cell chooses its learning rate and epochs on the score its test
result is compared in: with ``select_on: primary`` and sampled scoring added, the
candidates are scored on validation by sampled rationales, and the choice is the best of
those scores (the greedy validation score is not made at all)."""

import csv
import json
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from annotation_db.models import EvaluationResult
from tests.helpers import audited_version
from training.grid.config import ExperimentGrid, validation_rank


def test_a_rationale_cell_chooses_on_its_sampled_validation_score(tiny_model, tmp_path):
    from training.grid.experiment import run_experiment

    engine = audited_version(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "exports")
    grid = ExperimentGrid(
        name="select", dataset="t", base_models=[tiny_model],
        runs_dir=str(tmp_path / "runs"), fewshot=None, baseline=False,
        extra_scorings=["sampled"], select_on="primary",
        sft={"targets": ["rationale-free"], "train_sizes": [8], "seeds": [0],
             "learning_rates": [1e-3, 2e-3], "lora_ranks": [4],
             "settings": {"max_steps": 1, "per_device_train_batch_size": 4,
                          "max_length": 768, "validate_each_epoch": False}},
        evaluation={"engine": "transformers", "n_bootstrap": 100, "limit": 8,
                    "n_samples": 2, "min_reached_answer": 0.0,
                    "max_one_answer_share": 1.0})
    run_experiment(engine, grid)

    with Session(engine) as session:
        results = list(session.execute(select(EvaluationResult)).scalars())
    validation = {e.training_run_id: e for e in results if e.split == "validation"}
    assert len(validation) == 2
    assert {e.scoring for e in validation.values()} == {"sampled"}
    tested = {e.training_run_id for e in results if e.split == "test"}
    assert {e.scoring for e in results if e.split == "test"} == {"auto", "sampled"}  # own: greedy
    ids = sorted(validation)  # the candidates in the grid's order (ties go to the first)
    best = max(ids, key=lambda i: validation_rank(validation[i].metrics,
                                                  validation[i].auroc))
    assert tested == {best}

    folder = Path(grid.runs_dir) / "experiments" / "select"
    with (folder / "results.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["target"] == "rationale-free"]
    assert {r["tuned_on"] for r in rows} == {"validation (sampled)"}
    selection = json.loads((folder / "selection.json").read_text())
    [cell] = [c for c in selection["cells"] if c.get("target") == "rationale-free"]
    assert cell["run_id"] == best and cell["tuned_on"] == "validation (sampled)"
    # the choice is shown with every candidate's validation score, in the report too
    assert [(c["run_id"], c["validation_auroc"]) for c in cell["candidate_scores"]] == \
        [(i, validation[i].auroc) for i in ids]
    text = (folder / "results.md").read_text()
    assert "Tuning: each target's candidates, scored on validation" in text
    assert f"{cell['learning_rate']:g} × {cell['epochs']:g} |" in text
    # the seed-level section (the headline) comes before the tables of each run's own
    # scoring, which say what they score by
    assert text.index("## Seeds as the unit") < text.index(
        "## Each run in its own scoring (secondary)") < text.index("## Summary")
    assert "rationale-free: generate" in text
