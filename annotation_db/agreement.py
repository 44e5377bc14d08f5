"""Inter-rater agreement: Krippendorff's alpha with a vectorized unit bootstrap, Gwet's AC1/AC2,
pairwise weighted kappa, and annotator-quality figures.

    rationale-audit agreement report --campaign pilot --format html
    rationale-audit agreement report --ratings-csv ratings.csv --format md

Input is long format: one (rater, item, dimension, score) per rating; a rater's missing item
is simply absent. Every statistic that cannot be computed (a single rater, no variation, no
item rated twice) comes back as ``{"computable": False, "reason": ...}`` — never a crash or a
bare NaN.

The point estimate of alpha comes from the ``krippendorff`` package. The bootstrap resamples
*units* (Efron–Tibshirani, as Gwet recommends over KALPHA's pair resampling): each unit's
coincidence matrix is computed once, and a resample's coincidence matrix is a weighted sum
of them, so 1,000 resamples are one matrix product instead of 1,000 package calls.
"""

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from annotation_db.command_config import stable_hash
from annotation_db.rubric import SCALE

LEVELS = ("nominal", "ordinal", "interval")
BANDS = (0.667, 0.800)


@dataclass(frozen=True)
class Rating:
    rater: str
    item: str
    dimension: str
    score: float


def not_computable(reason: str) -> dict:
    return {"computable": False, "reason": reason}


def reliability_matrix(ratings: list[Rating], dimension: str
                       ) -> tuple[np.ndarray, list[str], list[str]]:
    """Raters × items matrix (NaN = not rated) for one dimension."""
    rows = [r for r in ratings if r.dimension == dimension]
    raters = sorted({r.rater for r in rows})
    items = sorted({r.item for r in rows})
    matrix = np.full((len(raters), len(items)), np.nan)
    r_index = {name: i for i, name in enumerate(raters)}
    i_index = {name: i for i, name in enumerate(items)}
    for r in rows:
        matrix[r_index[r.rater], i_index[r.item]] = r.score
    return matrix, raters, items


# --- Krippendorff's alpha ----------------------------------------------------------------

def value_counts(matrix: np.ndarray, domain: list[float]) -> np.ndarray:
    """Units × values: how many raters gave each scale value to each unit."""
    present = ~np.isnan(matrix)
    if not np.isin(matrix[present], domain).all():
        raise ValueError(f"ratings outside the scale {domain}")
    index = np.searchsorted(np.asarray(domain, dtype=float), np.where(present, matrix, domain[0]))
    counts = np.zeros((matrix.shape[1], len(domain)))
    units = np.broadcast_to(np.arange(matrix.shape[1]), matrix.shape)
    np.add.at(counts, (units[present], index[present]), 1)
    return counts


def unit_coincidences(matrix: np.ndarray, domain: list[float]) -> np.ndarray:
    """Per-unit coincidence matrices (units × V × V) of the pairable units (≥ 2 ratings)."""
    counts = value_counts(matrix, domain)
    m = counts.sum(axis=1)
    counts = counts[m >= 2]
    m = m[m >= 2]
    outer = counts[:, :, None] * counts[:, None, :]
    outer[:, np.arange(len(domain)), np.arange(len(domain))] -= counts
    return outer / (m - 1)[:, None, None]


def _delta2(level: str, domain: np.ndarray, marginals: np.ndarray) -> np.ndarray:
    """Squared distances δ²(c, k); for ordinal they depend on the marginals (B × V)."""
    v = len(domain)
    if level == "nominal":
        return np.broadcast_to(1.0 - np.eye(v), (marginals.shape[0], v, v))
    if level == "interval":
        diff = (domain[:, None] - domain[None, :]) ** 2
        return np.broadcast_to(diff, (marginals.shape[0], v, v))
    cum = np.cumsum(marginals, axis=1)  # (B, V)
    c = np.arange(v)
    low, high = np.minimum(c[:, None], c[None, :]), np.maximum(c[:, None], c[None, :])
    between = cum[:, high] - np.where(low > 0, cum[:, np.maximum(low - 1, 0)], 0.0)
    half = (marginals[:, c][:, :, None] + marginals[:, c][:, None, :]) / 2
    return (between - half) ** 2


