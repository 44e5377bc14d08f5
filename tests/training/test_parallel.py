"""Data-parallel SFT: `train sft` under `accelerate launch --num_processes 2` on CPU
(gloo) is one run — one row, one folder, one adapter — whose loss curve is the
single-process run's with the same effective batch."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.models import TrainingRun
from tests.helpers import audited_version
from training.sft import train
from training.sft_config import SFTRunConfig

STEPS = 3
SETTINGS = {"dataset": "t", "target": "label", "train_size": 8, "seed": 0, "lora_r": 4,
            "learning_rate": 5e-3, "max_steps": STEPS, "logging_steps": 1, "save_steps": 1000,
            "max_length": 512, "precision": "fp32", "probe_steps": 1000,
            "validate_each_epoch": False,
            "lora_dropout": 0.0}  # dropout masks would differ between the two layouts


def _losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [row["loss"] for row in map(json.loads, lines) if "loss" in row]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("parallel")
    db = root / "db.sqlite"
    engine = audited_version(f"sqlite:///{db}", root / "exports")
    # the reference: one process, a batch of 8
    single = train(engine, SFTRunConfig(**SETTINGS, base_model=tiny_model,
                                        per_device_train_batch_size=8,
                                        runs_dir=str(root / "runs")))
    # two processes with 4 each: the same effective batch
    parallel = SFTRunConfig(**SETTINGS, base_model=tiny_model, per_device_train_batch_size=4,
                            runs_dir=str(root / "runs"))
    flags = shlex.split(parallel.cli())[3:]  # the config's own flags, as `train sft` prints
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    launched = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
         "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "29561",
         "-m", "app.cli", "train", "sft", *flags, "--no-evaluate", "--db", str(db)],
        env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    with Session(engine) as session:
        rows = session.execute(select(TrainingRun).order_by(TrainingRun.id)).scalars().all()
    return {"engine": engine, "single": single, "rows": rows, "root": root,
            "output": launched.stdout}


def test_two_processes_make_one_run_with_one_folder_and_one_adapter(runs):
    rows = runs["rows"]
    assert len(rows) == 2  # the reference and the data-parallel run, nothing else
    parallel = rows[1]
    assert parallel.status == "finished" and parallel.config_hash != runs["single"].config_hash
    folders = sorted(p.name for p in (runs["root"] / "runs").iterdir() if p.name != "logs")
    assert folders == sorted(Path(r.run_dir).name for r in rows)
    run_dir = Path(parallel.run_dir)
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert (summary["processes"], summary["effective_batch"], summary["global_step"]) == (
        2, 8, STEPS)
    # rank 0 alone wrote the books: one loss line per logged step, once
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines if "loss" in row] == list(range(1, STEPS + 1))
    assert runs["output"].count("equivalent command") == 1
    # the CLI's progress bar, fed by the progress file rank 0 rewrites as it trains
    assert re.search(rf"training .* {STEPS}/{STEPS} .*tok/s", runs["output"]), runs["output"]
    progress = json.loads((run_dir / "progress.json").read_text())
    assert (progress["step"], progress["max_steps"], progress["eta_seconds"]) == (
        STEPS, STEPS, 0)


def test_the_loss_curve_matches_one_process_with_the_same_effective_batch(runs):
    single = _losses(Path(runs["single"].run_dir))
    parallel = _losses(Path(runs["rows"][1].run_dir))
    assert len(single) == len(parallel) == STEPS
    assert single[0] != single[-1]  # the curve moves: the comparison can fail
    # every batch is the whole training set; label-only rows all have the same number of
    # loss tokens, so the mean of the two shards' means is the batch mean
    assert parallel == pytest.approx(single, rel=1e-6)
