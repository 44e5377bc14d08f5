"""Campaigns and assignment: who rates which rationale, in which order, and what they said.

    rationale-audit campaign create pilot --run 1 --k 2 --calibration 10 --gold-share 0.1
    rationale-audit campaign status pilot

Assignment rule (decided once, at creation, seeded):

- every annotator rates the **calibration** batch, first, in their own random order;
- every other item gets ``k`` annotators, chosen least-loaded first (random tie-break), so
  loads differ by at most one; nobody gets the same rationale twice (a database constraint);
- each annotator's queue is shuffled independently;
- gold items (flawed copies from the generation mutator) are mixed in like any other item.

An assignment opened and left unfinished for ``reclaim_after_minutes`` is reclaimed: it is
marked ``reclaimed`` and the item goes to the least-loaded annotator who has not had it.
A skipped item is handed on the same way. A skip is not "done": when nobody is left who has
not had the item, so that it would never reach ``k`` ratings, it goes back to the pool and
comes back, once, at the end of the queue of an annotator who skipped it (:func:`skip`,
:func:`next_assignment`); a skip can be taken back (:func:`unskip`). Every submission is
committed at once, as a new append-only annotation revision, and clears the rater's draft
of it (:mod:`annotation_db.drafts`).

``assignment="adaptive"`` (``campaign create --assignment adaptive``) replaces the fixed
queues after the calibration batch with disagreement-driven picking: every item still
reaches ``k``, and extra ratings, up to ``--max-ratings``, go to the most uncertain approval
decisions (:mod:`annotation_db.adaptive`).
"""

import datetime as dt
import random
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from annotation_db import audit
from annotation_db.campaigns_config import campaign_default as _default
from annotation_db.errors import UserError
from annotation_db.models import (
    COMMENT_MAX_CHARS,
    SKIP_REASON_MAX_CHARS,
    Annotation,
    Assignment,
    Campaign,
    CampaignItem,
    Draft,
    JudgeRun,
    Rationale,
    User,
    text_problem,
    utcnow,
)
from annotation_db.revisions import newest_only
from annotation_db.rubric import FLAGS, SCALE

RECLAIM_AFTER_MINUTES = 30


class CampaignError(UserError):
    """A campaign operation that cannot be done; the message is one line."""


class NotYours(PermissionError):
    """An attempt to read or write another rater's assignment."""


