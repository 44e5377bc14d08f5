"""Claim review: a verdict per claim with each rating, and what the verdicts add up to.

A campaign with ``settings["claim_review"]`` asks every rater for a verdict on every claim
of the rationale (:data:`~annotation_db.rubric.CLAIM_VERDICTS`) and lets them mark record
lines the claim should have cited; :func:`annotation_db.campaigns.submit` stores them with
the annotation revision, in its transaction. Readers take each assignment's newest
revision, as for the scores:

- :func:`campaign_verdicts`: the verdicts as long rows;
- :func:`verdict_ratings`: the same as agreement ratings (one unit per claim, nominal), so
  Krippendorff's α, its CI and the most disputed claims come from the agreement report;
- :func:`claim_summary`: the share of claims with a unanimous verdict, and how far raters
  marked the same missing lines (mean pairwise Jaccard);
- :func:`policy_reasons`: what the approval policy's claim keys say of one rationale.
"""

from __future__ import annotations

import itertools

from sqlalchemy import select
from sqlmodel import Session

from annotation_db.agreement import Rating
from annotation_db.models import (
    Annotation,
    Assignment,
    Campaign,
    Claim,
    ClaimVerdict,
    EvidenceItem,
    Rationale,
    User,
)
from annotation_db.revisions import newest_only
from annotation_db.rubric import CLAIM_DIMENSION, CLAIM_VERDICTS, UNSUPPORTED_VERDICTS

VERDICT_CODES = {name: float(code) for code, name in enumerate(CLAIM_VERDICTS)}


def is_on(campaign: Campaign) -> bool:
    """Whether the campaign asks for a verdict on every claim."""
    return bool((campaign.settings or {}).get("claim_review"))


def normalize(verdicts: dict | None) -> tuple[dict[int, dict], str | None]:
    """Claim verdicts as sent (a browser's JSON: string keys) keyed by claim id, each an
    object; and what is wrong with their form (then the dict is empty)."""
    given: dict[int, dict] = {}
    if verdicts is None:
        return given, None
    if not isinstance(verdicts, dict):
        return {}, "claim verdicts must be an object keyed by claim id"
    for key, value in verdicts.items():
        try:
            claim_id = int(str(key).strip())
        except ValueError:
            return {}, f"claim verdicts must be keyed by claim id, not {key!r}"
        if claim_id in given:
            return {}, f"claim {claim_id} is given twice"
        if value is not None and not isinstance(value, dict):
            return {}, f"claim {claim_id}: a verdict must be an object"
        given[claim_id] = dict(value or {})
    return given, None


def record_ids(session: Session, assignment: Assignment) -> set[str]:
    """The evidence ids of the record behind an assignment's rationale."""
    rationale = session.get(Rationale, assignment.rationale_id)
    return set(session.execute(select(EvidenceItem.evidence_id).where(
        EvidenceItem.patient_id == rationale.patient_id)).scalars())


def verdicts_problem(session: Session, assignment: Assignment, verdicts: dict | None,
                     required: bool, draft: bool = False,
                     known: set[str] | None = None) -> str | None:
    """What is wrong with a rating's claim verdicts (``{claim id: {"verdict": …,
    "should_cite": [ids]}}``), or None. A ``draft`` may leave a claim's verdict empty
    (None) while marking its lines. ``known``: the record's ids, when the caller has
    them."""
    given, problem = normalize(verdicts)
    if problem:
        return problem
    claims = {c.id: c for c in session.execute(select(Claim).where(
        Claim.rationale_id == assignment.rationale_id)).scalars()}
    foreign = sorted(set(given) - set(claims))
    if foreign:
        return f"claim(s) {', '.join(map(str, foreign))} are not claims of this rationale"
    missing = [c.position for c in claims.values() if c.id not in given]
    if required and missing:
        return ("give every claim a verdict (claim review is on for this campaign); "
                f"claim{'s' if len(missing) > 1 else ''} {', '.join(map(str, sorted(missing)))} "
                f"{'have' if len(missing) > 1 else 'has'} none")
    if not given:
        return None
    known = known if known is not None else record_ids(session, assignment)
    for claim_id, value in sorted(given.items(), key=lambda kv: claims[kv[0]].position):
        position, verdict = claims[claim_id].position, value.get("verdict")
        if verdict not in CLAIM_VERDICTS and not (draft and verdict is None):
            return (f"claim {position}: verdict must be one of "
                    f"{', '.join(CLAIM_VERDICTS)}, not {verdict!r}")
        marked = value.get("should_cite") or []
        if not isinstance(marked, list):
            return f"claim {position}: should-cite lines must be a list of evidence ids"
        unknown = sorted(set(map(str, marked)) - known)
        if unknown:
            return (f"claim {position}: {', '.join(unknown)} "
                    f"{'are' if len(unknown) > 1 else 'is'} not in this patient's record")
    return None


def add_verdicts(session: Session, annotation: Annotation, verdicts: dict | None) -> int:
    """Stage the verdicts of an annotation revision, checked by :func:`verdicts_problem`
    (the caller commits); how many."""
    verdicts, _ = normalize(verdicts)
    for claim_id, given in verdicts.items():
        session.add(ClaimVerdict(annotation_id=annotation.id, claim_id=int(claim_id),
                                 verdict=given["verdict"],
                                 should_cite=sorted(set(given.get("should_cite") or []))))
    return len(verdicts or {})


