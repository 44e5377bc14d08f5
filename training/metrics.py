"""Evaluation statistics for binary classifiers scored by a probability, such as an LLM's
P(yes) for "dementia within five years".

What is here and where it comes from:

* Point metrics (``point_metrics``): AUROC, AUPRC as *average precision* (the step-wise sum
  ``Σ (R_k − R_{k−1}) P_k``, never a trapezoid under the PR curve, which is optimistic),
  Brier score and balanced accuracy — all straight from scikit-learn.
* A class-stratified, patient-level percentile bootstrap (``bootstrap_metrics``,
  ``paired_bootstrap_difference``). Positives and negatives are resampled separately with
  replacement, so every replicate keeps the study's class counts and every metric is defined
  in every replicate. The replicate metrics are computed on whole matrices of replicates at
  once (AUROC from ranks, AUPRC from sorted cumulative counts), which gives the same numbers
  as scikit-learn at a fraction of the cost of one library call per replicate.
* DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
  receiver operating characteristic curves: a nonparametric approach", Biometrics 44:837, for
  the variance of an AUC and the covariance of AUCs measured on the same patients; computed
  with the fast algorithm of Sun & Xu (2014), "Fast implementation of DeLong's algorithm for
  comparing the areas under correlated receiver operating characteristic curves", IEEE Signal
  Processing Letters 21(11):1389 — midranks instead of the m·n pairwise comparisons.
* Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
  6:65, for adjusting a family of p-values.

Labels ``y`` are 0/1 (1 = the event), scores ``p`` are finite reals where a higher score
means "more likely positive"; metrics that read ``p`` as a probability (Brier) also need it in
[0, 1]. Invalid input raises ``ValueError`` with a one-line message saying what is wrong.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    roc_auc_score,
)

METRICS = ("auroc", "auprc", "brier", "balanced_accuracy")

# Replicates are evaluated in blocks of at most this many matrix cells, so memory stays
# around a few tens of MB whatever the sample size.
_BLOCK_CELLS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an interval; all three are None when the metric is undefined
    (e.g. AUROC when ``y`` has a single class)."""

    value: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of H0: AUC(p1) = AUC(p2) on the same patients.

    ``difference`` is ``auc1 - auc2``; ``se`` its DeLong standard error; ``z`` the standard
    normal statistic ``difference / se``; ``p_value`` two-sided; ``ci_low``/``ci_high`` the
    95% Wald interval of the difference.
    """

    auc1: float
    auc2: float
    difference: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


# --- input validation ---------------------------------------------------------------------

def _as_labels(y) -> np.ndarray:
    try:
        arr = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("y must contain only 0 and 1 (it holds non-numeric values)") from None
    if arr.ndim != 1:
        raise ValueError(f"y must be one-dimensional (got shape {arr.shape})")
    if arr.size == 0:
        raise ValueError("y is empty")
    bad = arr[(arr != 0) & (arr != 1)]
    if bad.size:
        raise ValueError(f"y must contain only 0 and 1 (found {bad[0]:g})")
    return arr.astype(np.int8)


def _as_scores(p, n: int, name: str = "p") -> np.ndarray:
    try:
        arr = np.asarray(p, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric (it holds non-numeric values)") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (got shape {arr.shape})")
    if arr.size != n:
        raise ValueError(f"y and {name} have different lengths ({n} vs {arr.size})")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(f"{name} must be finite ({bad} NaN or infinite values)")
    return arr


def _validate(y, p, name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    labels = _as_labels(y)
    return labels, _as_scores(p, labels.size, name)


def _require_probabilities(p: np.ndarray, name: str = "p") -> None:
    outside = p[(p < 0) | (p > 1)]
    if outside.size:
        raise ValueError(f"{name} must be probabilities in [0, 1] (found {outside[0]:g})")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (got {confidence!r})")


def _check_resamples(n_resamples: int) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer (got {n_resamples!r})")


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < y.size


# --- point metrics ------------------------------------------------------------------------

def balanced_accuracy(y, p, threshold: float) -> float:
    """Mean of sensitivity and specificity when ``p >= threshold`` is called positive.

    With a single class in ``y`` it is that class's recall (scikit-learn's convention).
    """
    labels, scores = _validate(y, p)
    predicted = (scores >= threshold).astype(np.int8)
    with warnings.catch_warnings():
        # A single-class y makes scikit-learn warn that y_pred has a class y_true lacks.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(labels, predicted))


def point_metrics(y, p, threshold: float = 0.5) -> dict[str, float | None]:
    """AUROC, AUPRC (average precision), Brier score and balanced accuracy at ``threshold``,
    with the prevalence, the sample size and the number of positives.

    AUROC and AUPRC are None when ``y`` holds a single class: neither is defined then.
    """
    labels, scores = _validate(y, p)
    _require_probabilities(scores)
    both = _both_classes(labels)
    return {
        "auroc": float(roc_auc_score(labels, scores)) if both else None,
        "auprc": float(average_precision_score(labels, scores)) if both else None,
        "brier": float(brier_score_loss(labels, scores, pos_label=1)),
        "balanced_accuracy": balanced_accuracy(labels, scores, threshold),
        "prevalence": float(labels.mean()),
        "n": int(labels.size),
        "n_positive": int(labels.sum()),
    }


# --- vectorized metrics over bootstrap replicates -----------------------------------------
# Each function takes a (replicates × n) score matrix whose first m columns are positives and
# the rest negatives (the stratified bootstrap keeps that layout), and returns one value per
# replicate.

def _auroc_rows(scores: np.ndarray, m: int) -> np.ndarray:
    """Mann–Whitney: AUROC = (rank sum of positives − m(m+1)/2) / (m·k), midranks for ties."""
    k = scores.shape[1] - m
    ranks = rankdata(scores, axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * k)


def _auprc_rows(scores: np.ndarray, m: int) -> np.ndarray:
    """Average precision ``Σ_k (R_k − R_{k−1}) P_k`` over the distinct thresholds.

    Walking the scores from high to low, tied scores form one threshold. Recall rises by
    1/m for each positive, and that step is weighted by the precision at the *end* of the
    positive's tie block. So AP = (1/m) Σ_positives precision(end of own block).
    """
    rows, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    positive = order < m
    tp = np.cumsum(positive, axis=1)
    block_end = np.ones((rows, n), dtype=bool)
    block_end[:, :-1] = ordered[:, :-1] != ordered[:, 1:]
    # For each position, the index of the last element of its tie block.
    end_index = np.where(block_end, np.arange(n), n)
    end_index = np.minimum.accumulate(end_index[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(tp, end_index, axis=1) / (end_index + 1)
    return (precision_at_end * positive).sum(axis=1) / m


def _brier_rows(scores: np.ndarray, m: int) -> np.ndarray:
    labels = np.zeros(scores.shape[1])
    labels[:m] = 1.0
    return ((scores - labels) ** 2).mean(axis=1)


def _balanced_accuracy_rows(scores: np.ndarray, m: int, threshold: float) -> np.ndarray:
    k = scores.shape[1] - m
    recalls = []
    if m:
        recalls.append((scores[:, :m] >= threshold).mean(axis=1))
    if k:
        recalls.append((scores[:, m:] < threshold).mean(axis=1))
    return np.mean(recalls, axis=0)


def _row_metric(name: str, threshold: float) -> Callable[[np.ndarray, int], np.ndarray]:
    if name == "auroc":
        return _auroc_rows
    if name == "auprc":
        return _auprc_rows
    if name == "brier":
        return _brier_rows
    if name == "balanced_accuracy":
        return lambda scores, m: _balanced_accuracy_rows(scores, m, threshold)
    raise ValueError(f"unknown metric {name!r} (choose from {', '.join(METRICS)})")


def _stratified_blocks(y: np.ndarray, n_resamples: int, seed: int
                       ) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks of bootstrap index rows: each row draws m positives then k negatives with
    replacement from the study's own positives and negatives. Yields (indices, m)."""
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    m, n = pos.size, y.size
    block = max(1, _BLOCK_CELLS // n)
    done = 0
    while done < n_resamples:
        rows = min(block, n_resamples - done)
        parts = [pos[rng.integers(0, pos.size, size=(rows, pos.size))]] if pos.size else []
        if neg.size:
            parts.append(neg[rng.integers(0, neg.size, size=(rows, neg.size))])
        yield np.concatenate(parts, axis=1), m
        done += rows


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_metrics(y, p, threshold: float = 0.5, n_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, Estimate]:
    """Point estimates with class-stratified percentile bootstrap intervals for AUROC,
    AUPRC, Brier score and balanced accuracy.

    Patients are the resampling unit. Positives and negatives are resampled separately, so
    every replicate has the study's prevalence and both classes. The value of each Estimate
    is the metric on the full sample; the interval is the (α/2, 1−α/2) percentile of the
    replicate metrics. With a single class in ``y``, AUROC and AUPRC come back as None.
    """
    labels, scores = _validate(y, p)
    _require_probabilities(scores)
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    point = point_metrics(labels, scores, threshold)
    names = METRICS if _both_classes(labels) else ("brier", "balanced_accuracy")
    functions = {name: _row_metric(name, threshold) for name in names}
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for indices, m in _stratified_blocks(labels, n_resamples, seed):
        resampled = scores[indices]
        for name, function in functions.items():
            replicates[name].append(function(resampled, m))
    result = {name: Estimate(None, None, None) for name in METRICS}
    for name in names:
        low, high = _percentile_interval(np.concatenate(replicates[name]), confidence)
        result[name] = Estimate(point[name], low, high)
    return result


def paired_bootstrap_difference(y, p1, p2, metric: str = "auprc", n_resamples: int = 1000,
                                seed: int = 0, confidence: float = 0.95,
                                threshold: float = 0.5) -> Estimate:
    """``metric(p1) − metric(p2)`` on the same patients, with a percentile interval from a
    class-stratified bootstrap that uses the *same* resampled patients for both scores, so
    the interval reflects the pairing.

    ``metric`` is one of auroc, auprc, brier, balanced_accuracy (at ``threshold``).
    """
    labels, first = _validate(y, p1, "p1")
    second = _as_scores(p2, labels.size, "p2")
    function = _row_metric(metric, threshold)
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    if metric == "brier":
        _require_probabilities(first, "p1")
        _require_probabilities(second, "p2")
    if metric in ("auroc", "auprc") and not _both_classes(labels):
        return Estimate(None, None, None)
    order = np.argsort(1 - labels, kind="stable")  # positives first, as the row metrics expect
    m = int(labels.sum())
    value = float(function(first[order][None, :], m)[0] - function(second[order][None, :], m)[0])
    differences = []
    for indices, m in _stratified_blocks(labels, n_resamples, seed):
        differences.append(function(first[indices], m) - function(second[indices], m))
    low, high = _percentile_interval(np.concatenate(differences), confidence)
    return Estimate(value, low, high)


def joint_paired_difference(y, pairs: Sequence[tuple], metric: str = "auroc",
                            n_resamples: int = 2000, seed: int = 0,
                            confidence: float = 0.95) -> dict:
    """The mean over ``pairs`` of ``metric(a) − metric(b)``, all scored on the same
    patients, with one class-stratified bootstrap of *patients* shared by every pair.

    This is the honest unit when several cells (sizes, seeds) share one test set:
    each replicate resamples the patients once and recomputes every pair's
    difference on them, so the interval carries the correlation between cells
    instead of treating them as independent. The p value is two-sided: twice the
    smaller share of replicates on either side of zero (at least 1 / replicates).
    """
    labels = _as_labels(y)
    if not pairs:
        raise ValueError("no pairs to compare")
    firsts = np.stack([_as_scores(a, labels.size, "a") for a, _ in pairs])
    seconds = np.stack([_as_scores(b, labels.size, "b") for _, b in pairs])
    function = _row_metric(metric, 0.5)
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    if not _both_classes(labels):
        raise ValueError("the labels hold one class; the metric is undefined")
    order = np.argsort(1 - labels, kind="stable")
    m = int(labels.sum())
    per_pair = function(firsts[:, order], m) - function(seconds[:, order], m)
    replicate_means = []
    for indices, m_block in _stratified_blocks(labels, n_resamples, seed):
        diffs = np.stack([function(firsts[j][indices], m_block)
                          - function(seconds[j][indices], m_block)
                          for j in range(len(pairs))])
        replicate_means.append(diffs.mean(axis=0))
    means = np.concatenate(replicate_means)
    low, high = _percentile_interval(means, confidence)
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return {"difference": float(per_pair.mean()), "low": low, "high": high,
            "p_value": float(max(p, 1 / means.size)), "pairs": len(pairs),
            "per_pair": [float(d) for d in per_pair], "n": int(labels.size),
            "n_resamples": int(means.size)}


# --- DeLong -------------------------------------------------------------------------------

def delong_covariance(y, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more score vectors on the same patients and DeLong's covariance matrix
    of those AUCs, by Sun & Xu's midrank algorithm.

    For score vector r, with m positives and n negatives, take midranks (ties get the
    average of the ranks they span) within the positives (T_x), within the negatives (T_y)
    and within all patients together (T_z). DeLong's structural components are then

        V10_i = (T_z,i − T_x,i) / n     for positive i (share of negatives it outscores,
                                         ties counting one half),
        V01_j = 1 − (T_z,j − T_y,j) / m for negative j (share of positives that outscore it),

    the AUC is the mean of V10 (= mean of V01), and the covariance of the AUCs is
    S = S10 / m + S01 / n, with S10 and S01 the sample covariance matrices (divisor m−1,
    n−1) of the V10 and V01 vectors across scores.
    """
    labels = _as_labels(y)
    if not scores:
        raise ValueError("give at least one score vector")
    if not _both_classes(labels):
        raise ValueError("DeLong's method needs both classes in y")
    names = ["p"] if len(scores) == 1 else [f"p{i + 1}" for i in range(len(scores))]
    matrix = np.vstack([_as_scores(s, labels.size, name)
                        for s, name in zip(scores, names, strict=True)])
    positives, negatives = matrix[:, labels == 1], matrix[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]
    t_x = rankdata(positives, axis=1)  # "average" ranks are midranks
    t_y = rankdata(negatives, axis=1)
    t_z = rankdata(np.hstack([positives, negatives]), axis=1)
    v10 = (t_z[:, :m] - t_x) / n
    v01 = 1 - (t_z[:, m:] - t_y) / m
    aucs = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return aucs, s10 / m + s01 / n


def delong_test(y, p1, p2) -> DeLongResult:
    """DeLong's test comparing the AUCs of two scores on the same patients (two-sided), with
    the 95% interval of the difference ``auc1 − auc2``.

    The statistic is z = (AUC1 − AUC2) / sqrt(S11 + S22 − 2 S12). Identical scores give
    se = 0; then z = 0 and p = 1.
    """
    labels, first = _validate(y, p1, "p1")
    second = _as_scores(p2, labels.size, "p2")
    aucs, cov = delong_covariance(labels, first, second)
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(variance, 0.0))
    if se > 0:
        z = difference / se
        p_value = float(2 * norm.sf(abs(z)))
    else:
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        p_value = 1.0 if difference == 0 else 0.0
    half = float(norm.ppf(0.975)) * se
    return DeLongResult(
        auc1=float(aucs[0]), auc2=float(aucs[1]), difference=difference, se=se, z=float(z),
        p_value=p_value, ci_low=difference - half, ci_high=difference + half,
    )


def delong_auc_ci(y, p, confidence: float = 0.95) -> Estimate:
    """AUROC with a Wald interval from DeLong's variance, clipped to [0, 1].

    None for all three when ``y`` holds a single class.
    """
    labels, scores = _validate(y, p)
    _check_confidence(confidence)
    if not _both_classes(labels):
        return Estimate(None, None, None)
    aucs, cov = delong_covariance(labels, scores)
    auc = float(aucs[0])
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(max(float(cov[0, 0]), 0.0))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))


# --- multiple testing ---------------------------------------------------------------------

def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    Sort the k p-values ascending; the i-th smallest (i = 1..k) becomes
    max over j ≤ i of min(1, (k − j + 1) · p_(j)) — the running maximum keeps the adjusted
    values in the same order as the raw ones. Rejecting where adjusted ≤ α controls the
    family-wise error rate at α.
    """
    values = np.asarray(list(p_values), dtype=float)
    if values.ndim != 1:
        raise ValueError("p_values must be a flat sequence of numbers")
    if values.size == 0:
        return []
    bad = values[~((values >= 0) & (values <= 1))]
    if bad.size:
        raise ValueError(f"p-values must lie in [0, 1] (found {bad[0]:g})")
    k = values.size
    order = np.argsort(values, kind="stable")
    scaled = np.minimum(1.0, (k - np.arange(k)) * values[order])
    adjusted = np.empty(k)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(v) for v in adjusted]
