"""How many more items × raters a campaign needs for α's 95% CI to be narrow enough.

    rationale-audit campaign plan pilot --target-ci-width 0.1
    rationale-audit campaign plan new --target-ci-width 0.1 --expected-alpha 0.7 \\
        --distribution 0.05,0.1,0.2,0.35,0.3

**The model.** Ratings are simulated from a latent-class model fitted to the pilot's
coincidence matrix O: an item has a latent value c drawn from the pilot's value
distribution p, and each of its m ratings is drawn from Q[c]. Q is the square root of the
pilot's transition matrix T = diag(n)⁻¹ O, so any two ratings of one item reproduce O
exactly (when that square root is a stochastic matrix; negative eigenvalues or entries, from
a pilot that agrees less than chance in places, are clipped and the rows renormalised). For a
new campaign a stated α and value distribution give O = (1 − α)·p pᵀ + α·diag(p), whose α is
the stated one under every metric, and Q = (1 − √α)·1 pᵀ + √α·I.

**The search.** For each number of raters per item, datasets of several sizes are simulated
and the width of α's unit-bootstrap 95% CI (the same bootstrap as the agreement report) is
measured; widths fall as 1/√n, so the size for the target is read off that fit and then
checked by a direct simulation at that size (its median width and the share of datasets
within the target are reported). Krippendorff's closed-form minimum (units for α to exceed
α_min at a one-sided significance level, worst case with the rarest value's probability p_c;
Krippendorff 2019, after Bloch & Kraemer 1989) is given beside it as a floor.

**Hours** are ratings × the campaign's measured mean seconds on task (clinicians' own, not
simulated raters'), or a stated figure when none was measured.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from annotation_db.agreement import (
    Rating,
    alpha_from_coincidences,
    reliability_matrix,
    unit_coincidences,
)
from annotation_db.errors import UserError
from annotation_db.rubric import SCALE_DIMENSIONS

DOMAIN = [1.0, 2.0, 3.0, 4.0, 5.0]
PILOT_MIN_ITEMS = 10
GRID = (25, 50, 100, 200, 400, 800)


class PlanError(UserError):
    """A plan that cannot be made from what was given; the message says what is missing."""


@dataclass(frozen=True)
class RatingModel:
    """The latent-class model of one dimension: value distribution p and rating rows Q."""

    p: np.ndarray
    q: np.ndarray
    source: str

    def simulate_coincidences(self, rng: np.random.Generator, n: int, m: int) -> np.ndarray:
        """Units × V × V coincidence matrices of n simulated items with m ratings each."""
        latent = rng.choice(len(self.p), size=n, p=self.p)
        counts = rng.multinomial(m, self.q[latent]).astype(float)
        outer = counts[:, :, None] * counts[:, None, :]
        v = len(self.p)
        outer[:, np.arange(v), np.arange(v)] -= counts
        return outer / (m - 1)


def model_from_coincidences(o: np.ndarray, source: str) -> RatingModel:
    n = o.sum(axis=1)
    if np.any(n <= 0):  # a value nobody used: keep it with a tiny mass so Q stays defined
        o = o + np.eye(len(n)) * 1e-9
        n = o.sum(axis=1)
    scale = 1 / np.sqrt(n)
    s = o * scale[:, None] * scale[None, :]  # D^-1/2 O D^-1/2, symmetric
    values, vectors = np.linalg.eigh(s)
    root = vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T
    q = root * scale[:, None] / scale[None, :]  # D^-1/2 S^1/2 D^1/2
    q = np.clip(q, 0, None)
    q = q / q.sum(axis=1, keepdims=True)
    return RatingModel(p=n / n.sum(), q=q, source=source)


def model_from_alpha(alpha: float, distribution: list[float]) -> RatingModel:
    p = np.asarray(distribution, dtype=float)
    if len(p) != len(DOMAIN) or np.any(p < 0) or not math.isclose(p.sum(), 1, abs_tol=1e-6):
        raise PlanError(f"--distribution needs {len(DOMAIN)} shares of scores 1–5 that sum to 1")
    if not 0 < alpha < 1:
        raise PlanError("--expected-alpha must lie between 0 and 1")
    mu = math.sqrt(alpha)
    q = (1 - mu) * np.tile(p, (len(p), 1)) + mu * np.eye(len(p))
    shares = ", ".join(f"{x:g}" for x in p)
    return RatingModel(p=p / p.sum(), q=q, source=f"stated α = {alpha}, distribution {shares}")


def ci_widths(model: RatingModel, n: int, m: int, *, datasets: int, replicates: int,
              rng: np.random.Generator, level: str = "ordinal") -> np.ndarray:
    """Width of α's 95% unit-bootstrap CI in each of ``datasets`` simulated campaigns."""
    v = len(model.p)
    widths = []
    for _ in range(datasets):
        units = model.simulate_coincidences(rng, n, m).reshape(n, v * v)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=replicates)
        boot = alpha_from_coincidences((weights @ units).reshape(replicates, v, v), level,
                                       DOMAIN[:v])
        boot = boot[~np.isnan(boot)]
        widths.append(np.quantile(boot, 0.975) - np.quantile(boot, 0.025)
                      if boot.size else np.nan)
    return np.asarray(widths)


