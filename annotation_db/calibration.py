"""How far an automatic judge can be trusted against this panel of clinicians.

    rationale-audit judge report --campaign pilot

Per scored dimension, the judge's integer scores are set beside the clinicians':

- **weighted κ** (quadratic) of the judge against each clinician on the items both rated,
  and against the panel's consensus (the median of the item's ratings, halves rounded up),
  each with a bootstrap CI over items;
- **Krippendorff's α** of the judge with each clinician and with the consensus, of the panel
  alone (the ceiling: how well clinicians agree with one another) and of the panel with the
  judge added as one more coder, all with the unit bootstrap of
  :mod:`annotation_db.agreement`;
- the **alt-test** (Calderon, Reichart & Dror, ACL 2025): leave one clinician out at a
  time and ask who represents the remaining clinicians better on each item, the judge or
  the left-out clinician (alignment = minus the RMS distance to the others' scores; ties
  count for both). The clinician's advantage is penalised by ε (the cost-benefit margin);
  the judge *wins* against a clinician when a one-sided t-test rejects "the clinician's
  advantage is at least ε", after a Benjamini–Yekutieli correction over clinicians. The
  winning rate is the share of clinicians it wins against; ρ, the average advantage
  probability, is the mean share of items on which the judge aligns at least as well.

Claim verdicts (claim review) are nominal: κ is unweighted (Cohen's), the consensus is the
most frequent verdict (ties: the first in the rubric's order), alignment in the alt-test is
the share of the other clinicians who gave the same verdict, and there is no Spearman ρ.

A judge is labelled **may pre-screen** on a dimension only when its winning rate is at
least 0.5 and every compared clinician has at least ``min_items`` items (the t-test's
normality needs about 30, as the alt-test's authors say); otherwise the report says why not.
Nothing here changes a clinician's rating, an export or the panel's agreement report.
"""

import math

import numpy as np
from scipy import stats

from annotation_db.agreement import krippendorff_alpha, not_computable

QUADRATIC = "quadratic"


# --- Weighted kappa -------------------------------------------------------------------

def _kappa_weights(domain: list[float], weights: str | None) -> np.ndarray:
    v = len(domain)
    i, j = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    if weights == QUADRATIC:
        return (i - j) ** 2 / (v - 1) ** 2
    if weights == "linear":
        return np.abs(i - j) / (v - 1)
    return (i != j).astype(float)


def _pair_cells(x: np.ndarray, y: np.ndarray, domain: list[float]) -> np.ndarray:
    """Items × cells: a one in the (x, y) cell of each item's V × V confusion table."""
    index = {value: k for k, value in enumerate(domain)}
    v = len(domain)
    cells = np.zeros((len(x), v * v))
    cells[np.arange(len(x)), [index[a] * v + index[b] for a, b in zip(x, y, strict=True)]] = 1
    return cells


def _kappa_from_tables(tables: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Cohen's weighted κ for a stack of confusion tables (B × V × V); NaN where undefined."""
    n = tables.sum(axis=(1, 2))
    expected = tables.sum(axis=2)[:, :, None] * tables.sum(axis=1)[:, None, :] / n[:, None, None]
    observed = (tables * w).sum(axis=(1, 2))
    chance = (expected * w).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chance > 0, 1.0 - observed / chance, np.nan)


