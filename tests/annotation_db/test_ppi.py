"""Prediction-powered campaign estimates: valid coverage, narrower with an informative judge,
no worse with a useless one, and a planner that says which."""

import numpy as np
import pytest

from annotation_db import ppi


def campaign(rng, *, judge_noise: float, n: int = 80, big_n: int = 600):
    """Clinicians' mean scores of ``big_n`` rationales (rounded 1-5 around a latent
    quality) and a biased judge reading the same quality with ``judge_noise``; a random
    ``n`` of them rated."""
    latent = rng.normal(3.4, 1.0, big_n)
    y = np.clip(np.rint(latent + rng.normal(0, 0.5, big_n)), 1, 5)
    f = 0.8 * latent + 1.0 + rng.normal(0, judge_noise, big_n)  # biased: PPI must correct it
    order = rng.permutation(big_n)
    return y[order[:n]], f[order[:n]], f[order[n:]]


@pytest.fixture(scope="module")
def truth():
    rng = np.random.default_rng(12345)
    latent = rng.normal(3.4, 1.0, 4_000_000)
    return float(np.clip(np.rint(latent + rng.normal(0, 0.5, latent.size)), 1, 5).mean())


def simulate(truth, judge_noise, campaigns=1000, seed=0):
    rng = np.random.default_rng(seed)
    covered = {"ppi": 0, "classical": 0}
    ratios = []
    for _ in range(campaigns):
        result = ppi.compare(*campaign(rng, judge_noise=judge_noise))
        for name, section in (("ppi", result["prediction_powered"]),
                              ("classical", result["clinicians_only"])):
            covered[name] += section["ci"][0] <= truth <= section["ci"][1]
        ratios.append(result["width_ratio"])
    return covered["ppi"] / campaigns, covered["classical"] / campaigns, float(np.mean(ratios))


def test_the_95_ci_covers_the_truth_in_1000_simulated_campaigns_and_is_narrower(truth):
    coverage, classical_coverage, width_ratio = simulate(truth, judge_noise=0.4)
    assert 0.93 <= coverage <= 0.97
    assert 0.93 <= classical_coverage <= 0.97
    assert width_ratio < 0.8  # an informative judge narrows the interval


def test_a_useless_judge_keeps_coverage_and_costs_next_to_nothing(truth):
    coverage, _, width_ratio = simulate(truth, judge_noise=50.0, campaigns=300, seed=1)
    assert 0.92 <= coverage <= 0.98
    assert 0.97 <= width_ratio <= 1.05  # λ falls to about 0: the clinician-only interval


def test_the_estimator_is_the_papers_formula():
    y, f, fu = np.array([3., 4., 5., 2.]), np.array([3.5, 3.5, 4.5, 2.5]), np.array([4., 2., 3.])
    result = ppi.prediction_powered(y, f, fu, lam=1.0)
    assert result["estimate"] == pytest.approx(3.0 + (y - f).mean())  # mean(fu) + rectifier
    se = np.sqrt(fu.var(ddof=1) / 3 + (y - f).var(ddof=1) / 4)
    assert result["ci"] == pytest.approx([result["estimate"] - 1.959964 * se,
                                          result["estimate"] + 1.959964 * se], rel=1e-5)
    assert ppi.prediction_powered(y, f, fu, lam=0.0)["estimate"] == pytest.approx(y.mean())


def test_the_planner_needs_fewer_ratings_with_an_informative_judge_and_says_when_not():
    rng = np.random.default_rng(4)
    y, f, _ = campaign(rng, judge_noise=0.2, n=200)
    plan = ppi.ratings_for_width(y, f, total_items=2000, target_width=0.2)
    assert plan["with_judge"] < plan["without_judge"]
    assert plan["verdict"].startswith("the judge saves")
    y, f, _ = campaign(rng, judge_noise=50.0, n=200)
    plan = ppi.ratings_for_width(y, f, total_items=2000, target_width=0.2)
    assert plan["verdict"].startswith("the judge saves nothing")
    assert plan["with_judge"] >= 0.95 * plan["without_judge"]


def test_one_unrated_item_leaves_the_clinician_only_answer():
    y, f = np.array([3., 4., 5., 4.]), np.array([3., 4., 4., 4.])
    result = ppi.compare(y, f, np.array([4.0]))
    assert result["prediction_powered"] is None and "only one judged item" in result["note"]
    assert result["clinicians_only"]["estimate"] == pytest.approx(4.0)
