"""One failure policy for both runners: a step that raises fails its own cell (and the
later seeds waiting for its tuning choice); every other cell runs on, and the failures
come back with the selected runs. A chosen run that had to be retrained for its test
scores is ranked anew, alike in both. The steps are stand-ins here, so the local runner
and the Ray runner's driver (fed by a synchronous stand-in for Ray) run in milliseconds."""

import contextlib
import json
from types import SimpleNamespace

import pytest

from training import runs
from training.grid.cells import FailedCell, GridResult
from training.grid.config import ExperimentGrid

DOOMED = ("label", 0, 2e-3)  # (target, seed, learning rate) whose training raises


def _grid(tmp_path) -> ExperimentGrid:
    return ExperimentGrid(
        name="failing", dataset="t", base_models=["m"], runs_dir=str(tmp_path / "runs"),
        sft={"targets": ["label", "rationale-free"], "train_sizes": [8], "seeds": [0, 1],
             "learning_rates": [1e-3, 2e-3], "lora_ranks": [4]},
        fewshot={"ks": [0, 4], "with_rationales": [False]}, baseline=False)


def _run_id(target: str, seed: int, lr: float) -> int:
    return 100 * ["label", "rationale-free"].index(target) + 10 * seed + int(lr * 1000)


def _train_candidate(engine, grid, cfg, tuned, pool, say):
    if (cfg.target, cfg.seed, cfg.learning_rate) == DOOMED:
        raise FileExistsError(f"{cfg.target} seed {cfg.seed}: in the way")
    return (True, cfg.learning_rate), _run_id(cfg.target, cfg.seed, cfg.learning_rate)


def _run_fewshot(engine, grid, cfg, pool=None, say=None):
    if cfg.k == 4:
        raise RuntimeError("no demonstrations")
    if cfg.k == 2:  # the run and its own scoring finish; its sampled scoring fails
        return 900 + cfg.k, [], [("sampled", "RuntimeError: out of memory")]
    return 900 + cfg.k, ["sampled"] if cfg.with_rationales else [], []


@pytest.fixture()
def stand_ins(monkeypatch):
    """The steps both runners share, replaced where each runner looks them up."""
    from training.grid import local, ray

    scored: list[int] = []
    for module in (local, ray):
        monkeypatch.setattr(module, "restore_archive", lambda *a: None)
        monkeypatch.setattr(module, "keep_archive", lambda *a: None)
    monkeypatch.setattr(local, "train_candidate", _train_candidate)
    monkeypatch.setattr(local, "score_chosen", lambda e, g, run_id, *a: scored.append(run_id))
    monkeypatch.setattr(local, "run_fewshot_scorings", _run_fewshot)
    monkeypatch.setattr(local, "ScorerPool", lambda kind, *a, **k: SimpleNamespace(
        kind=kind, close=lambda: None))
    # Ray tasks: the same stand-ins behind the task signatures
    monkeypatch.setattr(ray, "candidate_task", lambda place, grid, cfg, tuned: _train_candidate(
        None, None, SimpleNamespace(**cfg), tuned, None, None))
    monkeypatch.setattr(ray, "test_task", lambda place, grid, run_id, target, tuned:
                        scored.append(run_id))
    monkeypatch.setattr(ray, "retrain_due", lambda *a: False)
    monkeypatch.setattr(ray, "fewshot_task", lambda place, grid, cfg: _run_fewshot(
        None, None, SimpleNamespace(**cfg)))
    return scored


class _Ref:
    def __init__(self, fn, args):
        try:
            self.value, self.error = fn(*args), None
        except Exception as exc:  # noqa: BLE001 - handed back by get(), as Ray does
            self.value, self.error = None, exc


class _SynchronousRay:
    """Ray's remote/wait/get as the driver uses them, each task run when submitted."""

    def remote(self, **options):
        return lambda fn: SimpleNamespace(remote=lambda *args: _Ref(fn, args))

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error:
            raise ref.error
        return ref.value


def _local(grid) -> GridResult:
    from training.grid.local import run_grid

    return run_grid(None, grid)


def _on_ray(grid, max_concurrent) -> GridResult:
    from training.grid.ray import Executor, _Driver

    executor = Executor(kind="ray", max_concurrent=max_concurrent)
    return _Driver(_SynchronousRay(), None, ("", ""), grid, executor, lambda _: None,
                   lambda: None).run()


def test_a_failing_candidate_fails_its_cell_and_the_seeds_waiting_for_its_choice(
        stand_ins, tmp_path):
    result = _local(_grid(tmp_path))
    assert [(c["target"], c["seed"], c["run_id"]) for c in result.cells if c["kind"] == "sft"] \
        == [("rationale-free", 0, 102), ("rationale-free", 1, 112)]
    assert result.failed == [
        FailedCell({"kind": "sft", "base_model": "m", "target": "label", "train_size": 8,
                    "seed": 0, "lora_r": 4}, "FileExistsError: label seed 0: in the way"),
        FailedCell({"kind": "sft", "base_model": "m", "target": "label", "train_size": 8,
                    "seed": 1, "lora_r": 4},
                   "the first seed's cell failed (FileExistsError: label seed 0: in the way)"),
        FailedCell({"kind": "fewshot", "target": "fewshot-k4-label", "k": 4,
                    "with_rationales": False, "seed": 0, "selection": "random"},
                   "RuntimeError: no demonstrations")]
    assert [c["run_id"] for c in result.cells if c["kind"] == "fewshot"] == [900]
    assert sorted(stand_ins) == [102, 112]  # only the kept cells are scored on test


