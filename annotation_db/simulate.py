"""Simulated raters for dry runs: scores that follow the grounding checks, plus noise.

    rationale-audit campaign simulate pilot --raters 4 --noise 0.6

A simulated rater's faithfulness score starts from the rationale's grounding score
(1 + 4 × score), accuracy from faithfulness, then adds the rater's own leniency and Gaussian
noise; failed grounding checks raise the matching flags with high probability. Simulated
ratings are stored with ``simulated = True``; reports and exports leave them out unless asked.

In a campaign with claim review each claim also gets a verdict: *supported* when every id
it cites is in the record, *not in the record* when one is not, *general medical knowledge*
when it cites nothing; with probability ``claim_error`` the rater gives another verdict
instead (uniformly). Claim verdicts are drawn from their own generator (seeded by the
campaign's seed and the assignment), so a rater's scores and flags are the same with
claim review on or off: a study's simulated audit, and the dataset version made from it,
do not change with it.
"""

import random

from sqlalchemy import select
from sqlmodel import Session

from annotation_db import audit, campaigns, claim_review, claims, users
from annotation_db.campaigns_config import campaign_default as _default
from annotation_db.models import Assignment, Campaign, EvidenceItem, Rationale
from annotation_db.rubric import CLAIM_VERDICTS


def simulated_raters(session: Session, count: int, prefix: str = "sim-rater") -> list[str]:
    """Accounts for simulated raters; nobody knows their random passwords, so nobody logs in
    as them."""
    names = []
    for k in range(1, count + 1):
        name = f"{prefix}-{k}"
        if users.get_user(session, name) is None:
            users.create_user(session, username=name,
                              password=random.SystemRandom().randbytes(24).hex(),
                              role="annotator")
        names.append(name)
    return names


def simulate(session: Session, campaign: Campaign, *, noise: float = _default("noise"),
             leniency_spread: float = _default("leniency"), seed: int = _default("seed"),
             claim_error: float = _default("claim_error")) -> int:
    """Fill every open assignment of the campaign's simulated raters; return ratings added.

    The defaults are `rationale-audit campaign simulate`'s
    (:class:`~annotation_db.campaigns_config.CampaignSimulateConfig`)."""
    if not 0 <= claim_error <= 1:
        raise ValueError(f"claim_error must lie in [0, 1], got {claim_error}")
    rng = random.Random(seed)
    review = claim_review.is_on(campaign)
    names = [n for n in (campaign.settings or {}).get("annotators", [])
             if n.startswith("sim-rater")]
    added = 0
    for name in names:
        user = users.require_user(session, name)
        leniency = rng.gauss(0, leniency_spread)
        open_items = list(session.execute(select(Assignment).where(
            Assignment.campaign_id == campaign.id, Assignment.user_id == user.id,
            Assignment.status == "assigned").order_by(Assignment.position)).scalars())
        for assignment in open_items:
            rationale = session.get(Rationale, assignment.rationale_id)
            grounding = rationale.grounding or {}
            base = 1 + 4 * (rationale.grounding_score if rationale.grounding_score is not None
                            else 0.8)
            faithfulness = _clip(base + leniency + rng.gauss(0, noise))
            accuracy = _clip(base - 0.3 + leniency + rng.gauss(0, noise))
            failed = {c["kind"] for c in grounding.get("checks", []) if not c["ok"]}
            flags = []
            if failed & {"icd10", "value", "drug", "date", "cited_id"} and rng.random() < 0.8:
                flags.append("hallucinated_fact")
            if "absence" in failed and rng.random() < 0.7:
                flags.append("missed_key_risk_factor")
            if "label" in failed and rng.random() < 0.8:
                flags.append("label_contradicts_record")
            campaigns.submit(session, assignment_id=assignment.id, user=user,
                             accuracy=accuracy, faithfulness=faithfulness, flags=flags,
                             comment="simulated", seconds_on_task=round(rng.uniform(20, 90), 1),
                             simulated=True, address=audit.CLI,
                             claim_verdicts=_verdicts(
                                 session, rationale,
                                 random.Random(f"claims-{seed}-{assignment.id}"), claim_error)
                             if review else None)
            added += 1
    return added


def _verdicts(session: Session, rationale: Rationale, rng: random.Random,
              error: float) -> dict:
    record = set(session.execute(select(EvidenceItem.evidence_id).where(
        EvidenceItem.patient_id == rationale.patient_id)).scalars())
    out = {}
    for claim in claims.claims_of(session, rationale.id):
        truth = ("general_knowledge" if not claim.cited_ids else
                 "supported" if set(claim.cited_ids) <= record else "not_in_record")
        if rng.random() < error:
            truth = rng.choice([v for v in CLAIM_VERDICTS if v != truth])
        out[claim.id] = {"verdict": truth, "should_cite": []}
    return out


def _clip(value: float) -> int:
    return int(min(5, max(1, round(value))))
