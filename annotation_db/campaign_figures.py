"""A campaign in pictures, for the Admin screen: progress, agreement as it accumulates,
leniency, gold accuracy, and the judge against the panel.

Every figure is built from the database when asked (no caching): the newest revision of
each submitted rating, in the order the ratings were submitted.
"""

import datetime as dt
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.agreement import Rating, gold_accuracy, krippendorff_alpha, reliability_matrix
from annotation_db.models import (
    Annotation,
    Assignment,
    Campaign,
    CampaignItem,
    JudgeRating,
    JudgeRun,
    Rationale,
    User,
)
from annotation_db.revisions import newest_only
from annotation_db.rubric import SCALE, SCALE_DIMENSIONS

DOMAIN = list(SCALE)
CHECKPOINTS = 8


@dataclass(frozen=True)
class Submitted:
    rater: str
    item: str
    at: dt.datetime
    scores: dict[str, int]
    flags: list[str]


def submissions(session: Session, campaign: Campaign, include_simulated: bool = True
                ) -> list[Submitted]:
    query = (newest_only(select(User.username, Assignment.rationale_id,
                                Assignment.completed_at, Annotation)
                         .join(Assignment, Assignment.user_id == User.id)
                         .join(Annotation, Annotation.assignment_id == Assignment.id))
             .where(Assignment.campaign_id == campaign.id, Assignment.status == "submitted")
             .order_by(Assignment.completed_at, Assignment.id))
    if not include_simulated:
        query = query.where(Annotation.simulated.is_(False))
    return [Submitted(user, str(rationale_id), at or a.created_at,
                      {"accuracy": a.accuracy, "faithfulness": a.faithfulness}, a.flags)
            for user, rationale_id, at, a in session.execute(query)]


def _ratings(rows: list[Submitted]) -> list[Rating]:
    return [Rating(r.rater, r.item, d, float(r.scores[d])) for r in rows for d in SCALE_DIMENSIONS]


