"""Disagreement-driven assignment: the next rating goes where it is most informative.

    rationale-audit campaign create pilot --run 1 --annotators ann,bob,cat --k 2 \\
        --assignment adaptive --max-ratings 4 --calibration 10

Under ``assignment: adaptive`` only the calibration batch is assigned at creation (to
everyone, first, as in a balanced campaign). After it, each time a rater asks for an item:

1. **every item first reaches k**: an item with fewer than ``k`` ratings given or pending
   comes first, the least-rated first (ties broken by the widest prior belief: the judge's
   score when ``judge_run`` is set, else at random);
2. then **extra ratings go to the most uncertain approval decision**: among items below
   the cap ``max_ratings`` with no rating pending, the one whose decision is most likely to
   be wrong, as long as that probability exceeds ``min_uncertainty``;
3. otherwise the rater's queue is empty.

**The belief.** An item's true score on each dimension has a normal prior (the panel's
mean and between-item spread, or the judge's score with the spread of the panel around the
judge) and its ratings are that score plus noise with the panel's pooled within-item SD.
A rating is read as the rounded value of a latent score, so an item is approvable when
both latent scores reach 3.5, the point that rounds to the approval threshold of 4 (the
default export policy's); its uncertainty is the posterior probability that the current
decision is wrong, P(approve) or 1 − P(approve), whichever is smaller.

**The cap holds under concurrency**: each adaptive assignment holds one of the item's
``max_ratings`` slots (a skipped or reclaimed one gives its slot back), and a unique index
on (campaign, item, slot) lets only one of two raters who take the same slot at once have
it; the other picks again.
"""

import math
import random
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from annotation_db.models import (
    Annotation,
    Assignment,
    Campaign,
    CampaignItem,
    JudgeRating,
    User,
    utcnow,
)
from annotation_db.revisions import newest_only
from annotation_db.rubric import SCALE_DIMENSIONS

APPROVE_AT = 4.0
DOUBT_TIE = 0.05  # escalation: judge doubts this close count as equal


class SlotsBusy(RuntimeError):
    """Every pick lost its slot to another rater (campaigns turns it into a CampaignError)."""

DEFAULTS = {"noise_sd": 0.8, "prior_mean": 3.5, "prior_sd": 1.0}


@dataclass(frozen=True)
class BeliefModel:
    """The panel's noise and prior, estimated from the ratings so far."""

    noise_sd: float
    prior_mean: float
    prior_sd: float
    approve_at: float = APPROVE_AT

    @classmethod
    def from_ratings(cls, ratings: dict[int, list[tuple[int, int]]],
                     approve_at: float = APPROVE_AT) -> "BeliefModel":
        """Pooled within-item SD and between-item spread of item means (both dimensions)."""
        within, means = [], []
        for scores in ratings.values():
            arr = np.asarray(scores, dtype=float)
            means.extend(arr.mean(axis=0).tolist())
            if len(arr) >= 2:
                within.extend((arr - arr.mean(axis=0)).ravel().tolist())
        n_multi = sum(len(s) >= 2 for s in ratings.values())
        noise = (math.sqrt(sum(d * d for d in within) / max(1, len(within) - 2 * n_multi))
                 if n_multi >= 5 else DEFAULTS["noise_sd"])
        if len(means) >= 10:
            spread = float(np.std(means, ddof=1))
            prior_sd = math.sqrt(max(spread ** 2 - noise ** 2 / 2, 0.25))
            prior_mean = float(np.mean(means))
        else:
            prior_sd, prior_mean = DEFAULTS["prior_sd"], DEFAULTS["prior_mean"]
        return cls(max(noise, 0.3), prior_mean, prior_sd, approve_at)

    def p_approve(self, scores: list[tuple[int, int]], prior_mean: float | None = None,
                  prior_sd: float | None = None) -> float:
        """Posterior probability that both true scores reach the threshold."""
        m0 = self.prior_mean if prior_mean is None else prior_mean
        s0 = self.prior_sd if prior_sd is None else prior_sd
        p = 1.0
        for dim in range(len(SCALE_DIMENSIONS)):
            values = [s[dim] for s in scores]
            precision = 1 / s0 ** 2 + len(values) / self.noise_sd ** 2
            mean = (m0 / s0 ** 2 + sum(values) / self.noise_sd ** 2) / precision
            z = (mean - (self.approve_at - 0.5)) / math.sqrt(1 / precision)
            p *= 0.5 * (1 + math.erf(z / math.sqrt(2)))
        return p

    def uncertainty(self, scores, prior_mean=None, prior_sd=None) -> float:
        p = self.p_approve(scores, prior_mean, prior_sd)
        return min(p, 1 - p)