def create_campaign(session: Session, *, name: str, run_ids: list[int], annotators: list[str],
                    k: int = _default("k"), calibration: int = _default("calibration"),
                    gold_share: float = _default("gold_share"),
                    guidelines_version: str = _default("guidelines_version"),
                    blind_grounding: bool = not _default("show_grounding"),
                    seed: int = _default("seed"), created_by: int | None = None,
                    actor: str | None = None, address: str | None = None,
                    reclaim_after_minutes: int = RECLAIM_AFTER_MINUTES,
                    assignment: str = _default("assignment"),
                    max_ratings: int | None = _default("max_ratings"),
                    judge_run: int | None = _default("judge_run"), min_uncertainty: float = 0.05,
                    claim_review: bool = _default("claim_review"),
                    rate_corrections: bool = _default("rate_corrections")) -> Campaign:
    """Create a campaign and its assignments (see the module doc; ``assignment="adaptive"``
    assigns only the calibration batch now and the rest as raters ask, see
    :mod:`annotation_db.adaptive`). ``claim_review``: every rating gives a verdict on
    every claim of the rationale (:mod:`annotation_db.claim_review`); ``rate_corrections``:
    an accepted correction joins the campaign and is rated like any rationale
    (:mod:`annotation_db.corrections`). The defaults are the command line's, from
    :class:`~annotation_db.campaigns_config.CampaignCreateConfig`."""
    _check_assignment(assignment, judge_run)
    if session.execute(select(Campaign.id).where(Campaign.name == name)).first():
        raise CampaignError(f"a campaign named {name!r} already exists")
    users = _active_raters(session, annotators, k)
    adaptive = assignment in ("adaptive", "escalation")
    if adaptive:
        max_ratings = _adaptive_cap(session, k, len(users), max_ratings, judge_run)
    rng = random.Random(seed)
    items, gold, calibration_ids = _items(session, run_ids, gold_share, calibration, rng)
    campaign = Campaign(name=name, ratings_per_item=k, gold_share=gold_share,
                        guidelines_version=guidelines_version, blind_grounding=blind_grounding,
                        created_by=created_by,
                        settings={"runs": run_ids, "seed": seed, "calibration": calibration,
                                  "reclaim_after_minutes": reclaim_after_minutes,
                                  "annotators": [u.username for u in users],
                                  "assignment": assignment, "claim_review": claim_review,
                                  "rate_corrections": rate_corrections,
                                  **({"max_ratings": max_ratings, "judge_run": judge_run,
                                      "min_uncertainty": min_uncertainty} if adaptive else {})})
    session.add(campaign)
    session.flush()
    gold_ids = set(gold)
    # Bulk inserts: a 100k-item campaign is created in seconds, not minutes.
    session.execute(insert(CampaignItem), [
        {"campaign_id": campaign.id, "rationale_id": r, "is_calibration": r in calibration_ids,
         "is_gold": r in gold_ids} for r in items])
    queues = _queues(items, users, calibration_ids, k, adaptive, rng)
    rows = _assignment_rows(campaign.id, queues, rng)
    if rows:
        session.execute(insert(Assignment), rows)
    audit.record(session, "campaign_created", actor=actor, address=address, target=name,
                 commit=False, annotators=sorted(annotators), k=k, items=len(rows))
    session.commit()
    return campaign


def _active_raters(session: Session, annotators: list[str], k: int) -> list[User]:
    """The named accounts that are active, refusing unknown names and too few raters."""
    users = [session.execute(select(User).where(User.username == u)).scalars().first()
             for u in annotators]
    missing = [u for u, user in zip(annotators, users, strict=True) if user is None]
    if missing:
        raise CampaignError(f"unknown annotators: {', '.join(missing)}")
    users = [u for u in users if u.active]
    if len(users) < k:
        raise CampaignError(f"k = {k} ratings per item needs at least {k} active annotators, "
                            f"got {len(users)}")
    return users


def _check_assignment(assignment: str, judge_run: int | None) -> None:
    """Refuse an assignment that does not exist, or escalation without its judge."""
    if assignment not in ("balanced", "adaptive", "escalation"):
        raise CampaignError("assignment must be balanced, adaptive or escalation, not "
                            f"{assignment!r}")
    if assignment == "escalation" and judge_run is None:
        raise CampaignError("escalation hands clinicians the items the judge is least sure "
                            "of first, so it needs --judge-run (`rationale-audit judge run`)")


def _adaptive_cap(session: Session, k: int, raters: int, max_ratings: int | None,
                  judge_run: int | None) -> int:
    """The adaptive cap on ratings per item (default k + 2, at most the raters), checked
    with the judge run that is the items' prior."""
    max_ratings = max_ratings if max_ratings is not None else min(k + 2, raters)
    if not k <= max_ratings <= raters:
        raise CampaignError(f"--max-ratings must lie between k = {k} and the "
                            f"{raters} annotators, not {max_ratings}")
    if judge_run is not None and session.get(JudgeRun, judge_run) is None:
        raise CampaignError(f"no judge run {judge_run}; `rationale-audit judge run` "
                            "makes one")
    return max_ratings


