"""A campaign's quantities estimated with its judge: PPI beside clinicians alone, the
ratings a target CI width needs with and without the judge, and how far to trust it.

    rationale-audit judge estimate --campaign pilot --target-ci-width 0.2

Each quantity is a mean over the campaign's rationales (gold copies left out):

- mean accuracy and mean faithfulness (the clinicians' mean score per rationale; the
  judge's expected score where it gave probabilities, else its score);
- the share approved by the default policy's score rule (mean accuracy and faithfulness
  both ≥ 4; the judge's P(approve) from its score probabilities, else its own decision);
- the share of a rationale's claims not in the record (per rationale: the mean share of
  raters who judged each claim not in the record; the judge's share of such verdicts).

Statistics: :mod:`annotation_db.ppi` (PPI++) and :mod:`annotation_db.escalation`.
"""

import numpy as np
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import ppi
from annotation_db.adaptive import is_adaptive
from annotation_db.adjudication import latest_ratings
from annotation_db.campaigns import CampaignError, get_campaign
from annotation_db.claim_review import campaign_verdicts
from annotation_db.escalation import APPROVE_AT, p_approve, trust
from annotation_db.judges import judge_run as find_judge_run
from annotation_db.models import CampaignItem, JudgeRating, JudgeRun, Rationale

QUANTITIES = ("mean_accuracy", "mean_faithfulness", "share_approved",
              "share_claims_not_in_record")


def _judge_value(row: JudgeRating, quantity: str) -> float | None:
    if quantity == "mean_accuracy":
        return row.expected_accuracy if row.expected_accuracy is not None else row.accuracy
    if quantity == "mean_faithfulness":
        return (row.expected_faithfulness if row.expected_faithfulness is not None
                else row.faithfulness)
    if quantity == "share_approved":
        p = p_approve(row)
        return p if p is not None else float(min(row.accuracy, row.faithfulness) >= APPROVE_AT)
    verdicts = list((row.claim_verdicts or {}).values())
    return sum(v == "not_in_record" for v in verdicts) / len(verdicts) if verdicts else None


def _panel_values(ratings: list[dict], claim_rows: list[dict]) -> dict[str, float | None]:
    acc = float(np.mean([r["accuracy"] for r in ratings]))
    faith = float(np.mean([r["faithfulness"] for r in ratings]))
    by_claim: dict[int, list[str]] = {}
    for row in claim_rows:
        by_claim.setdefault(row["position"], []).append(row["verdict"])
    claims = (float(np.mean([sum(v == "not_in_record" for v in said) / len(said)
                             for said in by_claim.values()])) if by_claim else None)
    return {"mean_accuracy": acc, "mean_faithfulness": faith,
            "share_approved": float(acc >= APPROVE_AT and faith >= APPROVE_AT),
            "share_claims_not_in_record": claims}


def _judge_run(session: Session, campaign, run_id: int | None) -> JudgeRun:
    """Run ``run_id`` (of any campaign: judge scores are kept per rationale), else the one the
    campaign was created with (escalation and adaptive campaigns name an earlier campaign's
    judge), else the campaign's newest."""
    chosen = run_id if run_id is not None else (campaign.settings or {}).get("judge_run")
    if chosen is None:
        return find_judge_run(session, campaign.name)
    run = session.get(JudgeRun, chosen)
    if run is None:
        raise CampaignError(f"no judge run {chosen}; `rationale-audit judge run` makes one")
    return run