@dataclass(frozen=True)
class Settings:
    k: int
    max_ratings: int
    min_uncertainty: float
    approve_at: float
    judge_run: int | None
    escalate: bool = False  # items the judge doubts most reach k first (escalation)

    @classmethod
    def of(cls, campaign: Campaign) -> "Settings":
        s = campaign.settings or {}
        return cls(k=campaign.ratings_per_item, max_ratings=s.get("max_ratings",
                                                                  campaign.ratings_per_item + 2),
                   min_uncertainty=s.get("min_uncertainty", 0.05),
                   approve_at=s.get("approve_at", APPROVE_AT), judge_run=s.get("judge_run"),
                   escalate=s.get("assignment") == "escalation")


PICKED_AS_RATERS_ASK = ("adaptive", "escalation")


def is_adaptive(campaign: Campaign) -> bool:
    """Whether items are handed out as raters ask (adaptive or escalation order)."""
    return (campaign.settings or {}).get("assignment") in PICKED_AS_RATERS_ASK


def choose(candidates: list[int], *, submitted: dict[int, list[tuple[int, int]]],
           pending: dict[int, int], settings: Settings, model: BeliefModel,
           priors: dict[int, float] | None = None, prior_sd: float | None = None,
           doubts: dict[int, float] | None = None, rng: random.Random) -> int | None:
    """The item whose next rating is most informative (see the module doc); None if none.

    ``doubts`` (escalation): the judge's doubt per item; below k, the most doubted items
    come first (within :data:`DOUBT_TIE` of the highest; an item with no doubt figure
    counts as a coin flip, 0.5)."""
    priors = priors or {}

    def active(item: int) -> int:
        return len(submitted.get(item, [])) + pending.get(item, 0)

    below_k = [i for i in candidates if active(i) < settings.k]
    if below_k and doubts is not None:
        # items within DOUBT_TIE of the highest doubt count as equally doubted: the less
        # rated first, then at random, so raters asking at once spread over them
        top = max(doubts.get(i, 0.5) for i in below_k)
        tier = [i for i in below_k if doubts.get(i, 0.5) >= top - DOUBT_TIE]
        return min(tier, key=lambda i: (active(i), rng.random()))
    if below_k:
        least = min(active(i) for i in below_k)
        tied = [i for i in below_k if active(i) == least]
        if priors:
            return max(tied, key=lambda i: (model.uncertainty([], priors.get(i), prior_sd),
                                            rng.random()))
        return rng.choice(tied)
    extras = [i for i in candidates if active(i) < settings.max_ratings and not pending.get(i)]
    scored = [(model.uncertainty(submitted.get(i, []), priors.get(i),
                                 prior_sd if i in priors else None), rng.random(), i)
              for i in extras]
    scored = [s for s in scored if s[0] > settings.min_uncertainty]
    return max(scored)[2] if scored else None