def _figure(title: str, width: float = 6.4, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    return fig, ax


def progress_figure(rows: list[Submitted]):
    fig, ax = _figure("Ratings submitted per annotator")
    for rater in sorted({r.rater for r in rows}):
        times = [r.at for r in rows if r.rater == rater]
        ax.step(times, np.arange(1, len(times) + 1), where="post", label=rater)
    ax.set_ylabel("ratings")
    if rows:
        ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    return fig


def alpha_over_time(rows: list[Submitted], replicates: int = 200) -> dict[str, list[dict]]:
    """α with its 95% CI after each of CHECKPOINTS evenly spaced shares of the ratings."""
    out: dict[str, list[dict]] = {d: [] for d in SCALE_DIMENSIONS}
    if not rows:
        return out
    marks = sorted({max(1, round(len(rows) * k / CHECKPOINTS)) for k in range(1, CHECKPOINTS + 1)})
    for mark in marks:
        ratings = _ratings(rows[:mark])
        for d in SCALE_DIMENSIONS:
            matrix, _, _ = reliability_matrix(ratings, d)
            result = krippendorff_alpha(matrix, "ordinal", DOMAIN, replicates=replicates)
            if result.get("computable") and "ci95" in result:
                out[d].append({"ratings": mark, "alpha": result["alpha"],
                               "low": result["ci95"][0], "high": result["ci95"][1]})
    return out


def alpha_figure(rows: list[Submitted]):
    fig, ax = _figure("Krippendorff's α (ordinal) as ratings accumulate, 95% CI")
    for d, points in alpha_over_time(rows).items():
        if points:
            x = [p["ratings"] for p in points]
            ax.plot(x, [p["alpha"] for p in points], marker="o", label=d)
            ax.fill_between(x, [p["low"] for p in points], [p["high"] for p in points], alpha=0.2)
    for band in (0.667, 0.8):
        ax.axhline(band, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("ratings submitted")
    ax.set_ylabel("α")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "α needs items rated twice, with some variation", ha="center",
                va="center", transform=ax.transAxes)
    return fig


def leniency_figure(rows: list[Submitted]):
    """Each rater's share of each score beside the whole panel's, per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    raters = sorted({r.rater for r in rows})
    fig = Figure(figsize=(6.4, 1.2 + 0.35 * (len(raters) + 1) * 2), layout="constrained")
    axes = fig.subplots(len(SCALE_DIMENSIONS), 1, squeeze=False)[:, 0]
    colours = ["#b2182b", "#ef8a62", "#f7f7f7", "#67a9cf", "#2166ac"]
    for ax, d in zip(axes, SCALE_DIMENSIONS, strict=True):
        labels = ["panel", *raters]
        for row, name in enumerate(labels):
            scores = np.array([r.scores[d] for r in rows if name == "panel" or r.rater == name])
            left = 0.0
            for s, colour in zip(DOMAIN, colours, strict=True):
                share = float(np.mean(scores == s)) if scores.size else 0.0
                ax.barh(row, share, left=left, color=colour, edgecolor="grey", linewidth=0.5,
                        label=str(s) if row == 0 else None)
                left += share
            if scores.size and name != "panel":
                ax.text(1.01, row, f"mean {scores.mean():.2f}", va="center", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.18)
        ax.set_title(f"{d}: share of each score, per rater vs the panel", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, ncols=5, fontsize=7, loc="outside lower center", title="score",
               title_fontsize=7)
    return fig


def gold_figure(rows: list[Submitted], gold: set[str]):
    fig, ax = _figure("Gold (deliberately flawed) items caught, per rater")
    ratings = _ratings(rows) + [Rating(r.rater, r.item, f, 1.0) for r in rows for f in r.flags]
    flags = tuple({f for r in rows for f in r.flags})
    result = gold_accuracy(ratings, gold, flag_dimensions=flags) if gold else []
    if result:
        ax.bar([g["rater"] for g in result], [g["accuracy"] for g in result], color="#4d9221")
        for i, g in enumerate(result):
            ax.text(i, g["accuracy"] + 0.02, f"{g['caught']}/{g['gold_rated']}", ha="center",
                    fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("share caught")
    else:
        ax.text(0.5, 0.5, "no gold item rated yet", ha="center", va="center")
        ax.set_axis_off()
    return fig


def judge_figure(session: Session, campaign: Campaign, rows: list[Submitted]):
    """The newest judge run's scores (expected where available) against the panel's mean."""
    run = session.execute(select(JudgeRun).where(JudgeRun.campaign_id == campaign.id)
                          .order_by(JudgeRun.id.desc())).scalars().first()
    if run is None:
        return None
    judged = {str(j.rationale_id): j for j in session.execute(
        select(JudgeRating).where(JudgeRating.judge_run_id == run.id)).scalars()}
    fig, ax = _figure(f"Judge run {run.id} ({run.model}) vs the panel's mean score")
    rng = np.random.default_rng(0)
    for d, marker in zip(SCALE_DIMENSIONS, ("o", "s"), strict=True):
        per_item: dict[str, list[int]] = {}
        for r in rows:
            per_item.setdefault(r.item, []).append(r.scores[d])
        xs, ys = [], []
        for item, scores in per_item.items():
            j = judged.get(item)
            if j is None:
                continue
            expected = getattr(j, f"expected_{d}")
            xs.append(float(np.mean(scores)))
            ys.append(expected if expected is not None else getattr(j, d))
        if xs:
            jitter = rng.uniform(-0.06, 0.06, (2, len(xs)))
            ax.scatter(np.add(xs, jitter[0]), np.add(ys, jitter[1]), marker=marker, alpha=0.6,
                       label=f"{d} ({len(xs)} items)")
    ax.plot([1, 5], [1, 5], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0.8, 5.2)
    ax.set_ylim(0.8, 5.2)
    ax.set_xlabel("panel mean")
    ax.set_ylabel("judge (expected score where given)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def campaign_figures(session: Session, campaign: Campaign) -> dict:
    """Every figure of the Admin screen (``judge`` is None when no judge has run)."""
    rows = submissions(session, campaign)
    gold = {str(r) for r in session.execute(
        select(CampaignItem.rationale_id).join(Rationale, Rationale.id == CampaignItem.rationale_id)
        .where(CampaignItem.campaign_id == campaign.id,
               CampaignItem.is_gold | Rationale.is_gold)).scalars()}
    return {"progress": progress_figure(rows), "alpha": alpha_figure(rows),
            "leniency": leniency_figure(rows), "gold": gold_figure(rows, gold),
            "judge": judge_figure(session, campaign, rows), "ratings": len(rows)}