def estimates(session: Session, campaign_name: str, *, run_id: int | None = None,
              include_simulated: bool = False, target_width: float | None = None,
              target_agreement: float = 0.9, delta: float = 0.05, alpha: float = ppi.ALPHA,
              seed: int = 0) -> dict:
    """Every quantity's clinician-only and prediction-powered estimate, the plan for
    ``target_width`` when given, and the trust-or-escalate check."""
    campaign = get_campaign(session, campaign_name)
    run = _judge_run(session, campaign, run_id)
    items = set(session.execute(select(CampaignItem.rationale_id).join(
        Rationale, Rationale.id == CampaignItem.rationale_id).where(
        CampaignItem.campaign_id == campaign.id, CampaignItem.is_gold.is_(False),
        Rationale.is_gold.is_(False))).scalars())
    judged = {r.rationale_id: r for r in session.execute(select(JudgeRating).where(
        JudgeRating.judge_run_id == run.id)).scalars() if r.rationale_id in items}
    claim_rows: dict[int, list[dict]] = {}
    for row in campaign_verdicts(session, campaign, include_simulated=include_simulated):
        claim_rows.setdefault(row["rationale_id"], []).append(row)
    panel = {}
    for rationale_id, ratings in latest_ratings(session, campaign.id).items():
        counted = [r for r in ratings if include_simulated or not r["simulated"]]
        if rationale_id in items and counted:
            panel[rationale_id] = _panel_values(counted, claim_rows.get(rationale_id, []))
    random_subset = not is_adaptive(campaign)
    out = {"campaign": campaign.name, "judge_run": run.id, "judge_model": run.model,
           "items": len(items), "judged": len(judged), "rated": len(panel),
           "simulated_ratings": "included" if include_simulated else "excluded",
           "alpha": alpha, "random_subset": random_subset,
           "validity": ("the rated items are a random subset (shuffled queues): the PPI "
                        "interval is valid" if random_subset else
                        f"{campaign.settings.get('assignment')} assignment picks items by their "
                        "scores or the judge's doubt, so the rated items are not a random "
                        "subset and the PPI interval is NOT valid (shown for comparison only)"),
           "quantities": {}}
    for quantity in QUANTITIES:
        judge = {i: _judge_value(row, quantity) for i, row in judged.items()}
        rated = [(v[quantity], judge[i]) for i, v in panel.items()
                 if judge.get(i) is not None and v[quantity] is not None]
        unrated = [f for i, f in judge.items() if i not in panel and f is not None]
        y = np.array([a for a, _ in rated])
        f = np.array([b for _, b in rated])
        section = ppi.compare(y, f, np.array(unrated), alpha) if len(rated) >= 2 else {
            "computable": False, "reason": "fewer than 2 items with both a clinician rating "
            "and a judge score"}
        if target_width is not None and len(rated) >= 5:
            section["plan"] = ppi.ratings_for_width(y, f, len(rated) + len(unrated),
                                                    target_width, alpha)
        out["quantities"][quantity] = section
    with_p = {i: p for i, p in ((i, p_approve(row)) for i, row in judged.items())
              if p is not None}
    confident = [(i, p) for i, p in with_p.items() if i in panel]
    out["trust"] = trust([max(p, 1 - p) for _, p in confident], [p >= 0.5 for _, p in confident],
                         [bool(panel[i]["share_approved"]) for i, _ in confident],
                         target=target_agreement, delta=delta, seed=seed)
    threshold = out["trust"].get("threshold")
    if threshold is not None:  # over every item the judge scored, rated or not
        out["trust"]["trusted_share_all_judged"] = (
            sum(max(p, 1 - p) >= threshold for p in with_p.values()) / len(judged))
    if not random_subset and out["trust"].get("computable"):
        out["trust"]["validity"] = ("certified on items chosen by the assignment, not at "
                                    "random: the certificate holds for items like those, not "
                                    "for the whole campaign")
    return out


def _ci(result: dict | None) -> str:
    if not result:
        return "—"
    return f"{result['estimate']:.3f} [{result['ci'][0]:.3f}, {result['ci'][1]:.3f}]"


def to_markdown(rep: dict) -> str:
    level = f"{1 - rep['alpha']:.0%}"
    lines = [f"# Campaign estimates with judge run {rep['judge_run']}: {rep['campaign']}", "",
             f"- {rep['items']} rationales; judge ({rep['judge_model']}) scored {rep['judged']}, "
             f"clinicians rated {rep['rated']} (simulated ratings {rep['simulated_ratings']})",
             f"- {rep['validity']}", "",
             f"| quantity | clinicians only ({level} CI) | with the judge, PPI++ ({level} CI) "
             "| λ | CI width ratio |", "|---|---|---|---|---|"]
    plans = []
    for name, q in rep["quantities"].items():
        if not q.get("computable"):
            lines.append(f"| {name} | {q.get('reason')} | | | |")
            continue
        ppi_result = q.get("prediction_powered")
        with_judge = _ci(ppi_result) if ppi_result else q.get("note", "—")
        lam = f"{ppi_result['lambda']:.2f}" if ppi_result else "—"
        ratio = f"{q['width_ratio']:.2f}" if q.get("width_ratio") is not None else "—"
        lines.append(f"| {name} | {_ci(q['clinicians_only'])} (n = {q['clinicians_only']['n']})"
                     f" | {with_judge} | {lam} | {ratio} |")
        if q.get("plan", {}).get("computable"):
            p = q["plan"]
            plans.append(f"| {name} | {p['without_judge_needed']} | {p['with_judge'] or '—'} | "
                         f"{p['verdict']} |")
    if plans:
        width = next(q["plan"]["target_width"] for q in rep["quantities"].values()
                     if q.get("plan", {}).get("computable"))
        lines += ["", f"## Rated items for a {level} CI of width {width:g}", "",
                  "| quantity | clinicians only | with the judge | verdict |",
                  "|---|---|---|---|", *plans]
    t = rep["trust"]
    lines += ["", "## Trust or escalate (approval decisions)", ""]
    if not t.get("computable"):
        lines.append(f"Not computable: {t['reason']}.")
    else:
        agreement = ("—" if t["agreement"] is None else
                     f"{t['agreement']:.1%} (95% CI {t['agreement_ci95'][0]:.1%}–"
                     f"{t['agreement_ci95'][1]:.1%})")
        lines += [f"- target agreement {t['target_agreement']:.0%} at δ = {t['delta']:g}, "
                  f"certified on {t['calibration_items']} calibration items: {t['verdict']}",
                  f"- held out ({t['held_out_items']} items): the judge is trusted on "
                  f"{t['trusted_share']:.0%} and agrees with the panel on {agreement} of them "
                  f"(on all held-out items: {t['agreement_all_held_out']:.1%})"]
        if "trusted_share_all_judged" in t:
            lines.append(f"- of all {rep['judged']} judged rationales, rated or not, "
                         f"{t['trusted_share_all_judged']:.0%} are at or above the threshold")
        if "validity" in t:
            lines.append(f"- **{t['validity']}**")
    return "\n".join(lines) + "\n"
