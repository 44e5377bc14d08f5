"""Campaign estimates that combine a judge on every item with clinicians on a random subset.

    rationale-audit judge estimate --campaign pilot --target-ci-width 0.2

A team reports campaign-level quantities: the mean accuracy and faithfulness scores, the
share of rationales approved, the share of claims not in the record. Clinicians rate a
subset; a judge scores every item. **Prediction-powered inference** (Angelopoulos et al.
2023; PPI++ power tuning, Angelopoulos, Duchi & Zrnic 2023) combines them:

    θ̂ = λ · mean(judge on the unrated items) + mean(clinicians − λ · judge on the rated ones)

The rated items correct the judge's bias, so the estimate is unbiased whatever the judge's
quality, and its CI is valid; λ is chosen from the data to minimise the variance (λ = 0 is
the clinician-only estimate, so a useless judge costs next to nothing). The mean estimator is
written out here (the authors' ``ppi-python`` installs beside vLLM, but ships a top-level
``tests`` package that shadows this project's); ``tests/annotation_db/test_ppi.py`` checks
its coverage against a simulation with a known truth.

**Validity needs a random subset.** The rated items must be a random sample of the items.
A balanced campaign's queues are shuffled, so the items rated so far are one; an adaptive
or escalation campaign picks items by their scores or the judge's doubt, and there the PPI
interval is not valid (the report says so and gives it only for comparison).

**The planner**: how many clinician-rated items reach a target CI width, with the judge and
without. Without: n = (2 z σ_Y / w)². With: the smallest n whose PPI++ variance
Var(Y − λ f)/n + λ² Var(f)/(N − n) at its best λ gives width w. When the judge explains
little of the clinicians' variance the two agree and the report says the judge saves
nothing. (A judge no better than the model it evaluates saves at most half the labels:
arXiv 2410.13341.)
"""

import math

import numpy as np
from scipy import stats

ALPHA = 0.05


def _interval(estimate: float, se: float, alpha: float) -> list[float]:
    z = stats.norm.ppf(1 - alpha / 2)
    return [float(estimate - z * se), float(estimate + z * se)]


def classical(y: np.ndarray, alpha: float = ALPHA) -> dict:
    """Clinician-only mean and its normal (CLT) CI."""
    y = np.asarray(y, dtype=float)
    estimate = float(y.mean())
    return {"estimate": estimate, "n": int(y.size),
            "ci": _interval(estimate, float(y.std(ddof=1) / math.sqrt(y.size)), alpha)}


def _lambda(cov: float, var_f: float, n: int, big_n: int) -> float:
    """PPI++'s variance-minimising λ for a mean, Cov(Y, f) / ((1 + n/N) Var(f)), clipped
    to [0, 1] (0: the judge is ignored)."""
    if var_f == 0 or big_n == 0:
        return 0.0
    return float(np.clip(cov / ((1 + n / big_n) * var_f), 0.0, 1.0))


def best_lambda(y: np.ndarray, f: np.ndarray, f_unlabeled: np.ndarray) -> float:
    """:func:`_lambda` from the data, with Var(f) over every judged item."""
    var_f = float(np.var(np.concatenate([f, f_unlabeled]), ddof=1))
    cov = float(np.cov(y, f, ddof=1)[0, 1]) if var_f > 0 else 0.0
    return _lambda(cov, var_f, len(y), len(f_unlabeled))


def prediction_powered(y: np.ndarray, f: np.ndarray, f_unlabeled: np.ndarray,
                       alpha: float = ALPHA, lam: float | None = None) -> dict:
    """PPI++ mean and CI of clinicians ``y`` with judge ``f`` on the same items and
    ``f_unlabeled`` on the items no clinician rated:
    θ̂ = λ·mean(f_unlabeled) + mean(y − λ·f), se² = λ²·Var(f_unlabeled)/N + Var(y − λ·f)/n."""
    y, f, fu = (np.asarray(a, dtype=float) for a in (y, f, f_unlabeled))
    if fu.size < 2:
        raise ValueError("prediction-powered inference needs at least 2 unrated items")
    lam = best_lambda(y, f, fu) if lam is None else lam
    rectifier = y - lam * f
    estimate = float(lam * fu.mean() + rectifier.mean())
    se = math.sqrt(lam ** 2 * fu.var(ddof=1) / fu.size + rectifier.var(ddof=1) / y.size)
    return {"estimate": estimate, "ci": _interval(estimate, se, alpha), "n": int(y.size),
            "N": int(fu.size), "lambda": lam}


