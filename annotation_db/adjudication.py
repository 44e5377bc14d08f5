"""Adjudication: the queue of disputed items and the adjudicator's final word.

An item is disputed when its latest ratings span two or more points on a dimension, when
raters split on a flag, or (claim review) when raters split on whether a claim is in the
record: one judged it not in the record or contradicted, another did not. The queue is
ordered lowest agreement first. A decision (approve or reject, final scores, reason) is
stored as an append-only Adjudication revision; items with no dispute are "unanimous" (or
"agreed" within one point), adjudicated ones "adjudicated".
"""

from collections import defaultdict

from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import audit
from annotation_db.models import (
    ADJUDICATION_REASON_MAX_CHARS,
    Adjudication,
    Annotation,
    Assignment,
    Campaign,
    Claim,
    ClaimVerdict,
    User,
    text_problem,
)
from annotation_db.rubric import SCALE_DIMENSIONS, UNSUPPORTED_VERDICTS


def latest_ratings(session: Session, campaign_id: int) -> dict[int, list[dict]]:
    """Latest submitted revision of every rater, grouped by rationale; ``item`` is the
    rater's assignment id, the item number that rater sees."""
    latest = (select(Annotation.assignment_id, func.max(Annotation.revision).label("rev"))
              .group_by(Annotation.assignment_id).subquery())
    rows = session.execute(
        select(Assignment.rationale_id, User.username, Annotation)
        .join(User, User.id == Assignment.user_id)
        .join(Annotation, Annotation.assignment_id == Assignment.id)
        .join(latest, (latest.c.assignment_id == Annotation.assignment_id)
              & (latest.c.rev == Annotation.revision))
        .where(Assignment.campaign_id == campaign_id, Assignment.status == "submitted")).all()
    verdicts: dict[int, dict[int, str]] = defaultdict(dict)
    annotation_ids = [a.id for _, _, a in rows]
    for start in range(0, len(annotation_ids), 900):  # the database's bound-parameter limit
        for annotation_id, position, verdict in session.execute(
                select(ClaimVerdict.annotation_id, Claim.position, ClaimVerdict.verdict)
                .join(Claim, Claim.id == ClaimVerdict.claim_id)
                .where(ClaimVerdict.annotation_id.in_(annotation_ids[start:start + 900]))):
            verdicts[annotation_id][position] = verdict
    out: dict[int, list[dict]] = defaultdict(list)
    for rationale_id, username, a in rows:
        out[rationale_id].append({"rater": username, "item": a.assignment_id,
                                  "accuracy": a.accuracy,
                                  "faithfulness": a.faithfulness, "flags": a.flags,
                                  "comment": a.comment, "simulated": a.simulated,
                                  "verdicts": verdicts.get(a.id, {})})
    return dict(out)


def dispute(ratings: list[dict]) -> dict | None:
    """How an item's ratings disagree, or None if they do not (needs two or more ratings)."""
    if len(ratings) < 2:
        return None
    spans = {dim: max(r[dim] for r in ratings) - min(r[dim] for r in ratings)
             for dim in SCALE_DIMENSIONS}
    flags = {f for r in ratings for f in r["flags"]}
    split = sorted(f for f in flags if not all(f in r["flags"] for r in ratings))
    claims = sorted({p for r in ratings for p in r.get("verdicts", {})})
    split_claims = [p for p in claims if len({r.get("verdicts", {}).get(p) in UNSUPPORTED_VERDICTS
                                               for r in ratings
                                               if p in r.get("verdicts", {})}) > 1]
    if max(spans.values()) < 2 and not split and not split_claims:
        return None
    return {"max_range": max(spans.values()), "ranges": spans, "split_flags": split,
            "split_claims": split_claims}


def queue(session: Session, campaign: Campaign) -> list[dict]:
    decided = set(session.execute(select(Adjudication.rationale_id).where(
        Adjudication.campaign_id == campaign.id)).scalars())
    items = []
    for rationale_id, ratings in latest_ratings(session, campaign.id).items():
        found = dispute(ratings)
        if found and rationale_id not in decided:
            items.append({"rationale_id": rationale_id, **found, "ratings": ratings})
    items.sort(key=lambda i: (-i["max_range"], -len(i["split_flags"]) - len(i["split_claims"]),
                              i["rationale_id"]))
    return items


def decide(session: Session, *, campaign: Campaign, rationale_id: int, adjudicator: User,
           decision: str, accuracy: int | None, faithfulness: int | None, flags: list[str],
           reason: str, address: str | None = None) -> Adjudication:
    if adjudicator.role not in ("adjudicator", "admin"):
        raise PermissionError("only adjudicators and admins can adjudicate")
    if decision not in ("approve", "reject"):
        raise ValueError("decision must be approve or reject")
    if not reason.strip():
        raise ValueError("give the reason for the decision")
    problem = text_problem("reason", reason.strip(), ADJUDICATION_REASON_MAX_CHARS)
    if problem:
        raise ValueError(problem)
    revision = (session.execute(select(func.max(Adjudication.revision)).where(
        Adjudication.campaign_id == campaign.id, Adjudication.rationale_id == rationale_id)
    ).scalar() or 0) + 1
    row = Adjudication(campaign_id=campaign.id, rationale_id=rationale_id,
                       adjudicator_id=adjudicator.id, revision=revision, decision=decision,
                       accuracy=accuracy, faithfulness=faithfulness, flags=sorted(flags),
                       comment=reason.strip())
    session.add(row)
    audit.record(session, "adjudicated", actor=adjudicator.username, address=address,
                 target=f"rationale {rationale_id}", commit=False, campaign=campaign.name,
                 decision=decision, revision=revision)
    session.commit()
    return row


def provenance(session: Session, campaign: Campaign) -> dict[int, str]:
    """unanimous / agreed / disputed / adjudicated / single for every rated item."""
    decided = set(session.execute(select(Adjudication.rationale_id).where(
        Adjudication.campaign_id == campaign.id)).scalars())
    out = {}
    for rationale_id, ratings in latest_ratings(session, campaign.id).items():
        if rationale_id in decided:
            out[rationale_id] = "adjudicated"
        elif len(ratings) < 2:
            out[rationale_id] = "single"
        elif dispute(ratings):
            out[rationale_id] = "disputed"
        elif all((r["accuracy"], r["faithfulness"], sorted(r["flags"])) ==
                 (ratings[0]["accuracy"], ratings[0]["faithfulness"], sorted(ratings[0]["flags"]))
                 for r in ratings):
            out[rationale_id] = "unanimous"
        else:
            out[rationale_id] = "agreed"
    return out
