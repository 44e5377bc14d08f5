"""Simulated raters for dry runs: scores that follow the grounding checks, plus noise.

    rationale-audit campaign simulate pilot --raters 4 --noise 0.6

A simulated rater's faithfulness score starts from the rationale's grounding score
(1 + 4 × score), accuracy from faithfulness, then adds the rater's own leniency and Gaussian
noise; failed grounding checks raise the matching flags with high probability. Simulated
ratings are stored with ``simulated = True``; reports and exports leave them out unless asked.
"""

import random

from sqlalchemy import select
from sqlmodel import Session

from annotation_db import audit, campaigns, users
from annotation_db.models import Assignment, Campaign, Rationale


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


def simulate(session: Session, campaign: Campaign, *, noise: float = 0.6,
             leniency_spread: float = 0.4, seed: int = 0) -> int:
    """Fill every open assignment of the campaign's simulated raters; return ratings added."""
    rng = random.Random(seed)
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
                             simulated=True, address=audit.CLI)
            added += 1
    return added


def _clip(value: float) -> int:
    return int(min(5, max(1, round(value))))