def compare(y, f, f_unlabeled, alpha: float = ALPHA) -> dict:
    """Clinician-only and prediction-powered estimates side by side."""
    y = np.asarray(y, dtype=float)
    if y.size < 2:
        return {"computable": False, "reason": "fewer than 2 rated items"}
    base = classical(y, alpha)
    out = {"computable": True, "clinicians_only": base}
    if len(f_unlabeled) < 2:  # one unrated item has no variance to estimate
        out["prediction_powered"] = None
        out["note"] = ("every judged item is rated: the clinician-only estimate is the answer"
                       if len(f_unlabeled) == 0 else "only one judged item is unrated: the "
                       "clinician-only estimate is the answer")
        return out
    ppi = prediction_powered(y, f, f_unlabeled, alpha)
    width = lambda r: r["ci"][1] - r["ci"][0]  # noqa: E731
    out["prediction_powered"] = ppi
    # None when the clinicians' values do not vary (the normal interval has no width)
    out["width_ratio"] = width(ppi) / width(base) if width(base) > 0 else None
    out["judge_vs_clinicians_r"] = (float(np.corrcoef(y, f)[0, 1])
                                    if np.std(y) > 0 and np.std(f) > 0 else None)
    return out


def ratings_for_width(y, f, total_items: int, target_width: float,
                      alpha: float = ALPHA) -> dict:
    """Rated items needed for a CI of ``target_width``, without and with the judge
    (variances from the items rated so far; the judge scores all ``total_items``)."""
    y, f = np.asarray(y, dtype=float), np.asarray(f, dtype=float)
    if y.size < 5:
        return {"computable": False, "reason": "fewer than 5 rated items to estimate variances"}
    z = stats.norm.ppf(1 - alpha / 2)
    half = target_width / 2
    var_y = float(np.var(y, ddof=1))
    var_f = float(np.var(f, ddof=1))
    cov = float(np.cov(y, f, ddof=1)[0, 1]) if var_f > 0 else 0.0
    without = math.ceil(var_y * (z / half) ** 2) if var_y > 0 else 1

    def ppi_width(n: int) -> float:
        unlabeled = total_items - n
        if unlabeled <= 0 or var_f == 0:
            return 2 * z * math.sqrt(var_y / n)
        lam = _lambda(cov, var_f, n, unlabeled)
        variance = (var_y - 2 * lam * cov + lam ** 2 * var_f) / n + lam ** 2 * var_f / unlabeled
        return 2 * z * math.sqrt(max(variance, 0.0))

    with_judge = next((n for n in range(2, total_items + 1) if ppi_width(n) <= target_width),
                      None)
    reachable = without <= total_items
    saved = (without - with_judge) if (with_judge is not None and reachable) else None
    if with_judge is None:
        verdict = (f"not reachable with {total_items} items, judge or not: rate more items or "
                   "accept a wider interval")
    elif not reachable:
        verdict = (f"only with the judge: {with_judge} rated items (clinicians alone would need "
                   f"{without}, more than the {total_items} items)")
    elif saved <= max(1, 0.02 * without):
        verdict = "the judge saves nothing here: it explains too little of the clinicians' scores"
    else:
        verdict = f"the judge saves {saved} of {without} rated items ({saved / without:.0%})"
    return {"computable": True, "target_width": target_width, "total_items": total_items,
            "without_judge": without if reachable else None, "without_judge_needed": without,
            "with_judge": with_judge, "saved": saved, "verdict": verdict,
            "variance_clinicians": var_y, "variance_judge": var_f, "covariance": cov}