def weighted_kappa(x, y, domain: list[float], *, weights: str | None = QUADRATIC,
                   replicates: int = 1000, seed: int = 0) -> dict:
    """Cohen's κ of two raters over the same items, with a bootstrap CI over items."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    base = {"items": int(len(x)), "weights": weights or "none"}
    if len(x) < 2:
        return {**base, **not_computable("fewer than two items rated by both")}
    cells = _pair_cells(x, y, domain)
    v = len(domain)
    w = _kappa_weights(domain, weights)
    estimate = float(_kappa_from_tables(cells.sum(axis=0).reshape(1, v, v), w)[0])
    if math.isnan(estimate):
        return {**base, **not_computable("no variation: both raters gave one score throughout")}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=replicates)
    boot = _kappa_from_tables((draws @ cells).reshape(replicates, v, v), w)
    kept = boot[~np.isnan(boot)]
    out = {**base, "computable": True, "kappa": estimate, "replicates": replicates}
    if kept.size:
        out["ci95"] = [float(np.quantile(kept, 0.025)), float(np.quantile(kept, 0.975))]
    return out


def consensus(matrix: np.ndarray, nominal: bool = False) -> np.ndarray:
    """Each item's median rating, halves rounded up, or (``nominal``) its most frequent
    code, ties to the smallest (NaN for an unrated item)."""
    out = np.full(matrix.shape[1], np.nan)
    for item in range(matrix.shape[1]):
        values = matrix[:, item][~np.isnan(matrix[:, item])]
        if not values.size:
            continue
        if nominal:
            codes, counts = np.unique(values, return_counts=True)
            out[item] = codes[np.argmax(counts)]
        else:
            out[item] = np.floor(np.median(values) + 0.5)
    return out


# --- The alt-test ------------------------------------------------------------------------

def benjamini_yekutieli(p_values: list[float], q: float = 0.05) -> list[bool]:
    """Which hypotheses are rejected with the false discovery rate held at ``q`` under any
    dependence (Benjamini & Yekutieli 2001)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    harmonic = np.sum(1.0 / np.arange(1, m + 1))
    order = np.argsort(p)
    thresholds = np.arange(1, m + 1) / m * q / harmonic
    below = np.flatnonzero(p[order] <= thresholds)
    rejected = np.zeros(m, dtype=bool)
    if below.size:
        rejected[order[: below[-1] + 1]] = True
    return rejected.tolist()


def _alignment(score: float, others: np.ndarray, nominal: bool = False) -> float:
    if nominal:
        return float(np.mean(others == score))
    return -float(np.sqrt(np.mean((others - score) ** 2)))


def _one_sided_p(differences: np.ndarray, epsilon: float) -> tuple[float, float | None]:
    """P-value of H0 "mean(d) ≥ ε" against "mean(d) < ε", and the t statistic."""
    shifted = differences - epsilon
    if np.allclose(shifted, shifted[0]):  # no spread: the sign decides
        return (0.0 if shifted[0] < 0 else 1.0), None
    result = stats.ttest_1samp(shifted, 0.0, alternative="less")
    return float(result.pvalue), float(result.statistic)


def alt_test(matrix: np.ndarray, raters: list[str], judge: np.ndarray, *,
             epsilon: float = 0.2, q: float = 0.05, min_items: int = 30,
             nominal: bool = False) -> dict:
    """The alt-test of a judge (one score per item, NaN where it did not score) against
    the clinicians of ``matrix`` (raters × items, NaN = not rated)."""
    if len(raters) < 2:
        return not_computable("the alt-test needs at least two clinicians")
    rows = []
    for j, name in enumerate(raters):
        wins_judge, wins_human = [], []
        for item in range(matrix.shape[1]):
            own = matrix[j, item]
            others = np.delete(matrix[:, item], j)
            others = others[~np.isnan(others)]
            if np.isnan(own) or np.isnan(judge[item]) or not others.size:
                continue
            s_judge = _alignment(judge[item], others, nominal)
            s_human = _alignment(own, others, nominal)
            wins_judge.append(float(s_judge >= s_human))
            wins_human.append(float(s_human >= s_judge))
        row = {"rater": name, "items": len(wins_judge)}
        if len(wins_judge) < 2:
            rows.append({**row, **not_computable("fewer than two items shared with the judge "
                                                 "and another clinician")})
            continue
        d = np.asarray(wins_human) - np.asarray(wins_judge)
        p, t = _one_sided_p(d, epsilon)
        rows.append({**row, "computable": True, "rho_judge": float(np.mean(wins_judge)),
                     "rho_human": float(np.mean(wins_human)), "t": t, "p_value": p,
                     "enough_items": len(wins_judge) >= min_items})
    compared = [r for r in rows if r.get("computable")]
    if not compared:
        return {"computable": False, "reason": "no clinician shares two items with the judge "
                                               "and another clinician", "raters": rows}
    for row, rejected in zip(compared, benjamini_yekutieli([r["p_value"] for r in compared], q),
                             strict=True):
        row["judge_wins"] = bool(rejected)
    winning_rate = sum(r["judge_wins"] for r in compared) / len(compared)
    enough = all(r["enough_items"] for r in compared)
    passed = winning_rate >= 0.5 and enough
    if passed:
        why = (f"wins against {sum(r['judge_wins'] for r in compared)} of {len(compared)} "
               f"clinicians (winning rate {winning_rate:.2f} ≥ 0.5) at ε = {epsilon}")
    elif not enough:
        short = [r["rater"] for r in compared if not r["enough_items"]]
        why = (f"too few items for the t-test: {', '.join(short)} "
               f"{'has' if len(short) == 1 else 'have'} fewer than {min_items}")
    else:
        why = f"winning rate {winning_rate:.2f} < 0.5 at ε = {epsilon}"
    return {"computable": True, "epsilon": epsilon, "q": q, "min_items": min_items,
            "winning_rate": winning_rate,
            "rho": float(np.mean([r["rho_judge"] for r in compared])),
            "passed": passed, "why": why, "raters": rows,
            "few_clinicians": len(compared) < 3}


