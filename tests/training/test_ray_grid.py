"""A grid on a real local Ray cluster (started here, loopback only): the same results as
the local executor, and a run that fails takes only its own cell down."""

import csv
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.models import TrainingRun
from tests.helpers import audited_version
from tests.ray_head import ray_head
from training import runs

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[ray]')")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray head of this module's own (tests/ray_head.py says why), joined here."""
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with ray_head(log, dashboard=False) as head:
        ray.init(address=head.address, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def _grid(tiny_model, root: Path):
    from training.grid.config import ExperimentGrid

    return ExperimentGrid(
        name="ray", dataset="t", base_models=[tiny_model], runs_dir=str(root / "runs"),
        sft={"targets": ["label", "rationale-free"], "train_sizes": [8], "seeds": [0, 1],
             "learning_rates": [1e-3], "lora_ranks": [4],
             "settings": {"max_steps": 1, "per_device_train_batch_size": 4,
                          "max_length": 768, "precision": "fp32"}},
        fewshot=None, baseline=False,
        evaluation={"engine": "transformers", "n_bootstrap": 100, "limit": 8,
                    "min_reached_answer": 0.0,
                    "max_one_answer_share": 1.0})


def _table(folder: Path) -> list[dict]:
    with (Path(folder) / "results.csv").open() as handle:
        return [{k: v for k, v in row.items()
                 if k not in ("run_dir", "run_id", "train_seconds")}  # timing and local ids
                for row in csv.DictReader(handle)]


def _stamps(engine) -> tuple[list, list]:
    """When each run finished and each result was stored (a retrain or re-score moves them)."""
    from annotation_db.models import EvaluationResult

    with Session(engine) as session:
        return ([(r.id, r.finished_at) for r in session.execute(
                    select(TrainingRun).order_by(TrainingRun.id)).scalars()],
                [(e.id, Path(e.predictions_path).stat().st_mtime_ns) for e in session.execute(
                    select(EvaluationResult).order_by(EvaluationResult.id)).scalars()])


def _statuses(engine) -> list[str]:
    with Session(engine) as session:
        return [r.status for r in session.execute(select(TrainingRun)).scalars()]


def test_the_ray_executor_gives_the_local_executors_results(cluster, tiny_model,
                                                            tmp_path_factory):
    from training.grid.experiment import run_experiment
    from training.grid.ray import Executor, ray_runner

    local_root, ray_root = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray")
    local_engine = audited_version(f"sqlite:///{local_root / 'db.sqlite'}",
                                   local_root / "exports")
    ray_engine = audited_version(f"sqlite:///{ray_root / 'db.sqlite'}", ray_root / "exports")
    # A Ray task with one CPU runs torch on one thread; so does the local run here, since
    # on some CPUs (AMX) a different thread count changes the float sums, and with them
    # the order of the tiny model's near-tied P(yes).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_experiment(local_engine, _grid(tiny_model, local_root))
    finally:
        torch.set_num_threads(threads)
    on_ray = run_experiment(ray_engine, _grid(tiny_model, ray_root),
                            runner=ray_runner(Executor(kind="ray", max_concurrent=2)))
    assert len(_table(local["folder"])) == 4
    assert _table(on_ray["folder"]) == _table(local["folder"])
    assert _statuses(ray_engine) == ["finished"] * 4
    # a re-run on Ray reuses every run: nothing is trained or scored again
    before = _stamps(ray_engine)
    run_experiment(ray_engine, _grid(tiny_model, ray_root), runner=ray_runner(Executor(kind="ray")))
    assert _stamps(ray_engine) == before


def test_a_failing_run_leaves_the_other_three_finished(cluster, tiny_model, tmp_path):
    from training.grid.experiment import experiment_folder, run_experiment
    from training.grid.ray import Executor, ray_runner

    engine = audited_version(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "exports")
    grid = _grid(tiny_model, tmp_path)
    with Session(engine) as session:
        from annotation_db.export import get_version

        version_hash = get_version(session, "t").content_hash
    (_, [doomed]), *_ = [c for c in grid.sft_cells() if c[0]["seed"] == 1]
    # its run folder cannot be made: a file stands where the folder would go
    folder = runs.run_folder(grid.runs_dir, "sft", doomed.target, doomed.identity(version_hash))
    folder.parent.mkdir(parents=True)
    folder.write_text("in the way\n")
    with pytest.raises(runs.RunError,
                       match="1 of the grid's cells or scorings failed") as failure:
        run_experiment(engine, grid, runner=ray_runner(Executor(kind="ray", max_concurrent=2)))
    assert "FileExistsError" in str(failure.value)
    assert sorted(_statuses(engine)) == ["failed"] + ["finished"] * 3
    results = _table(experiment_folder(grid))
    assert len(results) == 3 and all(r["auroc"] for r in results)
    text = (experiment_folder(grid) / "results.md").read_text()
    assert "## Failed cells" in text and "seed 1" in text
