"""Benchmark: the evaluation's stratified bootstrap (AUROC, AUPRC, Brier, balanced accuracy).

    .venv/bin/python benchmarks/bootstrap.py      # 2,000 patients, 1,000 resamples

Target: under 3 s (it runs once per stored result, and a grid stores dozens). Baseline
measured in the same run: the naive loop, scikit-learn's four metrics on each resample
of the same class-stratified draw. Writes benchmarks/results/bootstrap.json. (Until
2026-12-06 this was a timed unit test, which failed on a machine busy with other work.)
"""

import sys
from pathlib import Path

# benchmarks/generation.py is named like the `generation` package: keep this folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    roc_auc_score,
)

from training.metrics import bootstrap_metrics

PATIENTS = 2_000
RESAMPLES = 1_000
TARGET_SECONDS = 3.0


def scored(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels (30% positive) and logistic P(yes) scores that separate them."""
    y = (rng.random(n) < 0.3).astype(int)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + (2 * y - 1))))


def naive(y: np.ndarray, p: np.ndarray, resamples: int, rng: np.random.Generator) -> None:
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        ys, ps = y[idx], p[idx]
        roc_auc_score(ys, ps)
        average_precision_score(ys, ps)
        brier_score_loss(ys, ps)
        balanced_accuracy_score(ys, ps >= 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=PATIENTS)
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y, p = scored(args.patients, rng)
    bootstrap_metrics(y, p, n_resamples=10)  # imports and caches warm

    start = time.perf_counter()
    result = bootstrap_metrics(y, p, n_resamples=args.resamples)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    naive(y, p, args.resamples, rng)
    loop = time.perf_counter() - start

    auroc = result["auroc"]
    print(f"AUROC {auroc.value:.4f} [{auroc.low:.4f}, {auroc.high:.4f}]")
    print(f"bootstrap_metrics: {args.patients} patients × {args.resamples} resamples in "
          f"{ours:.2f} s (target < {TARGET_SECONDS:.0f} s: "
          f"{'met' if ours < TARGET_SECONDS else 'NOT met'})")
    print(f"naive loop of scikit-learn metrics: {loop:.2f} s · speed-up {loop / ours:.1f}x")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "bootstrap.json").write_text(json.dumps({
        "patients": args.patients, "resamples": args.resamples, "seconds": round(ours, 3),
        "naive_seconds": round(loop, 3), "speedup": round(loop / ours, 1),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