def _items(session: Session, run_ids: list[int], gold_share: float, calibration: int,
           rng: random.Random) -> tuple[list[int], list[int], set[int]]:
    """The campaign's rationales (the runs' valid originals, then the gold copies drawn),
    the gold drawn and the calibration batch drawn."""
    originals = list(session.execute(
        select(Rationale.id).where(Rationale.run_id.in_(run_ids), Rationale.status == "ok",
                                   Rationale.variant == "original").order_by(Rationale.id)
    ).scalars())
    gold_pool = list(session.execute(
        select(Rationale.id).where(Rationale.run_id.in_(run_ids), Rationale.is_gold)
        .order_by(Rationale.id)).scalars())
    if not originals:
        raise CampaignError(f"runs {run_ids} have no valid rationales to rate")
    n_gold = min(len(gold_pool), round(gold_share * len(originals)))
    gold = sorted(rng.sample(gold_pool, n_gold))
    items = originals + gold
    return items, gold, set(rng.sample(items, min(calibration, len(items))))


def _queues(items: list[int], users: list[User], calibration_ids: set[int], k: int,
            adaptive: bool, rng: random.Random) -> dict[int, list[tuple[bool, int]]]:
    """Each rater's items, (is calibration, rationale id): the calibration batch for
    everyone, then (balanced) each item to the k raters with the fewest so far."""
    queues: dict[int, list[tuple[bool, int]]] = {u.id: [] for u in users}
    for rationale_id in items:
        if rationale_id in calibration_ids:
            for user in users:
                queues[user.id].append((True, rationale_id))
            continue
        if adaptive:  # handed out one at a time, where a rating is most informative
            continue
        ranked = sorted(users, key=lambda u: (len(queues[u.id]), rng.random()))
        for user in ranked[:k]:
            queues[user.id].append((False, rationale_id))
    return queues


def _assignment_rows(campaign_id: int, queues: dict[int, list[tuple[bool, int]]],
                     rng: random.Random) -> list[dict]:
    """The assignment rows: each rater's queue shuffled, calibration first."""
    now = utcnow()
    rows = []
    for user_id, queue in queues.items():
        rng.shuffle(queue)
        queue.sort(key=lambda entry: not entry[0])  # calibration first, order kept shuffled
        rows.extend({"campaign_id": campaign_id, "rationale_id": r, "user_id": user_id,
                     "position": pos, "status": "assigned", "assigned_at": now}
                    for pos, (_, r) in enumerate(queue))
    return rows


def get_campaign(session: Session, name: str) -> Campaign:
    campaign = session.execute(select(Campaign).where(Campaign.name == name)).scalars().first()
    if campaign is None:
        known = session.execute(select(Campaign.name)).scalars().all()
        raise CampaignError(f"no campaign named {name!r}; known: {', '.join(known) or 'none'}")
    return campaign


def reclaim_abandoned(session: Session, campaign: Campaign, now: dt.datetime | None = None
                      ) -> int:
    """Hand abandoned (opened, unfinished, timed out) assignments to someone else."""
    minutes = (campaign.settings or {}).get("reclaim_after_minutes", RECLAIM_AFTER_MINUTES)
    cutoff = (now or utcnow()) - dt.timedelta(minutes=minutes)
    stale = list(session.execute(select(Assignment).where(
        Assignment.campaign_id == campaign.id, Assignment.status == "assigned",
        Assignment.opened_at.is_not(None), Assignment.opened_at < cutoff)).scalars())
    for assignment in stale:
        assignment.status = "reclaimed"
        assignment.slot = None  # an adaptive item's slot is free again
        session.add(assignment)
        _hand_on(session, campaign, assignment.rationale_id)
    if stale:  # the common case writes nothing and takes no write lock
        session.commit()
    return len(stale)


