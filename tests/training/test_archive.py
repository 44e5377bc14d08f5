"""Finished runs carried to a fresh machine: archived as the grid goes, restored into an
empty database, reused exactly; a damaged archive restores nothing."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db.models import EvaluationResult, TrainingRun
from tests.helpers import audited_version
from training import archive
from training.evaluate import evaluate_run
from training.evaluate_config import EvaluateConfig
from training.runs import RunError


def _grid(tiny_model, root: Path, archive_dir: Path):
    from training.grid.config import ExperimentGrid

    return ExperimentGrid(
        name="carry", dataset="t", base_models=[tiny_model], runs_dir=str(root / "runs"),
        archive=str(archive_dir),
        sft={"targets": ["label", "rationale-free"], "train_sizes": [8], "seeds": [0],
             "learning_rates": [1e-3], "lora_ranks": [4],
             "settings": {"max_steps": 1, "per_device_train_batch_size": 4,
                          "max_length": 768}},
        fewshot={"ks": [0], "with_rationales": [False],
                 "settings": {"engine": "transformers", "limit": 8, "n_bootstrap": 100}},
        baseline=False,
        evaluation={"engine": "transformers", "n_bootstrap": 100, "limit": 8,
                    "min_reached_answer": 0.0,
                    "max_one_answer_share": 1.0})


def _results(folder: Path) -> list[dict]:
    with (folder / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in r.items() if k not in ("run_dir", "run_id")}  # local to a database
            for r in rows]


def _count(engine, model) -> int:
    with Session(engine) as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


@pytest.fixture(scope="module")
def carried(tmp_path_factory, tiny_model):
    """A grid run on machine A with an archive, then the same grid on machine B (a new
    database and no run folders) given only the archive."""
    from training.grid.experiment import run_experiment

    a, b = tmp_path_factory.mktemp("machine-a"), tmp_path_factory.mktemp("machine-b")
    folder = tmp_path_factory.mktemp("git") / "archive"
    engine_a = audited_version(f"sqlite:///{a / 'db.sqlite'}", a / "exports")
    first = run_experiment(engine_a, _grid(tiny_model, a, folder))
    engine_b = audited_version(f"sqlite:///{b / 'db.sqlite'}", b / "exports")
    messages: list[str] = []
    second = run_experiment(engine_b, _grid(tiny_model, b, folder),
                            on_stage=messages.append)
    return {"a": a, "b": b, "folder": folder, "engine_a": engine_a, "engine_b": engine_b,
            "first": first,
            "second": second, "messages": messages, "tiny_model": tiny_model}


def test_every_finished_run_is_archived_without_its_weights(carried):
    folders = sorted(p.name for p in carried["folder"].iterdir())
    assert len(folders) == 3  # label, rationale-free, few-shot k=0
    for name in folders:
        record = json.loads((carried["folder"] / name / archive.RECORD).read_text())
        assert record["weights"] is False
        assert not (carried["folder"] / name / "adapter").exists()
        assert not (carried["folder"] / name / "checkpoints").exists()
        assert record["evaluations"], name
        for ev in record["evaluations"]:  # predictions travel, as paths inside the run
            assert not Path(ev["predictions"]).is_absolute()
            assert (carried["folder"] / name / ev["predictions"]).is_file()
        if name.startswith("sft-"):
            assert any(x.startswith("adapter/") for x in record["left_out"])
            assert {"dataset.json", "train_summary.json", "metrics.jsonl"} <= set(
                record["files"])


def test_a_fresh_machine_reuses_the_archived_runs_and_reports_the_same_numbers(carried):
    messages = carried["messages"]
    assert any("3 runs restored" in m for m in messages), messages
    assert not any(m.startswith("training") for m in messages), messages
    assert not any(m.startswith("scoring") for m in messages), messages
    first, second = (_results(Path(carried[k]["folder"])) for k in ("first", "second"))
    assert len(first) == len(second)
    assert [{k: (a[k], b[k]) for k in a if a[k] != b[k]}
            for a, b in zip(first, second, strict=True)] == [{}] * len(first)
    for row in _results(Path(carried["second"]["folder"])):
        assert row["auroc"]  # a real result, not an empty cell


def test_each_trained_run_names_the_code_it_was_trained_under_on_any_machine(carried):
    from annotation_db.provenance import code_version

    here = code_version()
    short = here[:12] + ("+dirty" if here.endswith("+dirty") else "")
    for key in ("first", "second"):  # trained here, then restored from the archive
        folder = Path(carried[key]["folder"])
        rows = _results(folder)
        assert {r["trained_under"] for r in rows if r["kind"] == "sft"} == {short}
        assert {r["trained_under"] for r in rows if r["kind"] == "fewshot"} == {""}
        # label-only and the rationale target of one cell trained on the same patients
        draws = {r["train_draw"] for r in rows if r["kind"] == "sft"}
        assert len(draws) == 1 and len(next(iter(draws))) == 12
        assert ("Code the 2 trained runs were trained under (`trained_under` in "
                "results.csv): 1 commit began them.") in (folder / "results.md").read_text()


def test_a_restored_run_is_not_rescored_without_its_weights(carried):
    engine = carried["engine_b"]
    with Session(engine) as session:
        run = session.execute(select(TrainingRun).where(TrainingRun.kind == "sft")
                              ).scalars().first()
    with pytest.raises(RunError, match="no adapter"):
        evaluate_run(engine, str(run.id), EvaluateConfig(split="test", engine="transformers",
                                                         limit=4, n_bootstrap=100))


def test_saving_again_rewrites_nothing(carried):
    out = archive.save(carried["engine_b"], carried["folder"], "t")
    assert out["written"] == [] and len(out["unchanged"]) == 3


def test_a_grid_archives_only_its_own_runs_of_a_shared_version(carried, tmp_path):
    """Two grids on one dataset version (the cpu scale and a mechanism grid, say) keep
    their archives apart: a grid's archive gets the runs its executor ran or reused,
    not every run of the version."""
    from training.grid.experiment import run_experiment

    grid = _grid(carried["tiny_model"], carried["b"], tmp_path / "label-only")
    grid.name = "label-only"  # its own report folder, not the fixture grid's
    grid.sft.targets, grid.sft.pair_with = ["label"], ["label", "rationale-free"]  # same patients
    grid.fewshot = None
    messages: list[str] = []
    run_experiment(carried["engine_b"], grid, on_stage=messages.append)
    assert not any(m.startswith("training") for m in messages), messages  # reused
    assert [p.name.split("-")[1] for p in (tmp_path / "label-only").iterdir()] == ["label"]


def test_weights_saved_once_stay_and_go_to_no_other_run(carried, tmp_path):
    """`archive save --weights` for one run, then the grid's own saves (no weights) after
    its next steps: that run keeps its adapter, and the runs saved with it get none."""
    with Session(carried["engine_a"]) as session:
        sft = {r.target: r for r in session.execute(
            select(TrainingRun).where(TrainingRun.kind == "sft")).scalars()}
    folder = tmp_path / "weights"
    archive.save(carried["engine_a"], folder, "t", weights=True, run_ids=[sft["label"].id])
    archive.save(carried["engine_a"], folder, "t")
    label, free = (folder / Path(sft[t].run_dir).name for t in ("label", "rationale-free"))
    assert (label / "adapter").is_dir()
    assert json.loads((label / archive.RECORD).read_text())["weights"] is True
    assert not (free / "adapter").exists()
    assert json.loads((free / archive.RECORD).read_text())["weights"] is False


def test_a_damaged_archive_restores_nothing(carried, tmp_path):
    folder = tmp_path / "archive"
    shutil.copytree(carried["folder"], folder)
    damaged = sorted(folder.iterdir())[-1]  # the last run: the others would go in first
    record = json.loads((damaged / archive.RECORD).read_text())
    predictions = damaged / record["evaluations"][0]["predictions"]
    predictions.write_text(predictions.read_text().replace("0.", "0.9", 1))
    engine = audited_version(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "exports")
    with pytest.raises(archive.ArchiveError, match="does not match its sha256"):
        archive.restore(engine, folder, tmp_path / "runs")
    assert _count(engine, TrainingRun) == 0 and _count(engine, EvaluationResult) == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_runs_of_another_dataset_are_skipped_with_the_reason(carried, tmp_path):
    engine = audited_version(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "exports",
                             seed=8)  # another cohort: another content hash
    out = archive.restore(engine, carried["folder"], tmp_path / "runs")
    assert out["restored"] == [] and len(out["skipped"]) == 3
    assert "is not in this database" in out["skipped"][0]
    assert _count(engine, TrainingRun) == 0


def test_the_cli_saves_and_restores_an_archive(carried, tmp_path):
    from typer.testing import CliRunner

    from app.cli import app

    db = str(carried["b"] / "db.sqlite")
    runner = CliRunner()
    saved = runner.invoke(app, ["experiment", "archive", "save", "t", "--to",
                                str(tmp_path / "copy"), "--db", db])
    assert saved.exit_code == 0, saved.output
    assert "3 runs written, 0 unchanged" in saved.output
    again = runner.invoke(app, ["experiment", "archive", "restore", str(tmp_path / "copy"),
                                "--runs-dir", str(tmp_path / "runs"), "--db", db])
    assert again.exit_code == 0, again.output
    assert "0 runs restored, 3 already here" in again.output
    missing = runner.invoke(app, ["experiment", "archive", "save", "no-such-version", "--to",
                                  str(tmp_path / "x"), "--db", db])
    assert missing.exit_code == 1 and "no dataset version 'no-such-version'" in missing.output


def _dry_run_stages(grid, finished: dict | None) -> dict:
    """The dry run's stages by name for ``grid`` on the tiny dataset with ``finished``
    counted as reused (token counts and speeds made up)."""
    from training.budget import Throughput, estimate
    from training.study_config import DataSettings

    tokens = {"targets": {t: {"prompt_tokens": 100, "completion_tokens": 50,
                              "example_tokens": 150} for t in ("label", "rationale-free")}}
    speed = Throughput(train_tokens_per_second=100, prefill_tokens_per_second=1000,
                       decode_tokens_per_second=10, engine_start_seconds=0,
                       data_seconds_per_patient=0.5, source="test")
    return {r["stage"].split(":")[0]: r for r in estimate(
        DataSettings(n=60, dataset="t"), grid, speed, tokens, finished)}


def test_a_dry_run_counts_archived_runs_as_reused(carried, tmp_path):
    from training.reproduce import _union

    grid = _grid(carried["tiny_model"], tmp_path, carried["folder"])
    finished = _union(None, archive.finished_work(carried["folder"], "t"))
    rows = _dry_run_stages(grid, finished)
    assert rows["SFT training"]["reused"] == 2 and rows["SFT training"]["seconds"] == 0
    assert rows["few-shot"]["reused"] == 1 and rows["few-shot"]["seconds"] == 0
    assert rows["data"]["seconds"] == 30  # the archive holds runs, not the dataset
    # a test scoring added since: the archived rationale run has no weights, so it is
    # costed as trained again, as the grid will do; the label run stays free
    weightless = archive.finished_work(carried["folder"], "t")["weightless"]
    assert len(weightless) == 2 and weightless < set(finished["runs"])  # the two SFT runs
    grid.extra_scorings = ["direct"]
    rows = _dry_run_stages(grid, finished)
    assert rows["SFT training"]["reused"] == 1 and rows["SFT training"]["seconds"] > 0


def test_a_dry_run_counts_only_the_archived_runs_of_one_build_of_the_version(
        carried, tmp_path):
    """An archive can hold runs of an older build of the same dataset name (another
    content hash); a restore skips them, so the dry run does not count them either: the
    build the database has, else the build of the most recently finished run."""
    folder = tmp_path / "archive"
    shutil.copytree(carried["folder"], folder)
    old = sorted(p for p in folder.iterdir() if (p / archive.RECORD).is_file())[0]
    record = json.loads((old / archive.RECORD).read_text())
    record["dataset"]["sha256"], record["finished_at"] = "0" * 64, "2020-01-01T00:00:00"
    (old / archive.RECORD).write_text(json.dumps(record))
    newest = archive.finished_work(folder, "t")
    assert record["config_hash"] not in newest["runs"] and newest["version_hash"] != "0" * 64
    assert len(newest["runs"]) == len(archive.finished_work(carried["folder"], "t")["runs"]) - 1
    older = archive.finished_work(folder, "t", "0" * 64)
    assert set(older["runs"]) == {record["config_hash"]}
    assert archive.finished_work(folder, "t", "f" * 64) is None


def test_a_restored_run_that_must_be_scored_anew_is_retrained_first(carried, tmp_path):
    """A fresh machine restores runs without weights; the grid has since gained a test
    scoring for rationale models (as the cpu scale gained sampled scoring). The chosen
    rationale run is retrained under its own identity, then scored in both ways from the
    same weights; the label run, which needs nothing new, is reused as it is."""
    from training.grid.experiment import run_experiment

    folder = tmp_path / "archive"
    shutil.copytree(carried["folder"], folder)  # the fixture's archive stays as it was
    # as if the old weights had also been scored on validation: a file the retrain
    # leaves unscored, which must not stay in the retrained run's archive
    [old] = [p for p in folder.iterdir() if p.name.startswith("sft-rationale-free")]
    record = json.loads((old / archive.RECORD).read_text())
    shutil.copytree(old / "eval/test", old / "eval/validation")
    record["files"].update({f"eval/validation/{p.name}": archive.file_sha256(p)
                            for p in (old / "eval/validation").iterdir()})
    (old / archive.RECORD).write_text(json.dumps(record))
    c = tmp_path / "machine-c"
    c.mkdir()
    engine = audited_version(f"sqlite:///{c / 'db.sqlite'}", c / "exports")
    grid = _grid(carried["tiny_model"], c, folder)
    grid.fewshot, grid.extra_scorings = None, ["direct"]
    messages: list[str] = []
    report = run_experiment(engine, grid, on_stage=messages.append)

    retrained = [m for m in messages if "restored without its weights" in m]
    # as the cell's choice (untuned: its one candidate), when its test scores are asked
    assert len(retrained) == 1 and "to score it on test" in retrained[0], messages
    with Session(engine) as session:
        runs = {r.target: r for r in session.execute(
            select(TrainingRun).where(TrainingRun.kind == "sft")).scalars()}
        results = list(session.execute(select(EvaluationResult)).scalars())
    scored = {(e.training_run_id, e.split, e.scoring) for e in results}
    assert (Path(runs["rationale-free"].run_dir) / "adapter").is_dir()
    # every score of the retrained run is from its new weights, the greedy one included
    assert all(e.created_at >= runs["rationale-free"].finished_at for e in results
               if e.training_run_id == runs["rationale-free"].id)
    assert not (Path(runs["label"].run_dir) / "adapter").exists()  # reused, not retrained
    rationale = runs["rationale-free"].id
    assert {(rationale, "test", "auto"), (rationale, "test", "direct")} <= scored
    rows = [r for r in _results(Path(report["folder"])) if r["target"] == "rationale-free"]
    assert sorted(r["scoring"] for r in rows) == ["direct", "generate"]
    assert all(r["auroc"] for r in rows)
    saved = json.loads((old / archive.RECORD).read_text())  # the retrained run's record
    assert saved["finished_at"] != record["finished_at"]
    assert not [f for f in saved["files"] if f.startswith("eval/validation/")]
    assert not (old / "eval/validation").exists()


def test_a_tuned_cells_choice_restored_before_its_test_scores_is_revalidated_then_scored(
        tiny_model, tmp_path):
    """A session ended after a tuned cell's candidates were scored on validation and before
    its choice was scored on test, and its weights were not archived. On the next machine
    the chosen run is retrained for its test scores; its validation score, which belonged
    to the lost weights, is scored again from the new ones before the cell chooses and
    scores its test: every stored score of the run is from one set of weights, and the
    choice is the best of the stored validation scores. (Before, its validation score was
    dropped and the next pass retrained it once more.)"""
    from training.grid.experiment import run_experiment

    folder = tmp_path / "archive"
    grid = _grid(tiny_model, tmp_path / "a", folder)
    grid.sft.targets, grid.sft.learning_rates, grid.fewshot = ["rationale-free"], [1e-3, 2e-3], None
    run_experiment(audited_version(f"sqlite:///{tmp_path / 'a.sqlite'}", tmp_path / "ea"), grid)

    engine = audited_version(f"sqlite:///{tmp_path / 'b.sqlite'}", tmp_path / "eb")
    grid.runs_dir = str(tmp_path / "b" / "runs")
    archive.restore(engine, folder, grid.runs_dir)
    with Session(engine) as session:  # the choice's test scores never landed
        tests = list(session.execute(select(EvaluationResult).where(
            EvaluationResult.split == "test")).scalars())
        assert len({e.training_run_id for e in tests}) == 1
        chosen_id = tests[0].training_run_id
        for row in tests:
            session.delete(row)
        session.commit()
    # the dry run counts that retrain: the choice trained again, its sibling reused
    from training.budget import finished_work

    training = _dry_run_stages(grid, finished_work(engine, grid))["SFT training"]
    assert (training["runs"], training["reused"]) == (2, 1)
    messages: list[str] = []
    run_experiment(engine, grid, on_stage=messages.append)

    retrained = [m for m in messages if "restored without its weights" in m]
    assert retrained[0] == (f"run {chosen_id} was restored without its weights; retraining "
                            "it to score it on test")  # (the other one too if it now ranks first)
    with Session(engine) as session:
        results = list(session.execute(select(EvaluationResult)).scalars())
        finished = {r.id: r.finished_at for r in session.execute(select(TrainingRun)).scalars()}
    validation = {e.training_run_id: e.auroc for e in results if e.split == "validation"}
    tested = {e.training_run_id for e in results if e.split == "test"}
    assert "validation" in {e.split for e in results if e.training_run_id == chosen_id}
    for message in retrained:  # every score of a retrained run is from its new weights
        run_id = int(message.split()[1])
        assert all(e.created_at >= finished[run_id] for e in results
                   if e.training_run_id == run_id)
    assert len(validation) == 2 and len(tested) == 1
    assert validation[tested.pop()] == max(validation.values())