def alpha_from_coincidences(o: np.ndarray, level: str, domain: list[float]) -> np.ndarray:
    """Alpha for a stack of coincidence matrices (B × V × V); NaN where undefined."""
    marginals = o.sum(axis=2)
    n = marginals.sum(axis=1)
    delta = _delta2(level, np.asarray(domain, dtype=float), marginals)
    observed = (o * delta).sum(axis=(1, 2))
    expected = (marginals[:, :, None] * marginals[:, None, :] * delta).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, 1.0 - (n - 1) * observed / expected, np.nan)


def krippendorff_alpha(matrix: np.ndarray, level: str, domain: list[float], *,
                       replicates: int = 1000, seed: int = 0) -> dict:
    """Alpha (the ``krippendorff`` package), unit-bootstrap CI, P(α < .667) and P(α < .800)."""
    import krippendorff

    n_raters = int(np.sum(np.any(~np.isnan(matrix), axis=1)))
    pairable = int(np.sum(np.sum(~np.isnan(matrix), axis=0) >= 2))
    base = {"level": level, "raters": n_raters, "units_pairable": pairable}
    if n_raters < 2:
        return {**base, **not_computable("fewer than two raters")}
    if pairable == 0:
        return {**base, **not_computable("no item was rated by two raters")}
    values = matrix[~np.isnan(matrix)]
    if np.unique(values).size < 2:
        return {**base, **not_computable(
            f"no variation: every rating is {values[0]:g}, so expected disagreement is zero")}
    try:
        estimate = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level,
                                            value_domain=domain))
    except ValueError as exc:
        return {**base, **not_computable(str(exc))}
    if math.isnan(estimate):
        return {**base, **not_computable("undefined (no variation among pairable values)")}
    units = unit_coincidences(matrix, domain)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(units), np.full(len(units), 1 / len(units)), size=replicates)
    stacked = (weights @ units.reshape(len(units), -1)).reshape(replicates, len(domain),
                                                                 len(domain))
    boot = alpha_from_coincidences(stacked, level, domain)
    kept = boot[~np.isnan(boot)]
    result = {**base, "computable": True, "alpha": estimate, "replicates": replicates,
              "replicates_dropped": int(replicates - kept.size), "seed": seed}
    if kept.size:
        result.update(ci95=[float(np.quantile(kept, 0.025)), float(np.quantile(kept, 0.975))],
                      p_below_0667=float(np.mean(kept < BANDS[0])),
                      p_below_0800=float(np.mean(kept < BANDS[1])))
    result["verdict"] = verdict(estimate)
    return result


def verdict(alpha: float) -> str:
    if alpha >= BANDS[1]:
        return "reliable (α ≥ 0.800)"
    if alpha >= BANDS[0]:
        return "tentative conclusions only (0.667 ≤ α < 0.800)"
    return "unreliable (α < 0.667)"


# --- Gwet's AC1 / AC2 -------------------------------------------------------------------------

def gwet_weights(kind: str, domain: list[float]) -> np.ndarray:
    q = len(domain)
    k = np.arange(q)
    diff = np.abs(k[:, None] - k[None, :])
    if kind == "identity":
        return np.eye(q)
    if kind == "quadratic":
        values = np.asarray(domain, dtype=float)
        d = (values[:, None] - values[None, :]) ** 2
        return 1 - d / d.max()
    if kind == "linear":
        values = np.asarray(domain, dtype=float)
        d = np.abs(values[:, None] - values[None, :])
        return 1 - d / d.max()
    if kind == "ordinal":
        m = (diff + 1) * diff / 2  # C(|k-l|+1, 2)
        return 1 - m / m.max()
    raise ValueError(f"unknown weights {kind!r}")


