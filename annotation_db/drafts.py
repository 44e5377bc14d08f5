"""Drafts: a rater's unsent form, kept on the server so that no score or comment is lost.

The Annotate screen saves the form (scores, flags, comment and, with claim review, the
verdicts and marked lines given so far) as it changes, a moment after
the last change, one draft per assignment; it comes back whenever the item is shown again
(a reload, a session that expired, another campaign and back, "Previous" while revising).
Submitting the rating deletes the draft in the same transaction
(:func:`annotation_db.campaigns.submit`).

A draft is never a rating: agreement, exports, adjudication and the judge read the
``annotation`` table, and nothing but the Annotate screen reads ``draft``.

A save that arrives after the item was submitted from a form opened earlier (a save still
on its way when Submit was pressed) is stale and is not kept (:class:`StaleDraft`): the
rating is what counts.
"""

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from annotation_db import audit, claim_review
from annotation_db.campaigns import latest_annotation, own_assignment, rating_problem
from annotation_db.errors import UserError
from annotation_db.models import Draft, User, utcnow


class DraftError(UserError):
    """A draft that cannot be kept; the message is one line."""


class StaleDraft(DraftError):
    """A save from a form opened before the item's latest submission (the rating stands)."""


def _aware(moment: dt.datetime) -> dt.datetime:
    """``moment`` with its time zone (SQLite gives timestamps back without one: UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _check(accuracy: int | None, faithfulness: int | None, flags: list[str],
           comment: str) -> None:
    problem = rating_problem(accuracy, faithfulness, flags, comment, draft=True)
    if problem:
        raise DraftError(problem)


def save_draft(session: Session, *, assignment_id: int, user: User, accuracy: int | None,
               faithfulness: int | None, flags: list[str], comment: str = "",
               form_opened_at: dt.datetime | None = None,
               address: str | None = None,
               claim_verdicts: dict | None = None) -> Draft | None:
    """Keep the form of one's own assignment as it stands (replacing the draft before it);
    an empty form deletes the draft (the audit event ``draft_discarded`` when there was
    one). Returns the draft, or None when there is none now.

    ``form_opened_at`` is when the form was shown: a submitted item (being revised) takes
    a draft only from a form opened after its latest revision (:class:`StaleDraft`
    otherwise). Raises :class:`~annotation_db.campaigns.NotYours` for another's item."""
    _check(accuracy, faithfulness, flags, comment)
    assignment = own_assignment(session, assignment_id, user)
    given, problem = claim_review.normalize(claim_verdicts)
    if problem:
        raise DraftError(problem)
    # A draft keeps what it can: a mistyped line id is left out (the submission names it),
    # so the scores and comment beside it are still saved.
    known = claim_review.record_ids(session, assignment) if given else set()
    claim_verdicts = {}
    for claim, value in given.items():
        marks = value.get("should_cite") or []
        value = {**value, "should_cite": [m for m in marks if str(m) in known]
                 if isinstance(marks, list) else []}
        if value.get("verdict") or value["should_cite"]:
            claim_verdicts[str(claim)] = value
    problem = claim_review.verdicts_problem(session, assignment, claim_verdicts,
                                            required=False, draft=True, known=known)
    if problem:
        raise DraftError(problem)
    if assignment.status == "reclaimed":
        raise DraftError("this item was handed to someone else while it was open; "
                         "your queue has the next one")
    if assignment.status == "submitted":
        rated = latest_annotation(session, assignment_id)
        if rated is not None and (form_opened_at is None
                                  or _aware(rated.created_at) >= _aware(form_opened_at)):
            raise StaleDraft("this item was submitted after the form was opened; "
                             "the submitted rating stands")
    if (accuracy is None and faithfulness is None and not flags and not comment
            and not claim_verdicts):
        if draft_of(session, assignment_id) is not None:  # the rater cleared her draft
            audit.record(session, "draft_discarded", actor=user.username, address=address,
                         target=f"assignment {assignment_id}", commit=False,
                         campaign=assignment.campaign_id, item=assignment.rationale_id)
        discard(session, assignment_id)
        return None
    values = dict(accuracy=accuracy, faithfulness=faithfulness, flags=sorted(set(flags)),
                  comment=comment, updated_at=utcnow(),
                  claim_verdicts={claim: {"verdict": value.get("verdict"),
                                          "should_cite": sorted(set(value.get("should_cite")
                                                                    or []))}
                                  for claim, value in claim_verdicts.items()} or None)
    for attempt in range(2):
        draft = draft_of(session, assignment_id)
        if draft is None:
            draft = Draft(assignment_id=assignment_id, **values)
        else:
            for name, value in values.items():
                setattr(draft, name, value)
        session.add(draft)
        try:
            session.commit()
        except IntegrityError:  # a save of the same item made the row first: update it
            session.rollback()
            if attempt == 1:
                raise
            continue
        session.refresh(draft)
        return draft
    raise AssertionError("unreachable")


def draft_of(session: Session, assignment_id: int) -> Draft | None:
    """The draft of an assignment, if there is one (the caller checks whose it is)."""
    return session.execute(select(Draft).where(Draft.assignment_id == assignment_id)
                           ).scalars().first()


def own_draft(session: Session, assignment_id: int, user: User) -> Draft | None:
    """The draft of one's own assignment (:class:`~annotation_db.campaigns.NotYours`
    for another's)."""
    own_assignment(session, assignment_id, user)
    return draft_of(session, assignment_id)


def discard(session: Session, assignment_id: int) -> None:
    """Delete an assignment's draft, if any (committed)."""
    session.execute(delete(Draft).where(Draft.assignment_id == assignment_id))
    session.commit()