def _state(session: Session, campaign: Campaign):
    submitted: dict[int, list[tuple[int, int]]] = {}
    for rationale_id, acc, faith in session.execute(
            newest_only(select(Assignment.rationale_id, Annotation.accuracy,
                               Annotation.faithfulness)
                        .join(Annotation, Annotation.assignment_id == Assignment.id))
            .where(Assignment.campaign_id == campaign.id, Assignment.status == "submitted")):
        submitted.setdefault(rationale_id, []).append((acc, faith))
    pending = dict(session.execute(
        select(Assignment.rationale_id, func.count()).where(
            Assignment.campaign_id == campaign.id, Assignment.status == "assigned")
        .group_by(Assignment.rationale_id)).all())
    return submitted, pending


def _judge_priors(session: Session, run_id: int, submitted) -> tuple[dict[int, float], float]:
    rows = session.execute(select(JudgeRating).where(JudgeRating.judge_run_id == run_id)).scalars()
    priors = {}
    for row in rows:
        values = [v for v in (row.expected_accuracy, row.expected_faithfulness) if v is not None]
        priors[row.rationale_id] = (float(np.mean(values)) if values
                                    else (row.accuracy + row.faithfulness) / 2)
    residuals = [np.mean(s) - priors[i] for i, s in submitted.items() if i in priors]
    spread = float(np.std(residuals, ddof=1)) if len(residuals) >= 10 else DEFAULTS["prior_sd"]
    return priors, max(spread, 0.3)


def _judge_doubts(session: Session, settings: Settings) -> dict[int, float]:
    from annotation_db.escalation import doubt

    rows = session.execute(select(JudgeRating).where(
        JudgeRating.judge_run_id == settings.judge_run)).scalars()
    return {row.rationale_id: doubt(row, round(settings.approve_at)) for row in rows}


def next_adaptive(session: Session, campaign: Campaign, user: User) -> Assignment | None:
    """Hand the rater the most informative item they have not had (a new assignment)."""
    settings = Settings.of(campaign)
    rng = random.Random(f"{campaign.id}:{user.id}:{utcnow().timestamp()}")
    for _ in range(20):  # another rater may take the slot first: pick again
        submitted, pending = _state(session, campaign)
        had = set(session.execute(select(Assignment.rationale_id).where(
            Assignment.campaign_id == campaign.id, Assignment.user_id == user.id)).scalars())
        items = session.execute(select(CampaignItem.rationale_id).where(
            CampaignItem.campaign_id == campaign.id, CampaignItem.is_calibration.is_(False))
        ).scalars().all()
        candidates = [i for i in items if i not in had]
        model = BeliefModel.from_ratings(submitted, settings.approve_at)
        priors, prior_sd = ({}, None)
        if settings.judge_run is not None:
            priors, prior_sd = _judge_priors(session, settings.judge_run, submitted)
        doubts = _judge_doubts(session, settings) if settings.escalate else None
        item = choose(candidates, submitted=submitted, pending=pending, settings=settings,
                      model=model, priors=priors, prior_sd=prior_sd, doubts=doubts, rng=rng)
        if item is None:
            return None
        held = set(session.execute(select(Assignment.slot).where(
            Assignment.campaign_id == campaign.id, Assignment.rationale_id == item,
            Assignment.slot.is_not(None))).scalars())
        free = [n for n in range(1, settings.max_ratings + 1) if n not in held]
        if not free:  # the item filled up since it was chosen
            continue
        slot = free[0]
        position = (session.execute(select(func.max(Assignment.position)).where(
            Assignment.campaign_id == campaign.id, Assignment.user_id == user.id)).scalar()
            or 0) + 1
        assignment = Assignment(campaign_id=campaign.id, rationale_id=item, user_id=user.id,
                                position=position, slot=slot, opened_at=utcnow())
        session.add(assignment)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            continue
        session.refresh(assignment)
        return assignment
    raise SlotsBusy("many raters are asking for items at once; try again in a moment")


# --- Simulation with known true scores ------------------------------------------------------

