"""Trust or escalate: clinicians first where the judge is least sure, and how far to trust it.

    rationale-audit campaign create pilot --run 1 --annotators ann,bob,cat --k 2 \\
        --assignment escalation --judge-run 4
    rationale-audit judge estimate --campaign pilot --target-agreement 0.9

**The judge's certainty.** A judge run with log-probabilities holds, per rationale, the
probability of each score 1–5 on each dimension. Read as independent, they give the
probability that the judge would approve the rationale (both scores at or above the
approval threshold, 4 by default, the export policy's): P(approve) = P(accuracy ≥ 4) ·
P(faithfulness ≥ 4). The judge's *doubt* is min(P, 1 − P): 0 when it is sure either way,
0.5 when it is a coin flip. A rationale the judge scored without probabilities, or did not
score, counts as 0.5: the judge cannot vouch for it.

**Escalation order** (``assignment: escalation``): the adaptive picker of
:mod:`annotation_db.adaptive` (every item reaches k; the cap holds under concurrency; extra
ratings where the panel's decision is least sure), except that among the items still below
k the one the judge doubts most comes first. Clinicians' time goes where the judge is least
sure; items it is sure of come last, and a team that stops early has rated the hard ones.

**How far to trust it** (after Jung et al. 2024, "Trust or Escalate"): items with the
judge's confidence (1 − doubt) and the panel's decision are split at random into a
calibration and a held-out half. On the calibration half, ten confidence thresholds (the
confidences' deciles, chosen without looking at any agreement) are each tested at δ/10
(Bonferroni; Learn then Test, Angelopoulos et al. 2021): H0 "the judge's approval decision
disagrees with the panel's on more than 1 − target of the items at or above this
threshold" is rejected when the binomial tail P(X ≤ errors) ≤ δ/10. The judge is trusted on
items at or above the lowest rejected threshold; the held-out half reports the share of
items that is, and the agreement reached there with a Wilson CI. (The paper's
fixed-sequence test stops at its first failure, which the few items above the highest
thresholds make likely; Bonferroni over a fixed grid does not.)
"""

import random

import numpy as np
from scipy import stats

from annotation_db.models import JudgeRating
from annotation_db.rubric import SCALE_DIMENSIONS

APPROVE_AT = 4
UNSURE = 0.5


def p_approve(rating: JudgeRating | None, approve_at: int = APPROVE_AT) -> float | None:
    """The judge's probability of approving, from its score distributions (None: it gave
    none for some dimension)."""
    if rating is None or not rating.probabilities:
        return None
    p = 1.0
    for name in SCALE_DIMENSIONS:
        distribution = rating.probabilities.get(name)
        if not distribution:
            return None
        total = sum(distribution.values())
        if total <= 0:
            return None
        p *= sum(v for s, v in distribution.items() if int(s) >= approve_at) / total
    return p


def doubt(rating: JudgeRating | None, approve_at: int = APPROVE_AT) -> float:
    """min(P(approve), 1 − P(approve)); :data:`UNSURE` without probabilities."""
    p = p_approve(rating, approve_at)
    return UNSURE if p is None else min(p, 1.0 - p)


def certified_threshold(confidence: np.ndarray, agree: np.ndarray, *, target: float,
                        delta: float, grid: int = 10) -> float | None:
    """The lowest confidence threshold certified to keep agreement ≥ ``target`` (None: none).

    Candidates are the confidences' deciles (set by the confidences alone, never by the
    agreements); those keeping fewer items than could be certified even with no error
    (target^n > δ/grid) are dropped; each remaining one is tested at δ/grid (Bonferroni)."""
    import math

    candidates = sorted({float(np.quantile(confidence, q))
                         for q in np.linspace(0, 1, grid, endpoint=False)})
    level = delta / len(candidates)
    least = math.ceil(math.log(level) / math.log(target))
    certified = []
    for threshold in candidates:
        kept = confidence >= threshold
        if kept.sum() < least:
            continue
        errors = int((~agree[kept]).sum())
        if stats.binom.cdf(errors, int(kept.sum()), 1.0 - target) <= level:
            certified.append(threshold)
    return min(certified) if certified else None


def trust(confidence: list[float], judge_approves: list[bool], panel_approves: list[bool], *,
          target: float = 0.9, delta: float = 0.05, seed: int = 0) -> dict:
    """Trust-or-escalate on items with the judge's confidence and both decisions."""
    from statsmodels.stats.proportion import proportion_confint

    n = len(confidence)
    if n < 20:
        return {"computable": False, "items": n,
                "reason": "fewer than 20 items with the judge's probabilities and the panel's "
                          "decision"}
    order = list(range(n))
    random.Random(f"trust-{seed}").shuffle(order)
    half = n // 2
    calibration, held_out = np.array(order[:half]), np.array(order[half:])
    conf = np.asarray(confidence, dtype=float)
    agree = np.asarray(judge_approves) == np.asarray(panel_approves)
    threshold = certified_threshold(conf[calibration], agree[calibration],
                                         target=target, delta=delta)
    out = {"computable": True, "items": n, "calibration_items": half,
           "held_out_items": n - half, "target_agreement": target, "delta": delta,
           "threshold": threshold,
           "agreement_all_held_out": float(agree[held_out].mean())}
    if threshold is None:
        out.update(trusted_share=0.0, trusted_items=0, agreement=None, agreement_ci95=None,
                   verdict="the judge is trusted on no items: every item goes to clinicians")
        return out
    trusted = held_out[conf[held_out] >= threshold]
    hits = int(agree[trusted].sum())
    ci = (proportion_confint(hits, len(trusted), alpha=0.05, method="wilson")
          if len(trusted) else (None, None))
    out.update(trusted_share=len(trusted) / len(held_out), trusted_items=int(len(trusted)),
               agreement=hits / len(trusted) if len(trusted) else None,
               agreement_ci95=[float(ci[0]), float(ci[1])] if len(trusted) else None,
               verdict=f"trusted at confidence ≥ {threshold:.3f}: "
                       f"{len(trusted) / len(held_out):.0%} of held-out items")
    return out
