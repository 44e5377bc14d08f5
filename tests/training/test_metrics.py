"""Evaluation statistics (training/metrics.py): scikit-learn and statsmodels as references,
DeLong against a direct O(m·n) implementation and a hand-worked example,
bootstrap intervals checked for coverage by simulation, input validation."""

import math
import re

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    roc_auc_score,
)
from statsmodels.stats.multitest import multipletests

from training.metrics import (
    DeLongResult,
    Estimate,
    _auprc_rows,
    _auroc_rows,
    balanced_accuracy,
    bootstrap_metrics,
    delong_auc_ci,
    delong_covariance,
    delong_test,
    holm,
    paired_bootstrap_difference,
    point_metrics,
)


def scored_sample(n: int, seed: int, prevalence: float = 0.3, separation: float = 1.0,
                  decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logistic P(yes) scores; rounding the scores makes ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + separation * (2 * y - 1))))
    if decimals is not None:
        p = np.round(p, decimals)
    return y, p


# --- point metrics ------------------------------------------------------------------------

@pytest.mark.parametrize("decimals", [None, 1])
def test_point_metrics_equal_sklearn(decimals):
    y, p = scored_sample(500, seed=3, decimals=decimals)
    got = point_metrics(y, p, threshold=0.4)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-15)
    assert got["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-15)
    assert got["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    assert got["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(y, (p >= 0.4).astype(int)), abs=1e-15)
    assert got["prevalence"] == pytest.approx(y.mean())
    assert (got["n"], got["n_positive"]) == (500, int(y.sum()))


def test_auprc_is_average_precision_not_the_trapezoid():
    # Positives ranked 1st and 3rd of 4: AP = (1/2)(1/1) + (1/2)(2/3) = 5/6, while the
    # trapezoid auc(recall, precision) over the PR curve's points gives 19/24.
    y = [1, 0, 1, 0]
    p = [0.9, 0.8, 0.7, 0.1]
    assert point_metrics(y, p)["auprc"] == pytest.approx(5 / 6, abs=1e-15)


def test_single_class_leaves_ranking_metrics_undefined():
    got = point_metrics([0, 0, 0, 0], [0.1, 0.2, 0.7, 0.9], threshold=0.5)
    assert got["auroc"] is None and got["auprc"] is None
    assert got["brier"] == pytest.approx((0.01 + 0.04 + 0.49 + 0.81) / 4)
    assert got["balanced_accuracy"] == pytest.approx(0.5)  # specificity, the only recall
    assert got["n_positive"] == 0 and got["prevalence"] == 0.0


def test_balanced_accuracy_calls_a_score_at_the_threshold_positive():
    y, p = [1, 0], [0.5, 0.2]
    assert balanced_accuracy(y, p, threshold=0.5) == 1.0
    assert balanced_accuracy(y, p, threshold=0.5000001) == 0.5


# --- the vectorized replicate metrics the bootstrap relies on -----------------------------

def test_replicate_metrics_equal_sklearn_on_tied_resamples():
    rng = np.random.default_rng(11)
    y, p = scored_sample(120, seed=5, decimals=1)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rows = np.hstack([rng.choice(pos, size=(40, pos.size)), rng.choice(neg, size=(40, neg.size))])
    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    auroc, auprc = _auroc_rows(p[rows], pos.size), _auprc_rows(p[rows], pos.size)
    for i, row in enumerate(rows):
        assert auroc[i] == pytest.approx(roc_auc_score(labels, p[row]), abs=1e-12)
        assert auprc[i] == pytest.approx(average_precision_score(labels, p[row]), abs=1e-12)


@pytest.mark.parametrize("metric", ["auroc", "auprc", "brier", "balanced_accuracy"])
def test_paired_difference_point_value_is_the_sklearn_difference(metric):
    y, p1 = scored_sample(300, seed=8, decimals=2)
    _, p2 = scored_sample(300, seed=9, decimals=1)
    reference = {
        "auroc": roc_auc_score, "auprc": average_precision_score, "brier": brier_score_loss,
        "balanced_accuracy": lambda t, s: balanced_accuracy_score(t, (s >= 0.5).astype(int)),
    }[metric]
    got = paired_bootstrap_difference(y, p1, p2, metric=metric, n_resamples=20)
    assert got.value == pytest.approx(reference(y, p1) - reference(y, p2), abs=1e-12)


# --- DeLong -------------------------------------------------------------------------------

def slow_delong(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong, DeLong & Clarke-Pearson (1988) written out literally: the kernel
    psi(x, y) = 1, 1/2, 0 for x >, =, < y over all m·n positive–negative pairs, structural
    components V10(X_i) = mean_j psi(X_i, Y_j) and V01(Y_j) = mean_i psi(X_i, Y_j), and
    S10_rs = sum_i (V10_r(X_i) − A_r)(V10_s(X_i) − A_s) / (m − 1) (likewise S01 over n − 1),
    covariance S = S10/m + S01/n."""
    m, n = int((y == 1).sum()), int((y == 0).sum())
    v10, v01 = [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        psi = np.zeros((m, n))
        for i in range(m):
            for j in range(n):
                psi[i, j] = 1.0 if pos[i] > neg[j] else 0.5 if pos[i] == neg[j] else 0.0
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    aucs = np.array([v.mean() for v in v10])
    k = len(scores)
    s10, s01 = np.zeros((k, k)), np.zeros((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = ((v10[r] - aucs[r]) * (v10[s] - aucs[s])).sum() / (m - 1)
            s01[r, s] = ((v01[r] - v01[r].mean()) * (v01[s] - v01[s].mean())).sum() / (n - 1)
    return aucs, s10 / m + s01 / n


def test_delong_auc_equals_sklearn():
    y, p1 = scored_sample(400, seed=21, decimals=2)
    _, p2 = scored_sample(400, seed=22)
    result = delong_test(y, p1, p2)
    assert result.auc1 == pytest.approx(roc_auc_score(y, p1), abs=1e-14)
    assert result.auc2 == pytest.approx(roc_auc_score(y, p2), abs=1e-14)
    assert result.difference == pytest.approx(result.auc1 - result.auc2, abs=1e-15)
    assert delong_auc_ci(y, p1).value == pytest.approx(roc_auc_score(y, p1), abs=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_delong_covariance_equals_direct_structural_components(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(90) < 0.35).astype(int)
    informative = y + rng.normal(size=90)
    scores = [
        np.round(informative),                          # few distinct values: many ties
        np.round(informative + rng.normal(size=90), 1),
        rng.integers(0, 3, size=90).astype(float),      # uninformative, three levels
    ]
    aucs, cov = delong_covariance(y, *scores)
    slow_aucs, slow_cov = slow_delong(y, scores)
    np.testing.assert_allclose(aucs, slow_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, slow_cov, rtol=0, atol=1e-12)
    result = delong_test(y, scores[0], scores[1])
    direct_se = math.sqrt(slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1])
    assert result.se == pytest.approx(direct_se, abs=1e-12)
    assert result.z == pytest.approx((slow_aucs[0] - slow_aucs[1]) / direct_se, rel=1e-10)


def test_delong_matches_a_hand_worked_example():
    """DeLong (1988) by hand on 3 cases and 3 controls, two scores.

    Score 1: cases 0.9, 0.6, 0.4; controls 0.7, 0.3, 0.2.
      V10 (per case, share of controls ranked below) = 1, 2/3, 2/3 -> AUC1 = 7/9
      V01 (per control, share of cases ranked above) = 1/3, 1, 1
    Score 2: cases 0.8, 0.5, 0.3; controls 0.6, 0.4, 0.1.
      V10 = 1, 2/3, 1/3 -> AUC2 = 2/3;  V01 = 1/3, 2/3, 1
    Sample covariances (denominator m - 1 = n - 1 = 2):
      S10 = [[1/27, 1/18], [1/18, 1/9]],  S01 = [[4/27, 1/9], [1/9, 1/9]]
    Var(AUC1 - AUC2) = (1/27 + 1/9 - 2/18)/3 + (4/27 + 1/9 - 2/9)/3 = 2/81
      -> se = sqrt(2)/9, z = (1/9)/(sqrt(2)/9) = 1/sqrt(2), p = 2(1 - Phi(0.7071)) = 0.4795
    Var(AUC1) = (1/27)/3 + (4/27)/3 = 5/81.
    """
    y = np.array([1, 1, 1, 0, 0, 0])
    first = np.array([0.9, 0.6, 0.4, 0.7, 0.3, 0.2])
    second = np.array([0.8, 0.5, 0.3, 0.6, 0.4, 0.1])
    result = delong_test(y, first, second)
    assert result.auc1 == pytest.approx(7 / 9) and result.auc2 == pytest.approx(2 / 3)
    assert result.difference == pytest.approx(1 / 9)
    assert result.se == pytest.approx(math.sqrt(2) / 9, rel=1e-12)
    assert result.z == pytest.approx(1 / math.sqrt(2), rel=1e-12)
    assert result.p_value == pytest.approx(2 * norm.sf(1 / math.sqrt(2)), rel=1e-12)
    assert result.p_value == pytest.approx(0.4795, abs=1e-4)
    half = norm.ppf(0.975) * math.sqrt(2) / 9
    assert (result.ci_low, result.ci_high) == pytest.approx((1 / 9 - half, 1 / 9 + half))
    ci = delong_auc_ci(y, first)
    half = norm.ppf(0.975) * math.sqrt(5 / 81)
    assert (ci.value, ci.low, ci.high) == pytest.approx((7 / 9, 7 / 9 - half, 1.0))


def test_delong_is_antisymmetric_and_identical_scores_give_no_evidence():
    y, p1 = scored_sample(200, seed=31)
    _, p2 = scored_sample(200, seed=32)
    forward, backward = delong_test(y, p1, p2), delong_test(y, p2, p1)
    assert backward.z == pytest.approx(-forward.z, abs=1e-14)
    assert backward.p_value == pytest.approx(forward.p_value, abs=1e-14)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((-forward.ci_high,
                                                                 -forward.ci_low), abs=1e-14)
    same = delong_test(y, p1, p1.copy())
    assert isinstance(same, DeLongResult)
    assert (same.difference, same.se, same.z, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # A monotone transform changes no rank, so no AUC and no DeLong variance.
    transformed = delong_test(y, p1, np.log(p1))
    assert transformed.se == 0.0 and transformed.p_value == 1.0


def test_delong_auc_ci_is_clipped_to_the_unit_interval():
    y = np.array([0] * 5 + [1] * 5)
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    nearly = p.copy()
    nearly[4], nearly[5] = 0.65, 0.55  # one swapped pair: AUC 24/25, variance > 0
    perfect, close = delong_auc_ci(y, p), delong_auc_ci(y, nearly)
    assert perfect.as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert close.value == pytest.approx(0.96)
    assert close.high == 1.0 and 0 < close.low < 0.96
    assert delong_auc_ci([1, 1, 1], [0.2, 0.4, 0.6]) == Estimate(None, None, None)


# --- Holm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("p_values", [
    [0.01, 0.04, 0.03, 0.005],
    [0.2, 0.01, 0.2, 0.03, 0.8, 0.0001],   # ties and a value the cap must hold at 1
    [0.5],
    [0.04, 0.04, 0.04],
    list(np.random.default_rng(4).random(25) ** 3),
])
def test_holm_matches_statsmodels(p_values):
    expected = multipletests(p_values, method="holm")[1]
    got = holm(p_values)
    assert isinstance(got, list) and len(got) == len(p_values)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_holm_is_monotone_in_the_raw_order_and_capped():
    raw = [0.6, 0.001, 0.02, 0.019, 0.9]
    adjusted = holm(raw)
    order = np.argsort(raw)
    assert all(np.diff(np.array(adjusted)[order]) >= 0)
    assert adjusted[0] == 1.0  # 2 × 0.6, capped
    assert adjusted[4] == 1.0  # 1 × 0.9, raised to the running maximum
    assert adjusted[2] == pytest.approx(0.076)  # 3 × 0.02 < 4 × 0.019: raised to 0.076
    assert adjusted[1] == pytest.approx(0.005)  # the smallest p times k = 5
    assert holm([]) == []


# --- bootstrap ----------------------------------------------------------------------------

def test_bootstrap_intervals_contain_the_point_estimate():
    y, p = scored_sample(300, seed=41, decimals=2)
    got = bootstrap_metrics(y, p, n_resamples=500, seed=1)
    point = point_metrics(y, p)
    assert set(got) == {"auroc", "auprc", "brier", "balanced_accuracy"}
    for name, estimate in got.items():
        assert estimate.value == pytest.approx(point[name], abs=1e-15)
        assert estimate.low < estimate.value < estimate.high, name
        assert set(estimate.as_dict()) == {"value", "low", "high"}


def test_bootstrap_intervals_narrow_as_the_sample_grows():
    small = bootstrap_metrics(*scored_sample(200, seed=42), n_resamples=400)
    large = bootstrap_metrics(*scored_sample(3200, seed=43), n_resamples=400)
    for name in small:
        small_width = small[name].high - small[name].low
        large_width = large[name].high - large[name].low
        # Widths shrink like 1/sqrt(n): a factor of about 4 here.
        assert large_width < 0.5 * small_width, name


def test_bootstrap_is_stratified_so_every_replicate_has_both_classes():
    # 2 positives in 40: an unstratified bootstrap draws no positive in (38/40)^40 ≈ 13% of
    # replicates, where AUROC and AUPRC do not exist.
    y = np.array([1, 1] + [0] * 38)
    p = np.linspace(0.05, 0.95, 40)[::-1]
    got = bootstrap_metrics(y, p, n_resamples=300)
    assert all(math.isfinite(got[name].low) for name in got)
    # The two positives have the top scores, so AUROC is 1 in every replicate.
    assert got["auroc"].as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_bootstrap_is_reproducible_from_its_seed():
    y, p = scored_sample(150, seed=44)
    assert bootstrap_metrics(y, p, n_resamples=100, seed=7) == bootstrap_metrics(
        y, p, n_resamples=100, seed=7)
    assert bootstrap_metrics(y, p, n_resamples=100, seed=7) != bootstrap_metrics(
        y, p, n_resamples=100, seed=8)


def test_bootstrap_with_one_class_reports_only_what_exists():
    got = bootstrap_metrics([0] * 20, np.linspace(0.1, 0.6, 20), n_resamples=50)
    assert got["auroc"] == Estimate(None, None, None) == got["auprc"]
    assert got["brier"].low <= got["brier"].value <= got["brier"].high


def test_auroc_intervals_cover_the_true_auc_at_their_nominal_rate():
    """Binormal model: negatives N(0, 1), positives N(d, 1), so AUC = Phi(d / sqrt(2)).
    200 studies of 60 positives and 140 negatives; the 95% percentile interval (300
    resamples) and the 95% DeLong interval should each cover the true AUC in about 95% of
    studies (binomial sd ≈ 1.5%)."""
    d = 1.0
    true_auc = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(60, dtype=int), np.zeros(140, dtype=int)]
    bootstrap_hits = delong_hits = 0
    for study in range(200):
        z = rng.normal(size=200) + d * y
        p = 1 / (1 + np.exp(-z))  # a monotone map to (0, 1): the AUC is unchanged
        auroc = bootstrap_metrics(y, p, n_resamples=300, seed=study)["auroc"]
        bootstrap_hits += auroc.low <= true_auc <= auroc.high
        delong = delong_auc_ci(y, p)
        delong_hits += delong.low <= true_auc <= delong.high
    assert 0.88 <= bootstrap_hits / 200 <= 0.99
    assert 0.88 <= delong_hits / 200 <= 0.99


def test_paired_difference_uses_the_same_patients_for_both_scores():
    y, p = scored_sample(400, seed=46)
    jitter = np.clip(p + np.random.default_rng(0).normal(scale=0.005, size=p.size), 0, 1)
    single = bootstrap_metrics(y, p, n_resamples=300)["auprc"]
    paired = paired_bootstrap_difference(y, p, jitter, metric="auprc", n_resamples=300)
    # Resampled separately, the difference would be as uncertain as AUPRC itself; resampled
    # together, nearly all the sampling noise cancels.
    assert paired.high - paired.low < 0.1 * (single.high - single.low)
    assert paired.low <= paired.value <= paired.high
    assert paired_bootstrap_difference(y, p, p.copy(), metric="auroc").as_dict() == {
        "value": 0.0, "low": 0.0, "high": 0.0}


def test_paired_difference_finds_a_clearly_better_score():
    rng = np.random.default_rng(47)
    y = (rng.random(600) < 0.3).astype(int)
    good = 1 / (1 + np.exp(-(rng.normal(size=600) + 2.0 * (2 * y - 1))))
    poor = 1 / (1 + np.exp(-(rng.normal(size=600) + 0.3 * (2 * y - 1))))
    for metric in ("auroc", "auprc", "balanced_accuracy"):
        better = paired_bootstrap_difference(y, good, poor, metric=metric, n_resamples=300)
        assert better.low > 0, metric
    brier = paired_bootstrap_difference(y, good, poor, metric="brier", n_resamples=300)
    assert brier.high < 0  # lower Brier is better


# --- validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: point_metrics([0, 1] * 5, [0.5] * 9),
     "y and p have different lengths (10 vs 9)"),
    (lambda: point_metrics([0, 1, 2], [0.1, 0.2, 0.3]),
     "y must contain only 0 and 1 (found 2)"),
    (lambda: point_metrics([0, 1, 1], [0.1, np.nan, np.inf]),
     "p must be finite (2 NaN or infinite values)"),
    (lambda: point_metrics([0, 1], [0.1, 1.5]),
     "p must be probabilities in [0, 1] (found 1.5)"),
    (lambda: point_metrics([], []), "y is empty"),
    (lambda: point_metrics([[0, 1]], [[0.1, 0.2]]),
     "y must be one-dimensional (got shape (1, 2))"),
    (lambda: balanced_accuracy(["yes", "no"], [0.1, 0.2], 0.5),
     "y must contain only 0 and 1 (it holds non-numeric values)"),
    (lambda: delong_test([0, 1, 0], [0.1, 0.2, 0.3], [0.1, 0.2]),
     "y and p2 have different lengths (3 vs 2)"),
    (lambda: delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]),
     "DeLong's method needs both classes in y"),
    (lambda: bootstrap_metrics([0, 1], [0.1, 0.9], confidence=95),
     "confidence must be between 0 and 1 (got 95)"),
    (lambda: bootstrap_metrics([0, 1], [0.1, 0.9], n_resamples=0),
     "n_resamples must be a positive integer (got 0)"),
    (lambda: paired_bootstrap_difference([0, 1], [0.1, 0.9], [0.2, 0.8], metric="f1"),
     "unknown metric 'f1' (choose from auroc, auprc, brier, balanced_accuracy)"),
    (lambda: holm([0.01, 1.2]), "p-values must lie in [0, 1] (found 1.2)"),
])
def test_invalid_input_is_refused_with_a_specific_message(call, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()