# --- The report ----------------------------------------------------------------------------

def judge_calibration(matrix: np.ndarray, raters: list[str], judge: np.ndarray, *,
                      domain: list[float], level: str = "ordinal", epsilon: float = 0.2,
                      q: float = 0.05, min_items: int = 30, replicates: int = 1000,
                      seed: int = 0) -> dict:
    """One dimension's calibration: κ per clinician and vs consensus, α with and without the
    judge, the alt-test, and Spearman's ρ against the panel's mean (``level`` "nominal":
    unweighted κ, modal consensus, no ρ)."""
    nominal = level == "nominal"
    weights = None if nominal else QUADRATIC
    scored = ~np.isnan(judge)
    per_rater = []
    for j, name in enumerate(raters):
        both = scored & ~np.isnan(matrix[j])
        per_rater.append({"rater": name, **weighted_kappa(
            matrix[j, both], judge[both], domain, weights=weights, replicates=replicates,
            seed=seed),
            "alpha": krippendorff_alpha(np.vstack([matrix[j], judge]), level, domain,
                                        replicates=replicates, seed=seed)})
    panel = consensus(matrix, nominal)
    rated = scored & ~np.isnan(panel)
    counts = (~np.isnan(matrix)).sum(axis=0)
    with np.errstate(all="ignore"):
        panel_mean = np.where(counts > 0, np.nansum(matrix, axis=0) / counts, np.nan)
    if nominal:
        spearman = not_computable("verdicts are nominal: no rank correlation")
    elif rated.sum() >= 3 and np.unique(judge[rated]).size > 1 \
            and np.unique(panel_mean[rated]).size > 1:
        rho = stats.spearmanr(judge[rated], panel_mean[rated])
        spearman = {"computable": True, "rho": float(rho.statistic), "p_value": float(rho.pvalue),
                    "items": int(rated.sum())}
    else:
        spearman = not_computable("fewer than three items or no variation")
    return {
        "judge_items": int(scored.sum()),
        "kappa_vs_raters": per_rater,
        "kappa_vs_consensus": weighted_kappa(panel[rated], judge[rated], domain,
                                             weights=weights, replicates=replicates,
                                             seed=seed),
        "alpha_vs_consensus": krippendorff_alpha(np.vstack([panel, judge]), level, domain,
                                                 replicates=replicates, seed=seed),
        "alpha_panel": krippendorff_alpha(matrix, level, domain, replicates=replicates,
                                          seed=seed),
        "alpha_with_judge": krippendorff_alpha(np.vstack([matrix, judge]), level, domain,
                                               replicates=replicates, seed=seed),
        "spearman_vs_panel_mean": spearman,
        "alt_test": alt_test(matrix, raters, judge, epsilon=epsilon, q=q, min_items=min_items,
                             nominal=nominal),
    }
