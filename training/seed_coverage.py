"""How often the seeds-then-patients interval covers the truth, in simulation.

The design behind the coverage figures the reports print: 200 test patients, each with
its own difficulty shared by every run; two arms whose runs differ from seed to seed as
the cpu scale's did (label-only: AUROC SD about 0.004; a rationale arm: about 0.06), each
run adding its own noise. The true difference is the two arms' expected AUROC over
seeds, so an interval that counts training variance should cover it 95% of the time.

    python -m training.seed_coverage            # 2,000 trials per row (about 10 min)
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from training.seed_level import hierarchical_difference

N, NOISE_SHARED, NOISE_RUN = 200, 1.0, 0.7
SIGNAL_A, SPREAD_A, SIGNAL_B, SPREAD_B = 1.2, 0.02, 0.9, 0.28


def expected_auroc(signal: float, spread: float) -> float:
    """E over seeds of the AUROC of ``(signal + u) * y + noise``, u ~ N(0, spread²)."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    scale = np.sqrt(2 * (NOISE_SHARED ** 2 + NOISE_RUN ** 2))
    return float((norm.cdf((signal + spread * x) / scale) * w).sum() / w.sum())


def runs(rng, y, shared, signal: float, spread: float, seeds: int) -> list[np.ndarray]:
    """One arm's scores for ``seeds`` runs: a seed effect on the signal, then run noise."""
    effects = rng.normal(size=seeds) * spread
    return [(signal + e) * y + shared + rng.normal(size=y.size) * NOISE_RUN for e in effects]


def coverage(seeds: int, spread_scale: float = 1.0, trials: int = 400,
             n_resamples: int = 400, seed: int = 123) -> float:
    """The share of ``trials`` whose 95% interval covers the true difference, with the
    rationale arm's seed spread scaled by ``spread_scale``."""
    spread_b = SPREAD_B * spread_scale
    truth = expected_auroc(SIGNAL_A, SPREAD_A) - expected_auroc(SIGNAL_B, spread_b)
    rng = np.random.default_rng(seed)
    covered = 0
    for i in range(trials):
        y = (rng.random(N) < 0.5).astype(int)
        shared = rng.normal(size=N) * NOISE_SHARED  # the patient's own difficulty
        a = runs(rng, y, shared, SIGNAL_A, SPREAD_A, seeds)
        b = runs(rng, y, shared, SIGNAL_B, spread_b, seeds)
        result = hierarchical_difference(y, a, b, n_resamples=n_resamples, seed=i)
        covered += result["low"] <= truth <= result["high"]
    return covered / trials


if __name__ == "__main__":
    import sys

    for seeds in (3, 2):
        for scale in (1.0, 2.0):
            sys.stdout.write(f"{seeds} seeds, spread ×{scale:g}: "
                             f"{coverage(seeds, scale, 2000):.1%}\n")
