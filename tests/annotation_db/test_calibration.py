"""Judge calibration: the statistics are the published ones, and the alt-test tells a judge
that copies a clinician from one that guesses."""

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from annotation_db.calibration import (
    alt_test,
    benjamini_yekutieli,
    consensus,
    judge_calibration,
    weighted_kappa,
)

DOMAIN = [1, 2, 3, 4, 5]


def panel(n_items: int, raters: int = 3, noise: float = 0.7, seed: int = 0):
    """Clinicians who see a true score through noise (every clinician rates every item)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, n_items).astype(float)
    scores = np.clip(np.rint(truth + rng.normal(0, noise, (raters, n_items))), 1, 5)
    return truth, scores


def test_weighted_kappa_is_cohens_quadratic_kappa():
    x = [1, 2, 3, 4, 5, 3, 2]
    y = [1, 3, 3, 5, 4, 3, 1]
    # by hand, in proportions of the 5 × 5 table with weights (i − j)² / 16
    observed = sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / 16 / 7
    row = np.bincount(x, minlength=6)[1:] / 7
    col = np.bincount(y, minlength=6)[1:] / 7
    chance = sum(row[i] * col[j] * (i - j) ** 2 / 16 for i in range(5) for j in range(5))
    by_hand = 1 - observed / chance
    result = weighted_kappa(x, y, DOMAIN, replicates=200)
    assert result["kappa"] == pytest.approx(by_hand, abs=1e-12)
    assert result["kappa"] == pytest.approx(
        cohen_kappa_score(x, y, labels=DOMAIN, weights="quadratic"), abs=1e-12)
    assert result["ci95"][0] <= result["kappa"] <= result["ci95"][1]
    unweighted = weighted_kappa(x, y, DOMAIN, weights=None, replicates=10)
    assert unweighted["kappa"] == pytest.approx(cohen_kappa_score(x, y, labels=DOMAIN), abs=1e-12)


def test_kappa_without_variation_says_why():
    result = weighted_kappa([3, 3, 3], [3, 3, 3], DOMAIN)
    assert result["computable"] is False and "no variation" in result["reason"]


def test_consensus_is_the_median_with_halves_rounded_up():
    m = np.array([[1, 2, np.nan, 5], [2, 2, np.nan, 4], [np.nan, 5, np.nan, 4]])
    assert consensus(m).tolist()[:2] == [2.0, 2.0] and np.isnan(consensus(m)[2])
    assert consensus(m)[3] == 4.0


def test_alpha_with_the_judge_is_krippendorffs_alpha_of_the_panel_plus_one_coder():
    _, scores = panel(40)
    judge = scores[0].copy()
    report = judge_calibration(scores, ["a", "b", "c"], judge, domain=DOMAIN, replicates=100)
    expected = krippendorff.alpha(reliability_data=np.vstack([scores, judge]),
                                  level_of_measurement="ordinal", value_domain=DOMAIN)
    assert report["alpha_with_judge"]["alpha"] == pytest.approx(expected)
    assert report["alpha_panel"]["alpha"] == pytest.approx(krippendorff.alpha(
        reliability_data=scores, level_of_measurement="ordinal", value_domain=DOMAIN))
    assert report["kappa_vs_raters"][0]["kappa"] == pytest.approx(1.0)
    assert report["kappa_vs_raters"][0]["alpha"]["alpha"] == pytest.approx(1.0)  # a copy
    assert report["kappa_vs_raters"][1]["alpha"]["alpha"] == pytest.approx(krippendorff.alpha(
        reliability_data=np.vstack([scores[1], judge]), level_of_measurement="ordinal",
        value_domain=DOMAIN))
    assert report["alpha_vs_consensus"]["computable"]


def test_benjamini_yekutieli_by_hand():
    # m = 4, c(4) = 1 + 1/2 + 1/3 + 1/4 = 2.0833; thresholds k/4 · 0.05 / 2.0833
    # = 0.0060, 0.0120, 0.0180, 0.0240 → the two smallest p-values are rejected
    assert benjamini_yekutieli([0.011, 0.001, 0.5, 0.019]) == [True, True, False, False]
    # m = 2, c(2) = 1.5: thresholds 0.0167, 0.0333
    assert benjamini_yekutieli([0.02, 0.04]) == [False, False]
    assert benjamini_yekutieli([0.02, 0.03]) == [True, True]


def test_a_judge_that_copies_a_clinician_passes_the_alt_test():
    _, scores = panel(80, seed=1)
    result = alt_test(scores, ["a", "b", "c"], scores[0].copy(), epsilon=0.2)
    assert result["passed"] is True, result
    assert result["winning_rate"] >= 0.5
    assert {r["rater"] for r in result["raters"] if r["judge_wins"]} >= {"b", "c"}


def test_a_random_judge_fails_the_alt_test():
    _, scores = panel(80, seed=2)
    guesses = np.random.default_rng(9).integers(1, 6, 80).astype(float)
    result = alt_test(scores, ["a", "b", "c"], guesses, epsilon=0.2)
    assert result["passed"] is False and result["winning_rate"] < 0.5, result
    assert "winning rate" in result["why"]


def test_too_few_items_is_no_pass_whatever_the_winning_rate():
    _, scores = panel(12, seed=3)
    result = alt_test(scores, ["a", "b", "c"], scores[0].copy(), epsilon=0.2, min_items=30)
    assert result["passed"] is False and "too few items" in result["why"]


def test_one_clinician_is_not_enough():
    _, scores = panel(10, raters=1)
    assert alt_test(scores, ["a"], scores[0])["computable"] is False
