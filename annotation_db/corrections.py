"""Corrections: a clinician's corrected rationale, proposed from the Annotate screen and
accepted or rejected by an adjudicator.

A correction is stored as a new rationale (same run and patient, ``variant``
``correction-…``, ``parent_id`` the rationale it corrects), so it gets its own claims and
can be rated, exported and trained on like any other; a :class:`Correction` row says who
proposed it, from which rationale, for which campaign, and what became of it. The
schema and grounding checks run before :func:`propose` (in
:mod:`generation.corrections`, which calls it); their report is stored with the
rationale. Every step is in the audit trail (``correction_proposed``,
``correction_accepted``, ``correction_rejected``).

Only accepted corrections reach an export (:func:`accepted`). In a campaign created with
``rate_corrections``, an accepted correction also joins the campaign as an item and is
rated like any rationale: k raters (the proposer last, only if too few others) find it at
the end of their queues (an adaptive campaign hands it out as it does its other items).
"""

from __future__ import annotations

import secrets

from sqlalchemy import func, select, update
from sqlmodel import Session

from annotation_db import audit
from annotation_db.campaigns import CampaignError, own_assignment
from annotation_db.errors import UserError
from annotation_db.models import (
    ADJUDICATION_REASON_MAX_CHARS,
    COMMENT_MAX_CHARS,
    Assignment,
    Campaign,
    CampaignItem,
    Correction,
    Rationale,
    Role,
    User,
    text_problem,
    utcnow,
)

DECIDERS = (Role.adjudicator, Role.admin)


class CorrectionError(UserError):
    """A correction that cannot be proposed or decided; the message is one line."""


def propose(session: Session, *, assignment_id: int, user: User, text: str,
            steps: list[dict] | None, cited_ids: list[str], predicted_label: bool | None,
            grounding: dict, raw_output: str, note: str = "",
            address: str | None = None) -> Correction:
    """Store a checked correction of the rationale of one's own assignment (committed, with
    its audit event); raises :class:`~annotation_db.campaigns.NotYours` for another's."""
    problem = text_problem("note", note, COMMENT_MAX_CHARS)
    if problem:
        raise CorrectionError(problem)
    assignment = own_assignment(session, assignment_id, user)
    if assignment.status == "reclaimed":
        raise CorrectionError("this item was handed to someone else; your queue has the "
                              "next one")
    source = session.get(Rationale, assignment.rationale_id)
    corrected = Rationale(run_id=source.run_id, patient_id=source.patient_id,
                          variant=f"correction-{secrets.token_hex(6)}", parent_id=source.id,
                          format=source.format, status="ok", predicted_label=predicted_label,
                          cited_evidence_ids=list(cited_ids), text=text, steps=steps,
                          raw_output=raw_output, grounding=grounding,
                          grounding_score=grounding.get("score"))
    session.add(corrected)
    session.flush()  # its claims are written here, in this transaction
    correction = Correction(campaign_id=assignment.campaign_id, source_rationale_id=source.id,
                            rationale_id=corrected.id, proposed_by=user.id, note=note)
    session.add(correction)
    session.flush()
    audit.record(session, "correction_proposed", actor=user.username, address=address,
                 target=f"correction {correction.id}", commit=False,
                 campaign=assignment.campaign_id, item=source.id, rationale=corrected.id,
                 grounding_passed=bool(grounding.get("passed")))
    session.commit()
    session.refresh(correction)
    return correction