@pytest.mark.parametrize("max_concurrent", [1, 3, None])
def test_the_ray_driver_gives_the_local_runners_result_and_failures(stand_ins, tmp_path,
                                                                    max_concurrent):
    assert _on_ray(_grid(tmp_path), max_concurrent) == _local(_grid(tmp_path))


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_a_few_shot_runs_failed_sampled_scoring_leaves_the_run_in_the_report(
        stand_ins, tmp_path, runner):
    """A few-shot run whose own scoring finished stays selected (with the scorings it has)
    when its sampled scoring fails; that scoring alone is listed as failed."""
    grid = _grid(tmp_path).model_copy(update={"fewshot": _grid(tmp_path).fewshot.model_copy(
        update={"ks": [2], "with_rationales": [True]})})
    result = _local(grid) if runner == "local" else _on_ray(grid, 2)
    (entry,) = [c for c in result.cells if c["kind"] == "fewshot"]
    assert (entry["run_id"], entry["extra_scorings"]) == (902, [])
    (failed,) = [f for f in result.failed if f.factors["kind"] == "fewshot"]
    assert failed.factors["scoring"] == "sampled"
    assert failed.error == "RuntimeError: out of memory"
    from training.grid.report_files import describe_failed

    assert describe_failed(failed.factors) == (
        "few-shot k=2 with rationales, random selection, seed 0, its sampled scoring only "
        "(the run and its own scoring are in the tables)")


WEIGHTLESS = 102  # rationale-free seed 0 at 2e-3: chosen, then retrained and ranked lower


@pytest.fixture()
def a_choice_retrained_lower(monkeypatch):
    """The test step as it is for a chosen run restored without its weights: the first
    time, it retrains the run and hands back its new validation rank instead of scoring
    it; the retrained run then has its weights."""
    from training.grid import local, ray

    scored, retrained = [], []

    def score_chosen(run_id, tuned):
        if run_id == WEIGHTLESS and run_id not in retrained:
            retrained.append(run_id)
            assert tuned
            return (True, 0.0005)  # below the other candidate's 0.001
        scored.append(run_id)
        return None

    monkeypatch.setattr(local, "score_chosen",
                        lambda e, g, run_id, target, tuned, *a: score_chosen(run_id, tuned))
    monkeypatch.setattr(ray, "test_task", lambda place, grid, run_id, target, tuned:
                        score_chosen(run_id, tuned))
    monkeypatch.setattr(ray, "retrain_due", lambda e, g, run_id, target:
                        run_id == WEIGHTLESS and run_id not in retrained)
    return scored


def _sft_choices(result: GridResult) -> list[tuple]:
    return [(c["target"], c["seed"], c["run_id"], c["learning_rate"])
            for c in result.cells if c["kind"] == "sft"]


@pytest.mark.parametrize("runner", ["local", "ray, one task at a time", "ray, all at once"])
def test_a_chosen_run_retrained_for_its_test_scores_is_chosen_again_on_its_new_score(
        stand_ins, a_choice_retrained_lower, tmp_path, runner):
    grid = _grid(tmp_path)
    result = (_local(grid) if runner == "local"
              else _on_ray(grid, 1 if "one" in runner else None))
    # seed 0 chose 2e-3 (run 102); retrained, it ranks below 1e-3: the cell and the
    # seed that reuses its choice both take 1e-3, and only those runs are scored on test
    assert ("rationale-free", 0, 101, 1e-3) in _sft_choices(result)
    assert ("rationale-free", 1, 111, 1e-3) in _sft_choices(result)
    assert sorted(a_choice_retrained_lower) == [101, 111]
    cell = next(c for c in result.cells if c.get("run_id") == 101)
    assert cell["candidates"] == [101, 102]


def test_a_chosen_run_still_without_weights_after_its_retrain_is_an_error_not_a_loop(
        monkeypatch, tmp_path):
    from training.grid import steps

    retrains = []
    monkeypatch.setattr(steps, "retrain_due", lambda *a: True)  # no adapter appears
    monkeypatch.setattr(steps, "retrain_if_weightless",
                        lambda engine, run_id, why, say: retrains.append(run_id) or True)
    with pytest.raises(runs.RunError, match="run 7 was retrained but its folder has no adapter"):
        steps.score_chosen(None, _grid(tmp_path), 7, "rationale-free", True, None, print)
    assert retrains == [7]