def _hand_on(session: Session, campaign: Campaign, rationale_id: int) -> Assignment | None:
    """Give a rationale to the least-loaded annotator who has never had it (in an adaptive
    campaign it simply goes back to the pool the next rater's item is chosen from)."""
    from annotation_db.adaptive import is_adaptive

    if is_adaptive(campaign):
        return None
    had = set(session.execute(select(Assignment.user_id).where(
        Assignment.campaign_id == campaign.id, Assignment.rationale_id == rationale_id)).scalars())
    pending = dict(session.execute(
        select(Assignment.user_id, func.count()).where(Assignment.campaign_id == campaign.id,
                                                       Assignment.status == "assigned")
        .group_by(Assignment.user_id)).all())
    names = (campaign.settings or {}).get("annotators", [])
    candidates = [u for u in session.execute(select(User).where(User.username.in_(names),
                                                                User.active)).scalars()
                  if u.id not in had]
    if not candidates:
        return None
    chosen = min(candidates, key=lambda u: (pending.get(u.id, 0), u.id))
    last = session.execute(select(func.max(Assignment.position)).where(
        Assignment.campaign_id == campaign.id, Assignment.user_id == chosen.id)).scalar() or 0
    assignment = Assignment(campaign_id=campaign.id, rationale_id=rationale_id,
                            user_id=chosen.id, position=last + 1)
    session.add(assignment)
    return assignment


@dataclass
class Progress:
    """A rater's items: ``done`` (rated) of ``assigned`` (rated or open); skipped items are
    neither, and counted apart."""

    done: int
    assigned: int
    skipped: int = 0


def progress(session: Session, campaign_id: int, user_id: int) -> Progress:
    rows = dict(session.execute(
        select(Assignment.status, func.count()).where(Assignment.campaign_id == campaign_id,
                                                      Assignment.user_id == user_id)
        .group_by(Assignment.status)).all())
    done = rows.get("submitted", 0)
    return Progress(done=done, assigned=done + rows.get("assigned", 0),
                    skipped=rows.get("skipped", 0))


def next_assignment(session: Session, campaign: Campaign, user: User) -> Assignment | None:
    """The user's next open assignment in their order (opened now if it was not); when the
    queue is empty, an item they skipped that would otherwise never reach ``k``."""
    reclaim_abandoned(session, campaign)
    assignment = session.execute(
        select(Assignment).where(Assignment.campaign_id == campaign.id,
                                 Assignment.user_id == user.id, Assignment.status == "assigned")
        .order_by(Assignment.position, Assignment.id).limit(1)).scalars().first()
    if assignment is None:
        from annotation_db.adaptive import SlotsBusy, is_adaptive, next_adaptive

        if is_adaptive(campaign):
            try:
                assignment = next_adaptive(session, campaign, user)
            except SlotsBusy as exc:
                raise CampaignError(str(exc)) from None
        return assignment or _return_skipped(session, campaign, user)
    if assignment.opened_at is None:
        session.execute(update(Assignment).where(Assignment.id == assignment.id,
                                                 Assignment.opened_at.is_(None))
                        .values(opened_at=utcnow()))
        session.commit()
        session.refresh(assignment)
    return assignment


def _never_had(session: Session, campaign: Campaign, rationale_id: int) -> bool:
    """Whether an active annotator of the campaign has never had this item."""
    had = select(Assignment.user_id).where(Assignment.campaign_id == campaign.id,
                                           Assignment.rationale_id == rationale_id)
    names = (campaign.settings or {}).get("annotators", [])
    return session.execute(select(User.id).where(User.username.in_(names), User.active,
                                                 User.id.not_in(had)).limit(1)).first() is not None


def _reopen(session: Session, campaign: Campaign, assignment: Assignment, **values) -> bool:
    """Open a skipped assignment again (only if it is still skipped); in an adaptive
    campaign it takes a free slot of the item. False when it cannot (changed meanwhile, or
    the item's slots are all taken)."""
    from annotation_db.adaptive import Settings, is_adaptive

    slot = None
    if is_adaptive(campaign):
        held = set(session.execute(select(Assignment.slot).where(
            Assignment.campaign_id == campaign.id,
            Assignment.rationale_id == assignment.rationale_id,
            Assignment.slot.is_not(None))).scalars())
        free = [n for n in range(1, Settings.of(campaign).max_ratings + 1) if n not in held]
        if not free:
            return False
        slot = free[0]
    reopened = session.execute(
        update(Assignment).where(Assignment.id == assignment.id, Assignment.status == "skipped")
        .values(status="assigned", slot=slot, completed_at=None, **values))
    return reopened.rowcount == 1


