"""Seed-level statistics: a comparison of two training targets when each was trained with
several seeds and every run scored the same test patients.

Training variance is a source of error of its own: two runs of one target that differ only
in their seed (the training patients drawn and the initialisation) can differ by more than
the test-set sampling interval of either. So the unit of a comparison is the *seed*, and the
headline is

* :func:`hierarchical_difference`: the mean over seeds of ``metric(target a)`` minus the
  mean over seeds of ``metric(target b)``, with a two-level percentile bootstrap: each
  replicate draws the seeds with replacement (the same seed numbers for both targets when
  they share their training draws, as a seed does here), then the test patients
  (class-stratified, the same patients for every run), and recomputes the difference. The
  interval so carries the spread between seeds and the sampling of test patients. With so
  few seeds the drawn seeds' spread is scaled up to the unbiased variance (``inflate``).
  Coverage in simulation (:mod:`training.seed_coverage`, 200 patients, 400 simulations
  unless said): 3 seeds with the seed spread of the committed cpu reports (AUROC SD about
  0.06) 0.94 (0.895 without the scaling); 5 seeds 0.965. Twice that spread, 3 seeds:
  0.875, 5 seeds: 0.917 (too narrow: few seeds cannot measure a large spread). Almost no
  spread: 0.998 (too wide: the patient level is counted twice when seeds add no spread).
  Over 2,000 simulations: 3 seeds 0.940 (twice the spread 0.869), 2 seeds 0.936 (0.808).

And, beside it, what makes a run's scores unfit to be compared at all, or comparable only
at a matched rate of "yes":

* :func:`degenerate`: a run whose *expected yes-rate*, its mean P(yes) over the test
  patients, is above 95% or below 5% says the same thing for nearly everyone: most of its
  scores sit at one end, and its AUROC reads variation around one answer. The mean is
  the share of "yes" it gives when each answer is drawn from its own P(yes): for a score
  that follows a written conclusion (0 or 1, nearly) the share of patients it says yes
  for; under sampled scoring (a patient's score is the mean P(yes) over its sampled
  rationales) the share of its written answers that say yes. A graded P(yes) that sits
  off 0.5 for everyone (0.51-0.59, say) is not flagged: it answers "yes" for everyone at
  the 0.5 cut, but that is its calibration, not a constant score, and balanced accuracy
  at a matched rate (below) compares it fairly. (Before 2026-12-07 a graded score's
  share at or above 0.5 was used; on the cpu scale's stored results the two rules flag
  the same SFT runs, and the old one also flagged the few-shot runs, whose P(yes)
  averages 0.24 but is below 0.5 for all.)
* :func:`balanced_accuracy_at_rate`: balanced accuracy when the arm says "yes" for a given
  share of patients (its highest scores), so arms that write a yes/no conclusion and arms
  with a graded score are compared at the same operating point. Ties at the cut are split
  in expectation (as a random tie-break would on average), so the result does not depend
  on the order the patients came in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.metrics import _row_metric, _stratified_blocks, _validate

DEGENERATE_LOW, DEGENERATE_HIGH = 0.05, 0.95
TOLERANCE = 1e-9  # float error of a share such as 1 - 0.95 or a mean of fifths


def hierarchical_difference(y, arm_a: Sequence, arm_b: Sequence, metric: str = "auroc",
                            n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
                            paired_seeds: bool = True, threshold: float = 0.5,
                            inflate: bool = True) -> dict:
    """``mean_s metric(arm_a[s]) − mean_s metric(arm_b[s])`` with a seeds-then-patients
    bootstrap interval; ``arm_a`` and ``arm_b`` hold one score vector per seed, each over
    the patients of ``y``.

    ``paired_seeds``: seed *s* of both arms shares its training draw, so a replicate draws
    one set of seed numbers for both (needs as many seeds in each arm); otherwise each arm's
    seeds are drawn on their own. Returns value, low, high, a two-sided bootstrap p value,
    the per-seed metrics of each arm and the number of seeds.
    """
    if not len(arm_a) or not len(arm_b):
        raise ValueError("each arm needs at least one seed's scores")
    if paired_seeds and len(arm_a) != len(arm_b):
        raise ValueError(f"paired seeds need as many seeds in each arm ({len(arm_a)} and "
                         f"{len(arm_b)})")
    groups = [[(1.0, arm_a), (-1.0, arm_b)]] if paired_seeds \
        else [[(1.0, arm_a)], [(-1.0, arm_b)]]
    result = hierarchical_contrast(y, groups, metric, n_resamples=n_resamples, seed=seed,
                                   confidence=confidence, threshold=threshold,
                                   inflate=inflate)
    per_seed_a, per_seed_b = result.pop("per_seed")
    return {**result, "seeds": [len(arm_a), len(arm_b)], "per_seed_a": per_seed_a,
            "per_seed_b": per_seed_b, "paired_seeds": paired_seeds}


def hierarchical_contrast(y, groups: Sequence[Sequence[tuple[float, Sequence]]],
                          metric: str = "auroc", n_resamples: int = 2000, seed: int = 0,
                          confidence: float = 0.95, threshold: float = 0.5,
                          inflate: bool = True) -> dict:
    """``Σ weight × mean_s metric(arm[s])`` over arms with a seeds-then-patients bootstrap
    interval: :func:`hierarchical_difference` for more than two arms, such as a difference
    of differences between two reproductions scored on the same patients.

    ``groups``: lists of ``(weight, arm)``, each arm one score vector per seed over the
    patients of ``y``. The arms of one group share their seeds (seed *s* of each is one
    training draw), so a replicate draws one set of seed numbers for the whole group, and
    they need as many seeds each; groups draw their seeds on their own. Every replicate
    draws one set of patients for every arm. Returns value, low, high, a two-sided
    bootstrap p value, the per-seed metrics of each arm in order (``per_seed``) and the
    number of replicates.
    """
    arms = [arm for group in groups for _, arm in group]
    if not groups or any(not group for group in groups) or any(not len(a) for a in arms):
        raise ValueError("each arm needs at least one seed's scores")
    for group in groups:
        if len({len(arm) for _, arm in group}) > 1:
            raise ValueError("the arms of a group share their seeds and need as many each "
                             f"({', '.join(str(len(arm)) for _, arm in group)})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    labels = _validate(y, np.asarray(arms[0][0], dtype=float))[0]
    if labels.min() == labels.max() and metric in ("auroc", "auprc"):
        raise ValueError(f"{metric} needs both classes among the patients")
    scores = [[np.stack([_validate(labels, p, f"arm {g}.{j}[{i}]")[1]
                         for i, p in enumerate(arm)])
               for j, (_, arm) in enumerate(group)] for g, group in enumerate(groups)]
    weights = [[float(w) for w, _ in group] for group in groups]
    function = _row_metric(metric, threshold)
    order = np.argsort(1 - labels, kind="stable")  # positives first, as the rows expect
    m = int(labels.sum())
    per_seed = [[np.array([function(row[order][None, :], m)[0] for row in arm])
                 for arm in group] for group in scores]
    value = 0.0
    for group_weights, group in zip(weights, per_seed, strict=True):
        for w, arm in zip(group_weights, group, strict=True):
            value += w * arm.mean()
    rng = np.random.default_rng([seed, 1])  # the seed draws; patients use ``seed`` itself
    contrasts = []
    for indices, m in _stratified_blocks(labels, n_resamples, seed):
        rows = indices.shape[0]
        total = 0.0
        for group_weights, group in zip(weights, scores, strict=True):
            seeds = group[0].shape[0]
            draw = rng.integers(0, seeds, size=(rows, seeds))
            for w, arm in zip(group_weights, group, strict=True):
                # metric of every seed's run on each replicate's patients: (seeds, rows)
                on_patients = np.stack([function(row[indices], m) for row in arm])
                total = total + w * _seed_mean(on_patients, draw, inflate)
        contrasts.append(total)
    replicates = np.concatenate(contrasts)
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2 * min((replicates <= 0).mean(), (replicates >= 0).mean()))
    return {"metric": metric, "value": float(value), "low": float(low), "high": float(high),
            "p": max(float(p_value), 1 / replicates.size),
            "per_seed": [arm.tolist() for group in per_seed for arm in group],
            "n_resamples": int(replicates.size)}


def _seed_mean(on_patients: np.ndarray, draw: np.ndarray, inflate: bool) -> np.ndarray:
    """Each replicate's mean over its drawn seeds. ``inflate``: the drawn mean's distance
    from the mean of all seeds is scaled by sqrt(S / (S − 1)), so the seed level's
    bootstrap variance is the unbiased sample variance over S, not (S − 1) / S of it
    (Davison & Hinkley 1997, section 3.8, for few top-level units)."""
    drawn = np.take_along_axis(on_patients.T, draw, axis=1).mean(axis=1)
    seeds = on_patients.shape[0]
    if not inflate or seeds < 2:
        return drawn
    everyone = on_patients.mean(axis=0)
    return everyone + np.sqrt(seeds / (seeds - 1)) * (drawn - everyone)


def yes_rate(p, threshold: float = 0.5, sampled: bool = False) -> float:
    """The share of patients a run says "yes" for (score at or above ``threshold``); with
    ``sampled`` (each score the mean P(yes) of a patient's sampled rationales), the share
    of its sampled answers that say yes: the mean score (exact where each sample's P(yes)
    is 0 or 1, as after a rationale that states its conclusion)."""
    if sampled:
        return expected_yes_rate(p)
    scores = np.asarray(p, dtype=float)
    if scores.size == 0:
        raise ValueError("no scores")
    return float((scores >= threshold).mean())


def expected_yes_rate(p) -> float:
    """The mean P(yes): the share of "yes" a run gives when each answer is drawn from its
    own P(yes)."""
    scores = np.asarray(p, dtype=float)
    if scores.size == 0:
        raise ValueError("no scores")
    return float(scores.mean())


def degenerate(p, low: float = DEGENERATE_LOW, high: float = DEGENERATE_HIGH,
               sampled: bool = False) -> str | None:
    """Why a run's test scores are unfit for comparison, or None: its expected yes-rate
    (mean P(yes); of its sampled answers, with ``sampled``) is above ``high`` or below
    ``low``. The bounds themselves pass (10 of 200 is 5%, not below it, whatever the
    float error of ``1 − 0.95``)."""
    rate = expected_yes_rate(p)
    what = f"in {rate:.0%} of its sampled answers" if sampled \
        else f"{rate:.0%} of the time (mean P(yes) {rate:.3f})"
    if rate > high + TOLERANCE:
        return f"says yes {what}, above {high:.0%}"
    if rate < low - TOLERANCE:
        return f"says yes {what}, below {low:.0%}"
    return None


def balanced_accuracy_at_rate(y, p, rate: float | None = None) -> float:
    """Balanced accuracy when the top ``rate`` share of patients by score is called "yes"
    (default: the share of positives in ``y``). A tie block straddling the cut contributes
    the fraction of it that the cut takes, as a random tie-break would on average."""
    labels, scores = _validate(y, p)
    n = labels.size
    rate = float(labels.mean()) if rate is None else float(rate)
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")
    positives = labels.sum()
    negatives = n - positives
    if positives == 0 or negatives == 0:
        raise ValueError("balanced accuracy needs both classes")
    k = rate * n  # how many are called "yes" (may be fractional: split in expectation)
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], labels[order]
    called = np.zeros(n)
    start = 0
    while start < n and k > 0:
        end = start
        while end + 1 < n and ordered[end + 1] == ordered[start]:
            end += 1
        size = end - start + 1
        called[start:end + 1] = min(1.0, k / size)
        k -= size
        start = end + 1
    true_positives = (called * hits).sum()
    true_negatives = ((1 - called) * (1 - hits)).sum()
    return float((true_positives / positives + true_negatives / negatives) / 2)
