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


def _matched_balanced_accuracy(labels: list[int], scores: list[float]) -> float:
    """Balanced accuracy when the top share of patients by score, as many as there are
    positives, is called "yes"; a block of tied scores across the cut counts the part of
    it the cut takes (written here apart from the project's own function)."""
    positives = sum(labels)
    negatives = len(labels) - positives
    blocks: dict[float, list[int]] = {}
    for label, score in zip(labels, scores, strict=True):
        blocks.setdefault(score, [0, 0])[label] += 1
    taken = true_yes = false_yes = 0.0
    for score in sorted(blocks, reverse=True):
        no, yes = blocks[score]
        part = min(1.0, max(0.0, (positives - taken) / (no + yes)))
        true_yes, false_yes, taken = true_yes + part * yes, false_yes + part * no, \
            taken + no + yes
    return (true_yes / positives + (negatives - false_yes) / negatives) / 2


@pytest.mark.parametrize("report", REPORTS, ids=[p.name for p in REPORTS])
def test_every_reported_yes_rate_and_matched_balanced_accuracy_matches(report):
    """Where a report gives them (reports made since 2026-12-07), each run's share of
    "yes" (P(yes) ≥ 0.5; for sampled scoring, the mean score), its mean P(yes) and its
    balanced accuracy at a matched yes-rate are what its committed predictions give."""
    scored = defaultdict(lambda: ([], []))
    for row in _rows(report / "predictions.csv"):
        labels, scores = scored[tuple(row[k] for k in KEY)]
        labels.append(int(row["label"]))
        scores.append(float(row["p_yes"]))
    results = [r for r in _rows(report / "results.csv") if r.get("yes_rate")]
    if not results:
        pytest.skip(f"{report.name} predates the yes-rate columns")
    for result in results:
        labels, scores = scored[tuple(result.get(k, "") for k in KEY)]
        share = (sum(scores) / len(scores) if result["scoring"] == "sampled"
                 else sum(s >= 0.5 for s in scores) / len(scores))
        assert float(result["yes_rate"]) == pytest.approx(share, abs=5e-5)
        if result.get("mean_p_yes"):  # what the degenerate rule reads
            assert float(result["mean_p_yes"]) == pytest.approx(
                sum(scores) / len(scores), abs=5e-5)
        if result.get("balanced_accuracy_matched") and 0 < sum(labels) < len(labels):
            assert float(result["balanced_accuracy_matched"]) == pytest.approx(
                _matched_balanced_accuracy(labels, scores), abs=5e-5)


def test_the_independent_matched_balanced_accuracy_agrees_with_the_projects():
    """The re-derivation above is checked now, before any report carries the columns:
    on tie-heavy scores (fifths, as 5 sampled rationales give) and on continuous ones."""
    import numpy as np

    from training.seed_level import balanced_accuracy_at_rate

    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = rng.integers(0, 2, size=60)
        labels[:2] = [0, 1]
        scores = (rng.integers(0, 6, size=60) / 5 if trial % 2 else rng.random(60))
        assert _matched_balanced_accuracy(labels.tolist(), scores.tolist()) == \
            pytest.approx(balanced_accuracy_at_rate(labels, scores), abs=1e-12)
    assert _matched_balanced_accuracy([1, 1, 0, 0], [0.9, 0.7, 0.8, 0.1]) == 0.5


@pytest.mark.parametrize("report", [p for p in REPORTS if (p / "summary.json").is_file()],
                         ids=lambda p: p.name)
def test_every_reference_model_auroc_matches_its_committed_predictions(report):
    """The reference models (age alone, the structured ceiling, TF-IDF) have no row in
    results.csv; their AUROCs are in summary.json, and their predictions are committed
    too (kind "reference", keyed by model, training size and seed)."""
    import json

    scored = defaultdict(lambda: ([], []))
    for row in _rows(report / "predictions.csv"):
        if row["kind"] == "reference":
            labels, scores = scored[(row["target"], row["train_size"], row["seed"])]
            labels.append(int(row["label"]))
            scores.append(float(row["p_yes"]))
    references = json.loads((report / "summary.json").read_text()).get("references") or []
    for ref in references:
        key = (ref["model"], str(ref["train_size"]), str(ref["seed"]))
        assert key in scored, f"{report.name}: no predictions for reference {key}"
        labels, scores = scored[key]
        assert len(labels) == ref["n"]
        assert roc_auc_score(labels, scores) == pytest.approx(ref["auroc"]["value"], abs=5e-5)
    assert len(references) == len(scored)
