"""Every AUROC in a committed report can be re-derived, with scikit-learn, from the
full-precision predictions committed beside it: the report's figures are what its
predictions give, not numbers typed in."""

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
REPORTS = sorted(p for p in (ROOT / "docs/reports").iterdir()
                 if (p / "predictions.csv").is_file())
KEY = ("run_id", "kind", "target", "scoring", "train_size", "seed", "k", "with_rationales")


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_committed_reports_are_found():
    assert {p.name for p in REPORTS} >= {"reproduce-cpu", "reproduce-smoke", "mechanism-cpu"}


@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_every_reported_auroc_matches_its_committed_predictions(report):
    scored = defaultdict(lambda: ([], []))
    for row in _rows(report / "predictions.csv"):
        labels, scores = scored[tuple(row[k] for k in KEY)]
        labels.append(int(row["label"]))
        scores.append(float(row["p_yes"]))
    checked = 0
    for result in _rows(report / "results.csv"):
        if not result["auroc"]:
            continue
        key = tuple(result.get(k, "") for k in KEY)
        named = dict(zip(KEY, key, strict=True))
        assert key in scored, f"{report.name}: no predictions for {named}"
        labels, scores = scored[key]
        assert len(labels) == int(result["n_test"])
        assert roc_auc_score(labels, scores) == pytest.approx(float(result["auroc"]), abs=5e-5)
        checked += 1
    assert checked >= 3, f"{report.name}: too few results to check"