def test_the_selection_lists_failures_only_when_there_are_some():
    ok = GridResult("g", [{"run_id": 1}])
    assert ok.selection() == {"name": "g", "cells": [{"run_id": 1}]}
    bad = GridResult("g", [], [FailedCell({"target": "label", "seed": 1}, "boom")])
    assert bad.selection()["failed"] == [{"target": "label", "seed": 1, "error": "boom"}]


def test_run_experiment_writes_the_report_of_the_others_then_raises(monkeypatch, tmp_path):
    from training.grid import experiment

    grid = _grid(tmp_path)
    failed = FailedCell({"target": "label", "seed": 1}, "FileExistsError: in the way")
    written = {}
    monkeypatch.setattr(experiment, "report", lambda engine, grid, selection, out: written.update(
        selection=selection) or {"folder": str(out)})
    with pytest.raises(runs.RunError, match="1 of the grid's cells or scorings failed .*label, "
                                            "size all, seed 1: FileExistsError: in the way"):
        experiment.run_experiment(None, grid, runner=lambda *a, **k: GridResult(
            grid.name, [{"run_id": 7}], [failed]))
    saved = json.loads((experiment.experiment_folder(grid) / "selection.json").read_text())
    assert saved == written["selection"] == {
        "name": "failing", "cells": [{"run_id": 7}],
        "failed": [{"target": "label", "seed": 1, "error": "FileExistsError: in the way"}]}
    # a caller with more report to write (experiment reproduce) gets the error back instead
    out = experiment.run_experiment(None, grid, raise_failed=False,
                                    runner=lambda *a, **k: GridResult(grid.name, [], [failed]))
    assert isinstance(out["failure"], runs.RunError) \
        and "label, size all, seed 1" in str(out["failure"])


def test_a_failed_few_shot_run_is_told_apart_from_the_others_of_its_seed():
    """Up to five few-shot runs share a seed (k, with or without rationales, selection):
    a failure names all of it, in the report's list and the error alike."""
    from training.fewshot_config import FewShotConfig
    from training.grid.cells import fewshot_failure
    from training.grid.report_files import describe_failed, failed_section

    failed = fewshot_failure(FewShotConfig(dataset="t", k=4, selection="nearest"), "boom")
    assert describe_failed(failed.factors) == ("few-shot k=4 with rationales, nearest "
                                               "selection, seed 0")
    assert failed_section([{**failed.factors, "error": "boom"}]).endswith(
        "- few-shot k=4 with rationales, nearest selection, seed 0: boom\n")


def test_reading_a_grid_loads_neither_torch_nor_the_database():
    import subprocess
    import sys

    code = ("import sys, training.grid.config; print(sorted(m for m in ('torch', 'sqlmodel', "
            "'sqlalchemy', 'training.sft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("stored, retrained", [
    # holds its validation score and a test score from an earlier choice (older settings)
    ({("validation", "sampled"), ("test", "sampled"), ("test", "auto")}, False),
    # lacks the validation score its cell ranks it by
    ({("test", "sampled"), ("test", "auto")}, True),
])
def test_a_candidate_without_weights_is_retrained_only_for_the_score_its_cell_ranks_by(
        monkeypatch, tmp_path, stored, retrained):
    """On a fresh machine a tuned cell's candidates come back without weights. A candidate
    the cell once chose holds test scores made under older settings; it is not the cell's
    choice any more, so it is not trained again for them (which would also discard its
    validation score and reopen the choice): test scores are asked of the choice alone
    (``score_chosen``). A candidate lacking its validation score is trained again."""
    from training.grid import steps

    grid = _grid(tmp_path).model_copy(update={"select_on": "primary",
                                              "extra_scorings": ["sampled"]})
    assert grid.selection_scoring("rationale-free") == "sampled"
    [cfg, *_] = next(cands for factors, cands in grid.sft_cells()
                     if factors["target"] == "rationale-free")

    def result_for(session, run_id, split, settings_hash=None, scoring="auto"):
        if (split, scoring) not in stored:
            return None
        if split == "test" and settings_hash is not None:
            return None  # scored under the settings of an earlier pass
        return SimpleNamespace(metrics={"valid": True}, auroc=0.6)

    retrains: list[str] = []
    monkeypatch.setattr(steps, "train", lambda engine, cfg, on_stage: SimpleNamespace(id=7))
    monkeypatch.setattr(steps, "Session", lambda engine: contextlib.nullcontext())
    monkeypatch.setattr(steps, "_result", result_for)
    monkeypatch.setattr(steps, "retrain_if_weightless",
                        lambda engine, run_id, why, say: retrains.append(why) or True)
    monkeypatch.setattr(steps, "evaluate_run", lambda *a, **k: SimpleNamespace(
        metrics={"valid": True}, auroc=0.55))
    rank, run_id = steps.train_candidate(None, grid, cfg, True, None, print)
    assert run_id == 7  # ranked by its stored validation score, or the new one's
    assert rank == ((True, 0.55) if retrained else (True, 0.6))
    # (the stand-in keeps no weights, so scoring it on validation asks once more)
    assert retrains[:1] == (["for its missing validation (sampled)"] if retrained else [])