def gwet_ac(matrix: np.ndarray, domain: list[float], weights: str = "identity") -> dict:
    """Gwet's AC1 (identity weights) or AC2 (other weights), multiple raters, missing allowed."""
    w = gwet_weights(weights, domain)
    q = len(domain)
    counts = value_counts(matrix, domain)
    r = counts.sum(axis=1)
    rated = counts[r >= 1]
    r1 = r[r >= 1]
    two = r >= 2
    if not two.any():
        return not_computable("no item was rated by two raters")
    weighted = counts[two] @ w.T
    pa = float(np.mean(np.sum(counts[two] * (weighted - 1), axis=1) / (r[two] * (r[two] - 1))))
    pi = np.mean(rated / r1[:, None], axis=0)
    pe = float(w.sum() / (q * (q - 1)) * np.sum(pi * (1 - pi)))
    if pe >= 1:
        return not_computable("chance agreement is 1")
    name = "AC1" if weights == "identity" else f"AC2 ({weights} weights)"
    return {"computable": True, "coefficient": name, "value": (pa - pe) / (1 - pe),
            "pa": pa, "pe": pe, "units": int(two.sum())}


# --- Pairwise and per-rater figures ------------------------------------------------------

def pairwise_kappa(matrix: np.ndarray, raters: list[str], domain: list[float],
                   weights: str | None = "quadratic") -> list[dict]:
    from sklearn.metrics import cohen_kappa_score

    out = []
    for a in range(len(raters)):
        for b in range(a + 1, len(raters)):
            both = ~np.isnan(matrix[a]) & ~np.isnan(matrix[b])
            row = {"rater_a": raters[a], "rater_b": raters[b], "overlap": int(both.sum())}
            if both.sum() < 2:
                row.update(not_computable("fewer than two items rated by both"))
            else:
                x, y = matrix[a, both], matrix[b, both]
                if np.unique(np.concatenate([x, y])).size < 2:
                    row.update(not_computable("no variation in the shared items"))
                else:
                    kappa = cohen_kappa_score(x, y, labels=domain, weights=weights)
                    row.update(computable=not math.isnan(kappa),
                               kappa=None if math.isnan(kappa) else float(kappa))
                    if math.isnan(kappa):
                        row["reason"] = "undefined for these ratings"
            out.append(row)
    return out


def pair_agreement(matrix: np.ndarray) -> dict:
    """Percent exact and within-one agreement over all pairs of ratings of the same item."""
    exact = within = pairs = 0
    for unit in matrix.T:
        values = unit[~np.isnan(unit)]
        if values.size < 2:
            continue
        diff = np.abs(values[:, None] - values[None, :])[np.triu_indices(values.size, 1)]
        exact += int(np.sum(diff == 0))
        within += int(np.sum(diff <= 1))
        pairs += diff.size
    if not pairs:
        return not_computable("no item was rated by two raters")
    return {"computable": True, "pairs": pairs, "percent_exact": exact / pairs,
            "percent_within_one": within / pairs}


def coincidence_matrix(matrix: np.ndarray, domain: list[float]) -> list[list[float]]:
    units = unit_coincidences(matrix, domain)
    return units.sum(axis=0).round(4).tolist() if len(units) else []


def rater_profiles(matrix: np.ndarray, raters: list[str], domain: list[float]) -> list[dict]:
    """Rating distribution, mean and leniency (mean deviation from the other raters' mean)."""
    out = []
    for a, name in enumerate(raters):
        scores = matrix[a][~np.isnan(matrix[a])]
        others = np.delete(matrix, a, axis=0)
        deviations = []
        for unit in np.flatnonzero(~np.isnan(matrix[a])):
            rest = others[:, unit][~np.isnan(others[:, unit])]
            if rest.size:
                deviations.append(matrix[a, unit] - rest.mean())
        out.append({
            "rater": name, "ratings": int(scores.size),
            "distribution": {f"{v:g}": int(np.sum(scores == v)) for v in domain},
            "mean": float(scores.mean()) if scores.size else None,
            "leniency": float(np.mean(deviations)) if deviations else None,
        })
    return out


def most_disagreed(matrix: np.ndarray, items: list[str], top: int = 20) -> list[dict]:
    rows = []
    for unit, item in enumerate(items):
        values = matrix[:, unit][~np.isnan(matrix[:, unit])]
        if values.size >= 2:
            rows.append({"item": item, "ratings": values.tolist(),
                         "range": float(values.max() - values.min()),
                         "sd": float(values.std(ddof=1))})
    rows.sort(key=lambda r: (-r["range"], -r["sd"], r["item"]))
    return [r for r in rows[:top] if r["range"] > 0]