def _return_skipped(session: Session, campaign: Campaign, user: User) -> Assignment | None:
    """An item this user skipped that is short of ``k`` ratings (given or open) with nobody
    left who has not had it: back at the end of their queue, once (a second skip is final),
    with its audit event (``item_returned``)."""
    live = (select(Assignment.rationale_id, func.count().label("n"))
            .where(Assignment.campaign_id == campaign.id,
                   Assignment.status.in_(("assigned", "submitted")))
            .group_by(Assignment.rationale_id).subquery())
    short = session.execute(
        select(Assignment).outerjoin(live, live.c.rationale_id == Assignment.rationale_id)
        .where(Assignment.campaign_id == campaign.id, Assignment.user_id == user.id,
               Assignment.status == "skipped", Assignment.returned_at.is_(None),
               func.coalesce(live.c.n, 0) < campaign.ratings_per_item)
        .order_by(Assignment.completed_at, Assignment.id)).scalars().all()
    for assignment in short:
        if _never_had(session, campaign, assignment.rationale_id):
            continue  # someone else can still take it
        now = utcnow()
        last = session.execute(select(func.max(Assignment.position)).where(
            Assignment.campaign_id == campaign.id, Assignment.user_id == user.id)).scalar()
        try:
            if not _reopen(session, campaign, assignment, returned_at=now, opened_at=now,
                           position=(last or 0) + 1):
                session.rollback()
                continue
            audit.record(session, "item_returned", actor=user.username,
                         target=f"assignment {assignment.id}", commit=False,
                         campaign=campaign.id, item=assignment.rationale_id)
            session.commit()
        except IntegrityError:  # another rater took the adaptive slot at the same moment
            session.rollback()
            continue
        session.refresh(assignment)
        return assignment
    return None


def own_assignment(session: Session, assignment_id: int, user: User) -> Assignment:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.user_id != user.id:
        raise NotYours("that item is not in your queue")
    return assignment


def rating_problem(accuracy: int | None, faithfulness: int | None, flags: list[str],
                   comment: str, *, draft: bool = False) -> str | None:
    """What is wrong with a rating's form, or None. A draft may leave a score out."""
    for name, value in (("accuracy", accuracy), ("faithfulness", faithfulness)):
        if not (value is None and draft) and value not in SCALE:
            return (f"{name} must be a whole number from 1 to 5"
                    + (", or not yet given" if draft else ""))
    unknown = sorted(set(flags) - set(FLAGS))
    if unknown:
        return f"unknown flags: {', '.join(unknown)}"
    return text_problem("comment", comment, COMMENT_MAX_CHARS)