def _allocation_run(*, items: int, k: int, max_ratings: int, noise_sd: float, seed: int,
                    budget: int) -> tuple[dict[str, np.ndarray], int]:
    rng = np.random.default_rng(seed)
    truth = np.clip(rng.normal(4.0, 0.8, (items, 2)), 1, 5)
    approve = np.all(truth >= APPROVE_AT - 0.5, axis=1)  # a true score that rounds to ≥ 4
    model = BeliefModel(noise_sd, 4.0, 0.8)  # the true parameters, for both orders
    settings = Settings(k=k, max_ratings=max_ratings, min_uncertainty=0.0,
                        approve_at=APPROVE_AT, judge_run=None)
    curves = {}
    for order in ("random", "adaptive"):
        draw = np.random.default_rng(seed + 1)
        pick = random.Random(seed + 2)
        submitted: dict[int, list[tuple[int, int]]] = {}
        correct = np.full(budget, np.nan)
        for step in range(budget):
            if order == "random":
                below = [i for i in range(items) if len(submitted.get(i, [])) < k]
                pool = below or [i for i in range(items)
                                 if len(submitted.get(i, [])) < max_ratings]
                item = pick.choice(pool) if pool else None
            else:
                item = choose(list(range(items)), submitted=submitted, pending={},
                              settings=settings, model=model, rng=pick)
            if item is None:
                break
            score = np.clip(np.rint(truth[item] + draw.normal(0, noise_sd, 2)), 1, 5)
            submitted.setdefault(item, []).append((int(score[0]), int(score[1])))
            decided = np.array([model.p_approve(submitted.get(i, [])) >= 0.5
                                for i in range(items)])
            correct[step] = np.sum(decided == approve)
        curves[order] = correct
    return curves, int(approve.sum())


def simulate_allocation(*, items: int = 200, k: int = 2, max_ratings: int = 5,
                        noise_sd: float = 0.9, replicates: int = 5, seed: int = 0) -> dict:
    """Correct approval decisions after each rating, adaptive order vs random order, averaged
    over ``replicates`` simulated campaigns, and how many ratings each order needs to reach
    what random order reaches with the whole budget (every item at the cap).

    True scores are drawn per item and dimension (normal, mean 4, SD 0.8, clipped to 1–5); a
    rating is the true score plus noise, rounded and clipped. Both orders first bring every
    item to k ratings; random order then gives each further rating to a random item below
    the cap, adaptive order to the most uncertain decision (:func:`choose`). A decision is
    correct when the posterior decision (P(both latent scores ≥ 3.5) ≥ 0.5; an unrated item
    is judged on the prior) matches the true one (both true scores ≥ 3.5).
    """
    budget = items * max_ratings
    runs = [_allocation_run(items=items, k=k, max_ratings=max_ratings, noise_sd=noise_sd,
                            seed=seed + 1000 * r, budget=budget) for r in range(replicates)]
    mean = {order: np.mean([c[order] for c, _ in runs], axis=0) for order in ("random",
                                                                               "adaptive")}

    def ratings_to_reach(curve: np.ndarray, target: float) -> int | None:
        hits = np.flatnonzero(curve >= target - 1e-9)
        return int(hits[0]) + 1 if hits.size else None

    # at each budget of random order past k per item: what it decides correctly, and how
    # many ratings adaptive order needs for as many
    levels = []
    for ratings in range(items * k + items // 2, budget + 1, items // 2):
        target = float(mean["random"][ratings - 1])
        levels.append({"random_ratings": ratings, "correct": target,
                       "adaptive_ratings": ratings_to_reach(mean["adaptive"], target)})

    return {"items": items, "k": k, "max_ratings": max_ratings, "noise_sd": noise_sd,
            "replicates": replicates, "budget": budget,
            "true_approvals": float(np.mean([a for _, a in runs])),
            "correct_at_k": {o: float(mean[o][items * k - 1]) for o in mean},
            "correct_at_budget": {o: float(mean[o][-1]) for o in mean},
            "levels": levels, "curves": {o: mean[o].tolist() for o in mean}}