def gold_accuracy(ratings: list[Rating], gold_items: set[str], *, caught_at_or_below: float = 2,
                  flag_dimensions: tuple[str, ...] = ()) -> list[dict]:
    """Per rater: share of gold (deliberately flawed) items they caught — a score at or below
    ``caught_at_or_below`` on any scale dimension, or any flag raised."""
    by_rater: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in ratings:
        if r.item not in gold_items:
            continue
        caught = (r.score >= 1) if r.dimension in flag_dimensions else (
            r.score <= caught_at_or_below)
        by_rater[r.rater][r.item] = by_rater[r.rater].get(r.item, False) or bool(caught)
    return [{"rater": rater, "gold_rated": len(items), "caught": sum(items.values()),
             "accuracy": sum(items.values()) / len(items)}
            for rater, items in sorted(by_rater.items())]


# --- The report ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DimensionSpec:
    name: str
    level: str = "ordinal"
    domain: tuple[float, ...] = SCALE


def snapshot_hash(ratings: list[Rating]) -> str:
    canonical = sorted((r.rater, r.item, r.dimension, float(r.score)) for r in ratings)
    return stable_hash(canonical)


def dimension_report(ratings: list[Rating], spec: DimensionSpec, *, replicates: int,
                     seed: int) -> dict:
    matrix, raters, items = reliability_matrix(ratings, spec.name)
    domain = list(spec.domain)
    out_of_domain = sorted({float(v) for v in matrix[~np.isnan(matrix)]} - set(domain))
    if out_of_domain:
        return {"dimension": spec.name, **not_computable(
            f"scores outside the scale {domain}: {out_of_domain[:5]}")}
    section = {
        "dimension": spec.name, "level": spec.level, "scale": domain,
        "raters": len(raters), "items": len(items),
        "ratings": int(np.sum(~np.isnan(matrix))),
        "items_with_two_or_more": int(np.sum(np.sum(~np.isnan(matrix), axis=0) >= 2)),
        "alpha": krippendorff_alpha(matrix, spec.level, domain, replicates=replicates,
                                    seed=seed),
        "agreement": pair_agreement(matrix),
        "ac1": gwet_ac(matrix, domain, "identity"),
        "coincidence_matrix": coincidence_matrix(matrix, domain),
        "raters_profile": rater_profiles(matrix, raters, domain),
        "most_disagreed": most_disagreed(matrix, items),
    }
    if spec.level != "nominal":
        section["alpha_interval"] = krippendorff_alpha(matrix, "interval", domain,
                                                       replicates=replicates, seed=seed)
        section["ac2"] = gwet_ac(matrix, domain, "ordinal")
        section["pairwise_kappa"] = pairwise_kappa(matrix, raters, domain, "quadratic")
    else:
        section["pairwise_kappa"] = pairwise_kappa(matrix, raters, domain, None)
    return section


def agreement_report(ratings: list[Rating], dimensions: list[DimensionSpec], *,
                     replicates: int = 1000, seed: int = 0, gold_items: set[str] | None = None,
                     design: dict | None = None) -> dict:
    from annotation_db.provenance import code_version, library_versions

    flags = tuple(d.name for d in dimensions if d.level == "nominal")
    return {
        "design": {"raters": len({r.rater for r in ratings}),
                   "items": len({r.item for r in ratings}),
                   "ratings": len(ratings), **(design or {})},
        "dimensions": [dimension_report(ratings, spec, replicates=replicates, seed=seed)
                       for spec in dimensions],
        "gold_accuracy": (gold_accuracy(ratings, gold_items, flag_dimensions=flags)
                          if gold_items else []),
        "reproducibility": {"data_sha256": snapshot_hash(ratings), "bootstrap_seed": seed,
                            "bootstrap_replicates": replicates, "code_version": code_version(),
                            "libraries": library_versions(("krippendorff", "numpy",
                                                           "scikit-learn", "rationale-audit"))},
    }