def decide(session: Session, *, correction_id: int, user: User, accept: bool,
           reason: str = "", address: str | None = None,
           campaign: Campaign | None = None) -> Correction:
    """Accept or reject a proposed correction (adjudicators and admins; once), of
    ``campaign`` when one is given."""
    if user.role not in DECIDERS:
        raise CorrectionError("only adjudicators and admins decide corrections")
    problem = text_problem("reason", reason, ADJUDICATION_REASON_MAX_CHARS)
    if problem:
        raise CorrectionError(problem)
    if not accept and not reason.strip():
        raise CorrectionError("say why the correction is rejected (the rater reads it)")
    correction = session.get(Correction, correction_id)
    if correction is None or (campaign is not None and correction.campaign_id != campaign.id):
        raise CorrectionError(f"no correction {correction_id}"
                              + (f" in campaign {campaign.name}" if campaign else ""))
    if correction.proposed_by == user.id:
        raise CorrectionError("a correction is decided by someone other than who proposed it")
    status = "accepted" if accept else "rejected"
    # Guarded: two adjudicators deciding at once, the second is told, not overwritten.
    done = session.execute(update(Correction).where(
        Correction.id == correction_id, Correction.status == "proposed").values(
        status=status, decided_by=user.id, decided_at=utcnow(), reason=reason))
    if done.rowcount != 1:
        session.rollback()
        raise CorrectionError(f"correction {correction_id} was already "
                              f"{session.get(Correction, correction_id).status}")
    queued = _to_be_rated(session, correction) if accept else 0
    audit.record(session, f"correction_{status}", actor=user.username, address=address,
                 target=f"correction {correction_id}", commit=False,
                 campaign=correction.campaign_id, item=correction.source_rationale_id,
                 rationale=correction.rationale_id, **({"assigned": queued} if queued else {}))
    session.commit()
    session.refresh(correction)
    return correction


def _to_be_rated(session: Session, correction: Correction) -> int:
    """An accepted correction as an item of its campaign when the campaign rates
    corrections (staged, the caller commits); how many raters it was assigned to."""
    campaign = session.get(Campaign, correction.campaign_id)
    settings = campaign.settings or {}
    if not settings.get("rate_corrections"):
        return 0
    session.add(CampaignItem(campaign_id=campaign.id, rationale_id=correction.rationale_id))
    from annotation_db.adaptive import is_adaptive

    if is_adaptive(campaign):  # picked from the pool as raters ask
        return 0
    raters = list(session.execute(select(User).where(
        User.username.in_(settings.get("annotators", [])), User.active)).scalars())
    open_items = dict(session.execute(
        select(Assignment.user_id, func.count()).where(
            Assignment.campaign_id == campaign.id, Assignment.status == "assigned")
        .group_by(Assignment.user_id)).all())
    raters.sort(key=lambda u: (u.id == correction.proposed_by, open_items.get(u.id, 0), u.id))
    chosen = raters[:campaign.ratings_per_item]
    for rater in chosen:
        last = session.execute(select(func.max(Assignment.position)).where(
            Assignment.campaign_id == campaign.id, Assignment.user_id == rater.id)).scalar()
        session.add(Assignment(campaign_id=campaign.id, rationale_id=correction.rationale_id,
                               user_id=rater.id, position=(last or 0) + 1, status="assigned",
                               assigned_at=utcnow()))
    return len(chosen)


def _rows(session: Session, campaign: Campaign, status: str | None) -> list[dict]:
    query = (select(Correction, User.username).join(User, User.id == Correction.proposed_by)
             .where(Correction.campaign_id == campaign.id).order_by(Correction.id))
    if status:
        query = query.where(Correction.status == status)
    out = []
    for correction, who in session.execute(query):
        source = session.get(Rationale, correction.source_rationale_id)
        corrected = session.get(Rationale, correction.rationale_id)
        out.append({"correction": correction, "proposed_by": who, "source": source,
                    "corrected": corrected})
    return out


def queue(session: Session, campaign: Campaign) -> list[dict]:
    """The campaign's corrections waiting for a decision, oldest first."""
    return _rows(session, campaign, "proposed")


def accepted(session: Session, campaign: Campaign) -> list[dict]:
    """The campaign's accepted corrections (what exports may use), oldest first."""
    return _rows(session, campaign, "accepted")


def of_assignment(session: Session, assignment_id: int, user: User) -> list[Correction]:
    """The corrections one rater proposed for the item of one assignment, newest first."""
    assignment = own_assignment(session, assignment_id, user)
    return list(session.execute(select(Correction).where(
        Correction.campaign_id == assignment.campaign_id,
        Correction.source_rationale_id == assignment.rationale_id,
        Correction.proposed_by == user.id).order_by(Correction.id.desc())).scalars())


__all__ = ["CampaignError", "CorrectionError", "accepted", "decide", "of_assignment",
           "propose", "queue"]
