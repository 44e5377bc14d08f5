"""Agreement statistics: published values, reference implementations, invariances, coverage."""

import math

import krippendorff
import numpy as np
import pandas as pd
import pytest

from annotation_db.agreement import (
    DimensionSpec,
    Rating,
    agreement_report,
    alpha_from_coincidences,
    gold_accuracy,
    gwet_ac,
    krippendorff_alpha,
    most_disagreed,
    pair_agreement,
    unit_coincidences,
)

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers × 12 units.
KRIPPENDORFF_EXAMPLE = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
])
DOMAIN = [1, 2, 3, 4, 5]


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815),
                                              ("interval", 0.849)])
def test_krippendorffs_published_example(level, published):
    result = krippendorff_alpha(KRIPPENDORFF_EXAMPLE, level, DOMAIN, replicates=200)
    assert result["computable"]
    assert round(result["alpha"], 3) == published
    units = unit_coincidences(KRIPPENDORFF_EXAMPLE, DOMAIN)
    ours = alpha_from_coincidences(units.sum(axis=0)[None], level, DOMAIN)[0]
    assert ours == pytest.approx(result["alpha"], abs=1e-12), "bootstrap kernel = package"


def _random_ratings(rng, raters=5, units=60, missing=0.2, noise=0.8):
    truth = rng.integers(1, 6, size=units)
    matrix = np.clip(np.round(truth + rng.normal(0, noise, size=(raters, units))), 1, 5)
    matrix[rng.random(matrix.shape) < missing] = np.nan
    return matrix


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_vectorized_alpha_equals_the_package_on_random_data(seed, level):
    matrix = _random_ratings(np.random.default_rng(seed))
    units = unit_coincidences(matrix, DOMAIN)
    ours = alpha_from_coincidences(units.sum(axis=0)[None], level, DOMAIN)[0]
    theirs = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level,
                                value_domain=DOMAIN)
    assert ours == pytest.approx(theirs, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weights", ["identity", "ordinal", "quadratic", "linear"])
def test_gwet_ac_matches_irrcac(seed, weights):
    from irrCAC.raw import CAC

    matrix = _random_ratings(np.random.default_rng(seed), raters=4, units=40)
    frame = pd.DataFrame(matrix.T)
    expected = CAC(frame, weights=weights, categories=DOMAIN).gwet()["est"]["coefficient_value"]
    assert gwet_ac(matrix, DOMAIN, weights)["value"] == pytest.approx(expected, abs=1e-4)


def test_alpha_does_not_depend_on_the_order_of_raters_or_units():
    rng = np.random.default_rng(3)
    matrix = _random_ratings(rng)
    base = krippendorff_alpha(matrix, "ordinal", DOMAIN, replicates=50)["alpha"]
    shuffled = matrix[rng.permutation(matrix.shape[0])][:, rng.permutation(matrix.shape[1])]
    assert krippendorff_alpha(shuffled, "ordinal", DOMAIN, replicates=50)["alpha"] == \
        pytest.approx(base, abs=1e-12)


def test_fleiss_kappa_agrees_with_statsmodels_for_two_category_complete_data():
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, size=80)
    matrix = np.where(rng.random((3, 80)) < 0.85, truth, 1 - truth).astype(float)
    # With complete data and many units, nominal alpha approaches Fleiss' kappa.
    table, _ = aggregate_raters(matrix.T.astype(int))
    alpha = krippendorff_alpha(matrix, "nominal", [0, 1], replicates=10)["alpha"]
    assert alpha == pytest.approx(fleiss_kappa(table), abs=0.01)


@pytest.mark.slow
def test_bootstrap_interval_covers_the_true_alpha_near_the_nominal_rate():
    """Raters = truth + noise; the population alpha is estimated from a huge sample."""
    def sample(rng, units):
        truth = rng.integers(1, 6, size=units)
        return np.clip(np.round(truth + rng.normal(0, 0.9, size=(4, units))), 1, 5)

    population = sample(np.random.default_rng(999), 40_000)
    true_alpha = krippendorff.alpha(reliability_data=population, level_of_measurement="ordinal",
                                    value_domain=DOMAIN)
    covered, trials = 0, 120
    for trial in range(trials):
        matrix = sample(np.random.default_rng(trial), 150)
        ci = krippendorff_alpha(matrix, "ordinal", DOMAIN, replicates=500, seed=trial)["ci95"]
        covered += ci[0] <= true_alpha <= ci[1]
    assert 0.88 <= covered / trials <= 0.99, covered / trials


@pytest.mark.parametrize("matrix, reason", [
    (np.array([[1, 2, 3, 4.0]]), "fewer than two raters"),
    (np.array([[3, 3, 3], [3, 3, 3.0]]), "no variation: every rating is 3"),
    (np.array([[1, NAN], [NAN, 2.0]]), "no item was rated by two raters"),
    (np.full((3, 4), NAN), "fewer than two raters"),
])
def test_degenerate_inputs_are_explained_not_crashing(matrix, reason):
    result = krippendorff_alpha(matrix, "ordinal", DOMAIN)
    assert result["computable"] is False and reason in result["reason"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())


def test_ceiling_paradox_is_visible_in_the_companion_statistics():
    matrix = np.array([[5.0] * 19 + [4.0], [5.0] * 20])
    assert krippendorff_alpha(matrix, "ordinal", DOMAIN)["alpha"] == pytest.approx(0.0, abs=1e-9)
    assert pair_agreement(matrix)["percent_exact"] == pytest.approx(0.95)
    assert gwet_ac(matrix, DOMAIN, "identity")["value"] > 0.9


def test_report_sections_gold_accuracy_and_disagreement_queue():
    rng = np.random.default_rng(1)
    ratings = []
    for rater in ("ann", "bob", "cat"):
        for item in range(30):
            ratings.append(Rating(rater, f"r{item}", "accuracy",
                                  float(np.clip(4 + rng.integers(-1, 2), 1, 5))))
    ratings += [Rating("ann", "gold1", "accuracy", 1.0), Rating("bob", "gold1", "accuracy", 5.0),
                Rating("cat", "gold1", "accuracy", 2.0)]
    report = agreement_report(ratings, [DimensionSpec("accuracy")], replicates=100, seed=7,
                              gold_items={"gold1"})
    section = report["dimensions"][0]
    assert section["alpha"]["computable"] and len(section["alpha"]["ci95"]) == 2
    assert {p["rater_a"] for p in section["pairwise_kappa"]} == {"ann", "bob"}
    assert all(p["overlap"] == 31 for p in section["pairwise_kappa"])
    assert section["most_disagreed"][0]["item"] == "gold1"
    accuracy = {g["rater"]: g["accuracy"] for g in report["gold_accuracy"]}
    assert accuracy == {"ann": 1.0, "bob": 0.0, "cat": 1.0}
    assert len(report["reproducibility"]["data_sha256"]) == 64


def test_most_disagreed_orders_by_range():
    matrix = np.array([[1, 3, 5.0], [5, 3, 4.0]])
    assert [r["item"] for r in most_disagreed(matrix, ["a", "b", "c"])] == ["a", "c"]


def test_gold_accuracy_counts_flags_as_catches():
    ratings = [Rating("ann", "g", "hallucination", 1.0), Rating("bob", "g", "hallucination", 0.0)]
    result = gold_accuracy(ratings, {"g"}, flag_dimensions=("hallucination",))
    assert [r["accuracy"] for r in result] == [1.0, 0.0]