def closed_form_minimum(alpha_min: float, p_c: float, *, coders: int = 2,
                        significance: float = 0.05) -> dict:
    """Krippendorff's minimum sample for α to exceed ``alpha_min`` at a one-sided
    ``significance``, the rarest value having probability p_c: values (coders × units)
    and the units they make."""
    z = stats.norm.ppf(1 - significance)
    per_coder = z * z * ((1 + alpha_min) * (3 - alpha_min)
                         / (4 * (1 - alpha_min) * p_c * (1 - p_c)) - alpha_min)
    values = math.ceil(coders * per_coder)
    return {"values": values, "units": math.ceil(values / coders)}


def size_for_width(model: RatingModel, m: int, target: float, *, datasets: int = 30,
                   replicates: int = 200, seed: int = 0) -> dict:
    """Items needed at m raters per item for a median 95% CI width ≤ target."""
    rng = np.random.default_rng(seed)
    grid = []
    for n in GRID:
        width = float(np.nanmedian(ci_widths(model, n, m, datasets=datasets,
                                             replicates=replicates, rng=rng)))
        if math.isnan(width):
            raise PlanError(f"{model.source}: the simulated ratings never vary, so α is "
                            "undefined; a plan needs a pilot (or distribution) with more "
                            "than one score")
        grid.append({"items": n, "median_width": width})
    constant = float(np.median([g["median_width"] * math.sqrt(g["items"]) for g in grid]))
    n = max(10, math.ceil((constant / target) ** 2))
    for attempt in range(4):  # check by direct simulation; correct up to three times
        widths = ci_widths(model, n, m, datasets=datasets, replicates=replicates, rng=rng)
        median = float(np.nanmedian(widths))
        if median <= target * 1.02 or attempt == 3:
            break  # the size returned is always the size checked
        n = math.ceil(n * (median / target) ** 2)
    return {"raters_per_item": m, "items": n, "ratings": n * m, "grid": grid,
            "checked_median_width": median,
            "share_within_target": float(np.mean(widths <= target))}


def pilot_models(ratings: list[Rating]) -> dict[str, RatingModel]:
    models = {}
    for name in SCALE_DIMENSIONS:
        matrix, _, _ = reliability_matrix(ratings, name)
        units = unit_coincidences(matrix, DOMAIN) if matrix.size else np.zeros((0, 5, 5))
        if len(units) < PILOT_MIN_ITEMS:
            raise PlanError(
                f"{name}: the pilot has {len(units)} items rated twice or more; a plan from "
                f"ratings needs at least {PILOT_MIN_ITEMS} (or state --expected-alpha and "
                "--distribution)")
        models[name] = model_from_coincidences(units.sum(axis=0),
                                               f"pilot: {len(units)} items rated twice or more")
    return models