def submit(session: Session, *, assignment_id: int, user: User, accuracy: int,
           faithfulness: int, flags: list[str], comment: str = "",
           seconds_on_task: float | None = None, simulated: bool = False,
           address: str | None = None, claim_verdicts: dict | None = None) -> Annotation:
    """Record a rating (or a revision of one's own rating) in its own transaction, with
    its audit event (``rating_submitted``, or ``rating_revised`` from the second revision
    on; the comment's text stays out of the trail) and its claim verdicts
    (``{claim id: {"verdict": …, "should_cite": [ids]}}``; every claim needs one when the
    campaign has claim review on)."""
    from annotation_db import claim_review

    problem = rating_problem(accuracy, faithfulness, flags, comment)
    if problem:
        raise CampaignError(problem)
    for attempt in range(3):
        assignment = own_assignment(session, assignment_id, user)
        if assignment.status not in ("assigned", "submitted"):
            raise CampaignError(f"this item is {assignment.status} and cannot be rated")
        problem = claim_review.verdicts_problem(
            session, assignment, claim_verdicts,
            claim_review.is_on(session.get(Campaign, assignment.campaign_id)))
        if problem:
            raise CampaignError(problem)
        revision = (session.execute(select(func.max(Annotation.revision)).where(
            Annotation.assignment_id == assignment_id)).scalar() or 0) + 1
        annotation = Annotation(assignment_id=assignment_id, revision=revision,
                                accuracy=accuracy, faithfulness=faithfulness,
                                flags=sorted(set(flags)), comment=comment,
                                seconds_on_task=seconds_on_task, simulated=simulated)
        # Guarded: an item reclaimed from this rater meanwhile is not submitted after all.
        marked = session.execute(
            update(Assignment).where(Assignment.id == assignment_id,
                                     Assignment.status.in_(("assigned", "submitted")))
            .values(status="submitted", completed_at=utcnow()))
        if marked.rowcount != 1:
            session.rollback()
            raise CampaignError("this item was handed to someone else while it was open; "
                                "your queue has the next one")
        session.add(annotation)
        session.execute(delete(Draft).where(Draft.assignment_id == assignment_id))
        try:
            session.flush()  # the revision's id, for its claim verdicts
            judged = claim_review.add_verdicts(session, annotation, claim_verdicts)
            audit.record(session, "rating_submitted" if revision == 1 else "rating_revised",
                         actor=user.username, address=address,
                         target=f"assignment {assignment_id}", commit=False,
                         campaign=assignment.campaign_id, item=assignment.rationale_id,
                         revision=revision, **({"claims_judged": judged} if judged else {}),
                         **({"simulated": True} if simulated else {}))
            session.commit()
            session.refresh(annotation)
            return annotation
        except IntegrityError:  # a concurrent revision took this number: take the next
            session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def skip(session: Session, *, assignment_id: int, user: User, reason: str,
         address: str | None = None) -> Assignment:
    """Skip an open item (it is handed on) with its audit event, in one transaction; the
    reason's text stays out of the trail."""
    if not reason.strip():
        raise CampaignError("say why you skip this item")
    problem = text_problem("skip reason", reason.strip(), SKIP_REASON_MAX_CHARS)
    if problem:
        raise CampaignError(problem)
    assignment = own_assignment(session, assignment_id, user)
    if assignment.status != "assigned":
        raise CampaignError(f"this item is {assignment.status} and cannot be skipped")
    assignment.status = "skipped"
    assignment.slot = None
    assignment.skip_reason = reason.strip()
    assignment.completed_at = utcnow()
    session.add(assignment)
    _hand_on(session, session.get(Campaign, assignment.campaign_id), assignment.rationale_id)
    audit.record(session, "item_skipped", actor=user.username, address=address,
                 target=f"assignment {assignment_id}", commit=False,
                 campaign=assignment.campaign_id, item=assignment.rationale_id)
    session.commit()
    return assignment


def unskip(session: Session, *, assignment_id: int, user: User,
           address: str | None = None) -> Assignment:
    """Take back one's skip: the item is open again at its place in the queue, and the copy
    handed on to someone else because of it is withdrawn if they have not opened it (one
    they opened stays theirs: the item gets a rating more). With its audit event
    (``skip_undone``), in one transaction."""
    assignment = own_assignment(session, assignment_id, user)
    if assignment.status != "skipped":
        raise CampaignError(f"this item is {assignment.status}; only a skip can be taken back")
    campaign = session.get(Campaign, assignment.campaign_id)
    handed_on = session.execute(select(Assignment.id).where(
        Assignment.campaign_id == campaign.id,
        Assignment.rationale_id == assignment.rationale_id, Assignment.user_id != user.id,
        Assignment.status == "assigned", Assignment.opened_at.is_(None),
        Assignment.assigned_at >= assignment.completed_at)).scalars().all()
    try:
        if not _reopen(session, campaign, assignment, skip_reason=None):
            session.rollback()
            raise CampaignError("every rating this item may have is taken meanwhile; "
                                "the skip stands")
        if handed_on:
            session.execute(delete(Assignment).where(Assignment.id.in_(handed_on)))
        audit.record(session, "skip_undone", actor=user.username, address=address,
                     target=f"assignment {assignment_id}", commit=False,
                     campaign=campaign.id, item=assignment.rationale_id,
                     withdrawn=len(handed_on))
        session.commit()
    except IntegrityError:  # another rater took the adaptive slot at the same moment
        session.rollback()
        raise CampaignError("every rating this item may have is taken meanwhile; "
                            "the skip stands") from None
    session.refresh(assignment)
    return assignment