def verdicts_of(session: Session, annotation_id: int) -> dict[int, dict]:
    """One revision's verdicts, as :func:`annotation_db.campaigns.submit` takes them."""
    return {v.claim_id: {"verdict": v.verdict, "should_cite": list(v.should_cite)}
            for v in session.execute(select(ClaimVerdict).where(
                ClaimVerdict.annotation_id == annotation_id)).scalars()}


def campaign_verdicts(session: Session, campaign: Campaign, *,
                      include_simulated: bool = False) -> list[dict]:
    """Every claim verdict of the campaign's submitted items, newest revision only: rater,
    rationale, claim id and position, verdict, should-cite ids."""
    query = (newest_only(select(User.username, Assignment.rationale_id, Annotation.simulated,
                                ClaimVerdict, Claim.position)
                         .join(Assignment, Assignment.user_id == User.id)
                         .join(Annotation, Annotation.assignment_id == Assignment.id)
                         .join(ClaimVerdict, ClaimVerdict.annotation_id == Annotation.id)
                         .join(Claim, Claim.id == ClaimVerdict.claim_id))
             .where(Assignment.campaign_id == campaign.id, Assignment.status == "submitted"))
    if not include_simulated:
        query = query.where(Annotation.simulated.is_(False))
    return [{"rater": rater, "rationale_id": rationale_id, "claim_id": verdict.claim_id,
             "position": position, "verdict": verdict.verdict,
             "should_cite": list(verdict.should_cite)}
            for rater, rationale_id, _, verdict, position in session.execute(query)]


def verdict_ratings(rows: list[dict]) -> list[Rating]:
    """Claim verdicts as agreement ratings: unit ``<rationale>#<claim position>``,
    dimension :data:`~annotation_db.rubric.CLAIM_DIMENSION`, the verdict's code."""
    return [Rating(r["rater"], f"{r['rationale_id']}#{r['position']}", CLAIM_DIMENSION,
                   VERDICT_CODES[r["verdict"]]) for r in rows]


def claim_summary(rows: list[dict]) -> dict:
    """Over claims with two or more verdicts: the share whose raters all gave the same
    verdict, and the mean pairwise Jaccard similarity of the lines they marked as "should
    have cited" (two empty marks agree: 1), with the share of claims where anyone marked."""
    by_claim: dict[int, list[dict]] = {}
    for r in rows:
        by_claim.setdefault(r["claim_id"], []).append(r)
    shared = [group for group in by_claim.values() if len(group) >= 2]
    if not shared:
        return {"claims": len(by_claim), "claims_with_two_or_more": 0,
                "unanimous_share": None, "should_cite_jaccard": None,
                "should_cite_marked_share": None}
    unanimous = sum(len({r["verdict"] for r in group}) == 1 for group in shared)
    jaccards = []
    for group in shared:
        pairs = [(set(a["should_cite"]), set(b["should_cite"]))
                 for a, b in itertools.combinations(group, 2)]
        jaccards.append(sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs)
                        / len(pairs))
    marked = sum(any(r["should_cite"] for r in group) for group in shared)
    return {"claims": len(by_claim), "claims_with_two_or_more": len(shared),
            "unanimous_share": unanimous / len(shared),
            "should_cite_jaccard": sum(jaccards) / len(jaccards),
            "should_cite_marked_share": marked / len(shared)}


def panel_view(rows: list[dict]) -> dict[int, dict]:
    """Per claim of one rationale, what the counted raters say together: ``unsupported``
    when at least half judged it not in the record or contradicted, ``supported`` when at
    least half judged it supported."""
    by_claim: dict[int, list[str]] = {}
    for r in rows:
        by_claim.setdefault(r["claim_id"], []).append(r["verdict"])
    return {claim: {"raters": len(verdicts),
                    "unsupported": 2 * sum(v in UNSUPPORTED_VERDICTS for v in verdicts)
                    >= len(verdicts),
                    "supported": 2 * verdicts.count("supported") >= len(verdicts)}
            for claim, verdicts in by_claim.items()}


def policy_reasons(rows: list[dict], claims: int, max_unsupported: int | None,
                   min_supported_share: float | None) -> list[str]:
    """Why the policy's claim keys reject a rationale with ``claims`` claims, given its
    counted raters' verdicts ``rows`` (none: no reason)."""
    if max_unsupported is None and min_supported_share is None:
        return []
    if not rows:
        return ["no claim verdicts (the policy's claim keys need claim review)"]
    panel = panel_view(rows)
    reasons = []
    unsupported = sum(c["unsupported"] for c in panel.values())
    if max_unsupported is not None and unsupported > max_unsupported:
        reasons.append(f"{unsupported} claim{'s' if unsupported != 1 else ''} not in the "
                       f"record or contradicted (at most {max_unsupported})")
    supported = sum(c["supported"] for c in panel.values()) / max(claims, 1)
    if min_supported_share is not None and supported < min_supported_share:
        reasons.append(f"supported claims {supported:.0%} below {min_supported_share:.0%}")
    return reasons