def plan(models: dict[str, RatingModel], *, target_width: float, raters: list[int],
         items_so_far: dict[str, int] | None = None, seconds_per_rating: float | None = None,
         seconds_source: str = "stated", datasets: int = 30, replicates: int = 200,
         seed: int = 0) -> dict:
    """Per number of raters per item: items, ratings and hours to reach ``target_width`` on
    every dimension, with the closed-form floor beside it."""
    if not 0 < target_width < 2:
        raise PlanError("--target-ci-width must lie between 0 and 2 (α's CI width)")
    if any(m < 2 for m in raters):
        raise PlanError("agreement needs at least two raters per item")
    items_so_far = items_so_far or {}
    rows = []
    for m in raters:
        sized: dict[int, dict] = {}  # dimensions sharing one model are simulated once
        per_dim = {name: sized.setdefault(id(model), size_for_width(
            model, m, target_width, datasets=datasets, replicates=replicates, seed=seed))
            if id(model) not in sized else sized[id(model)]
            for name, model in models.items()}
        binding = max(per_dim, key=lambda d: per_dim[d]["items"])
        items = per_dim[binding]["items"]
        done = sum(min(k, m) for k in sorted(items_so_far.values(), reverse=True)[:items])
        more = max(0, items * m - done)
        rows.append({"raters_per_item": m, "items": items, "ratings": items * m,
                     "more_ratings": more, "binding_dimension": binding,
                     "hours_more": (more * seconds_per_rating / 3600
                                    if seconds_per_rating else None),
                     "dimensions": per_dim})
    floors = {}
    for name, model in models.items():
        p_c = float(max(model.p.min(), 1e-3))
        floors[name] = {"p_c": p_c, **{f"alpha_min_{a}": closed_form_minimum(a, p_c)["units"]
                                        for a in (0.667, 0.8)}}
    return {"target_ci_width": target_width, "models": {n: m.source for n, m in models.items()},
            "seconds_per_rating": seconds_per_rating, "seconds_source": seconds_source,
            "items_so_far": len(items_so_far), "ratings_so_far": sum(items_so_far.values()),
            "options": rows, "closed_form_units": floors,
            "simulation": {"datasets": datasets, "bootstrap_replicates": replicates,
                           "seed": seed, "grid": list(GRID)}}


def measured_seconds(session, campaign_id: int) -> float | None:
    """Mean seconds on task of the campaign's clinician (not simulated) ratings."""
    from sqlalchemy import func, select

    from annotation_db.models import Annotation, Assignment

    return session.execute(
        select(func.avg(Annotation.seconds_on_task))
        .join(Assignment, Assignment.id == Annotation.assignment_id)
        .where(Assignment.campaign_id == campaign_id, Annotation.simulated.is_(False),
               Annotation.seconds_on_task.is_not(None))).scalar()


def campaign_plan(session, campaign_name: str | None, *, target_width: float, raters: list[int],
                  expected_alpha: float | None = None, distribution: list[float] | None = None,
                  seconds_per_rating: float | None = None, include_simulated: bool = False,
                  datasets: int = 30, replicates: int = 200, seed: int = 0) -> dict:
    """A plan from a campaign's ratings so far, or from a stated α and distribution."""
    from annotation_db.campaigns import get_campaign
    from annotation_db.ratings import load_campaign_ratings

    items_so_far: dict[str, int] = {}
    measured = None
    if campaign_name is not None:
        campaign = get_campaign(session, campaign_name)
        ratings, _, _ = load_campaign_ratings(session, campaign_name,
                                              include_simulated=include_simulated)
        for r in ratings:
            if r.dimension == SCALE_DIMENSIONS[0]:
                items_so_far[r.item] = items_so_far.get(r.item, 0) + 1
        measured = measured_seconds(session, campaign.id)
    if expected_alpha is not None or distribution is not None:
        if expected_alpha is None or distribution is None:
            raise PlanError("a stated plan needs both --expected-alpha and --distribution")
        stated = model_from_alpha(expected_alpha, distribution)
        models = dict.fromkeys(SCALE_DIMENSIONS, stated)
    elif campaign_name is None:
        raise PlanError("name a campaign with ratings, or state --expected-alpha and "
                        "--distribution")
    else:
        models = pilot_models(ratings)
    if seconds_per_rating is not None:
        seconds, source = seconds_per_rating, "stated"
    elif measured:
        seconds, source = float(measured), "measured in this campaign"
    else:
        seconds, source = None, "none measured"
    return plan(models, target_width=target_width, raters=raters, items_so_far=items_so_far,
                seconds_per_rating=seconds, seconds_source=source, datasets=datasets,
                replicates=replicates, seed=seed)
