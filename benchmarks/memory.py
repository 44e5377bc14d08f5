"""Benchmark: the SFT memory estimate against the measured peak of real runs.

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --settings 1x384 8x768 --steps 2

Builds a small audited dataset version in a temporary database (template-teacher
rationales with long histories, so every row reaches the lengths measured), then for each
``BATCHxMAX_LENGTH`` setting runs ``rationale-audit train sft`` on the bundled model as its
own process (the job path: bf16 autocast where the CPU has it, the default LoRA) and reads
that process's peak resident set (``wait4``'s ``ru_maxrss``). Prints the estimate of
``training.memory`` beside each measurement with the relative error; the target is within
30%. The estimate's runtime part was set from a batch 1 × 384 run: the default settings
are others. Writes benchmarks/results/memory.json.
"""

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import platform
import shlex
import subprocess
import tempfile

ROOT = Path(__file__).resolve().parent.parent


def build(tmp: Path, history_budget: int) -> Path:
    from annotation_db import migrate
    from annotation_db.session import make_engine
    from training.study import prepare_dataset
    from training.study_config import DataSettings

    db = tmp / "memory.sqlite"
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    prepare_dataset(engine, DataSettings(n=120, history_budget=history_budget, dataset="m"),
                    exports_dir=tmp / "exports")
    engine.dispose()
    return db


def peak_gib(command: list[str], log: Path) -> tuple[float, int]:
    """Run ``command``; its peak resident set (GiB) and exit status."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
        _, status, usage = os.wait4(process.pid, 0)
    return usage.ru_maxrss * 1024 / 1024 ** 3, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["2x512", "4x512", "4x768"],
                        help="BATCHxMAX_LENGTH of each measured run")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--target", default="rationale-free")
    parser.add_argument("--history-budget", type=int, default=900,
                        help="tokens of history per row: long enough to fill every length")
    args = parser.parse_args()

    from generation.models import DEFAULT_MODEL, resolve_model
    from training.memory import for_config
    from training.precision import resolve_precision
    from training.sft_config import SFTRunConfig

    model_path = resolve_model(DEFAULT_MODEL).path
    rows = []
    with tempfile.TemporaryDirectory(prefix="ra-bench-memory-") as tmp:
        tmp = Path(tmp)
        db = build(tmp, args.history_budget)
        for setting in args.settings:
            batch, length = map(int, setting.split("x"))
            config = SFTRunConfig(dataset="m", target=args.target, max_steps=args.steps,
                                  per_device_train_batch_size=batch, max_length=length,
                                  train_size=max(batch * args.steps, 8), save_steps=1000,
                                  logging_steps=1, validate_each_epoch=False,
                                  runs_dir=str(tmp / "runs"))
            precision = resolve_precision(config.precision, strict=False)
            estimated = for_config(config, model_path, precision)
            command = [sys.executable, "-m", "app.cli", *shlex.split(config.cli())[1:],
                       "--no-evaluate", "--db", str(db)]
            measured, status = peak_gib(command, tmp / f"run-{setting}.log")
            if status != 0:
                raise SystemExit(f"{setting}: training exited {status}: "
                                 + (tmp / f"run-{setting}.log").read_text()[-2000:])
            truncated = _truncated_share(tmp / "runs")
            error = (estimated.total - measured) / measured
            rows.append({"batch": batch, "max_length": length,
                         "rows_cut_to_max_length": truncated,
                         "precision": precision, "estimate_gib": round(estimated.total, 2),
                         "parts_gib": {k: round(v, 3) for k, v in estimated.parts.items()},
                         "measured_peak_gib": round(measured, 2),
                         "relative_error": round(error, 3)})
            print(f"batch {batch} × {length} tokens ({precision}; {truncated:.0%} of rows cut "
                  f"to that length): estimate "
                  f"{estimated.total:.2f} GiB, measured peak {measured:.2f} GiB, error "
                  f"{error:+.0%} (target within ±30%)", flush=True)
    worst = max(abs(r["relative_error"]) for r in rows)
    print(f"largest error {worst:.0%}: {'met' if worst <= 0.30 else 'NOT met'}")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "memory.json").write_text(json.dumps({
        "runs": rows, "steps": args.steps, "target": args.target,
        "cpu_count": os.cpu_count(), "machine": platform.machine()}, indent=2) + "\n")


def _truncated_share(runs_dir: Path) -> float:
    """The share of the newest run's rows cut to max_length (all of them: every batch is
    padded to max_length, as the estimate assumes)."""
    newest = max(runs_dir.glob("sft-*/dataset.json"), key=lambda p: p.stat().st_mtime)
    summary = json.loads(newest.read_text())
    return summary["truncated_examples"] / summary["examples"]


if __name__ == "__main__":
    main()