def latest_annotation(session: Session, assignment_id: int) -> Annotation | None:
    """The newest revision of an assignment's rating (what a revision starts from)."""
    return session.execute(select(Annotation).where(Annotation.assignment_id == assignment_id)
                           .order_by(Annotation.revision.desc()).limit(1)).scalars().first()


def previous_submitted(session: Session, campaign: Campaign, user: User,
                       before: int | None = None) -> Assignment | None:
    """The user's submitted item rated just before ``before`` (one of their submitted
    items), or their last rated item when ``before`` is open or None; in the order they
    first rated them (revising an item does not move it)."""
    order = session.execute(
        select(Assignment.id).join(Annotation, Annotation.assignment_id == Assignment.id)
        .where(Assignment.campaign_id == campaign.id, Assignment.user_id == user.id,
               Assignment.status == "submitted")
        .group_by(Assignment.id).order_by(func.min(Annotation.id).desc())).scalars().all()
    at = order.index(before) + 1 if before in order else 0
    return session.get(Assignment, order[at]) if at < len(order) else None


def my_history(session: Session, campaign: Campaign, user: User) -> list[dict]:
    """The user's own submitted items with their latest revision (for revising)."""
    rows = session.execute(
        newest_only(select(Assignment.id, Annotation).join(
            Annotation, Annotation.assignment_id == Assignment.id))
        .where(Assignment.campaign_id == campaign.id, Assignment.user_id == user.id)
        .order_by(Assignment.completed_at.desc())).all()
    return [{"assignment_id": a, "revision": n.revision, "accuracy": n.accuracy,
             "faithfulness": n.faithfulness, "flags": n.flags, "comment": n.comment}
            for a, n in rows]


def status(session: Session, campaign: Campaign) -> dict:
    rows = session.execute(
        select(User.username, Assignment.status, func.count())
        .join(Assignment, Assignment.user_id == User.id)
        .where(Assignment.campaign_id == campaign.id)
        .group_by(User.username, Assignment.status)).all()
    per_user: dict[str, dict[str, int]] = {}
    for username, state, count in rows:
        per_user.setdefault(username, {})[state] = count
    seconds = dict(session.execute(
        select(User.username, func.avg(Annotation.seconds_on_task))
        .join(Assignment, Assignment.user_id == User.id)
        .join(Annotation, Annotation.assignment_id == Assignment.id)
        .where(Assignment.campaign_id == campaign.id).group_by(User.username)).all())
    items = session.execute(select(func.count()).select_from(CampaignItem).where(
        CampaignItem.campaign_id == campaign.id)).scalar()
    return {"campaign": campaign.name, "items": items, "k": campaign.ratings_per_item,
            "annotators": {u: {"done": s.get("submitted", 0),
                               "assigned": s.get("submitted", 0) + s.get("assigned", 0),
                               "skipped": s.get("skipped", 0), "reclaimed": s.get("reclaimed", 0),
                               "mean_seconds": round(seconds[u], 1) if seconds.get(u) else None}
                           for u, s in sorted(per_user.items())}}
