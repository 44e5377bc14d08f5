"""Judge runs and their scores, read back for calibration (never mixed with clinicians').

    rationale-audit judge report --campaign pilot            # the newest judge run
    rationale-audit agreement report --campaign pilot --include-judge 3

Judge scores are their own rater kind: they sit in ``judge_rating``, and only the two
commands above read them — the agreement report only when ``--include-judge`` names a run.
"""

import numpy as np
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.agreement import Rating, reliability_matrix
from annotation_db.calibration import judge_calibration
from annotation_db.campaigns import CampaignError, get_campaign
from annotation_db.claim_review import VERDICT_CODES
from annotation_db.models import JudgeRating, JudgeRun
from annotation_db.ratings import load_campaign_ratings
from annotation_db.rubric import CLAIM_DIMENSION, FLAGS, SCALE, SCALE_DIMENSIONS


def judge_run(session: Session, campaign_name: str, run_id: int | None = None) -> JudgeRun:
    """The named judge run of a campaign, or its newest."""
    campaign = get_campaign(session, campaign_name)
    query = select(JudgeRun).where(JudgeRun.campaign_id == campaign.id)
    if run_id is not None:
        query = query.where(JudgeRun.id == run_id)
    run = session.execute(query.order_by(JudgeRun.id.desc())).scalars().first()
    if run is None:
        raise CampaignError(f"campaign {campaign_name!r} has no judge run"
                            + (f" with id {run_id}" if run_id is not None else "")
                            + "; start one with `rationale-audit judge run`")
    return run


def judge_ratings(session: Session, run: JudgeRun, *, rater: str | None = None) -> list[Rating]:
    """The run's scores as long ratings (flags as 0/1), under one rater name."""
    name = rater or f"judge-{run.id}"
    out = []
    for row in session.execute(select(JudgeRating).where(JudgeRating.judge_run_id == run.id)
                               ).scalars():
        item = str(row.rationale_id)
        out.append(Rating(name, item, "accuracy", float(row.accuracy)))
        out.append(Rating(name, item, "faithfulness", float(row.faithfulness)))
        out.extend(Rating(name, item, flag, float(flag in row.flags)) for flag in FLAGS)
        out.extend(Rating(name, f"{item}#{position}", CLAIM_DIMENSION, VERDICT_CODES[verdict])
                   for position, verdict in (row.claim_verdicts or {}).items())
    return out


def calibration_report(session: Session, campaign_name: str, *, run_id: int | None = None,
                       epsilon: float = 0.2, q: float = 0.05, min_items: int = 30,
                       include_simulated: bool = False, replicates: int = 1000,
                       seed: int = 0) -> dict:
    """Judge vs panel for each scored dimension (see :mod:`annotation_db.calibration`)."""
    run = judge_run(session, campaign_name, run_id)
    panel, _, design = load_campaign_ratings(session, campaign_name,
                                             include_simulated=include_simulated)
    judged = {(r.item, r.dimension): r.score for r in judge_ratings(session, run)}
    dimensions = []
    claims_judged = any(dimension == CLAIM_DIMENSION for _, dimension in judged)
    for name in (*SCALE_DIMENSIONS, *([CLAIM_DIMENSION] if claims_judged else [])):
        matrix, raters, items = reliability_matrix(panel, name)
        judge = np.array([judged.get((item, name), np.nan) for item in items])
        section = {"dimension": name, "raters": raters, "items": len(items)}
        nominal = name == CLAIM_DIMENSION
        if len(raters) == 0:
            section.update(computable=False, reason="no clinician ratings yet")
        else:
            section.update(judge_calibration(
                matrix, raters, judge,
                domain=sorted(VERDICT_CODES.values()) if nominal else list(SCALE),
                level="nominal" if nominal else "ordinal", epsilon=epsilon, q=q,
                min_items=min_items, replicates=replicates, seed=seed))
        dimensions.append(section)
    tests = [d.get("alt_test", {}) for d in dimensions]
    may_prescreen = all(t.get("passed") for t in tests)
    return {
        "campaign": campaign_name, "design": design,
        "judge": {"run_id": run.id, "model": run.model, "backend": run.backend,
                  "served_by": run.served_by, "status": run.status,
                  "scored": len({item for item, dim in judged if dim != CLAIM_DIMENSION}),
        "settings": run.settings},
        "epsilon": epsilon, "q": q, "min_items": min_items,
        "dimensions": dimensions,
        "may_prescreen": may_prescreen,
        "verdict": ("may pre-screen: the alt-test passes on every dimension" if may_prescreen
                    else "may not pre-screen: " + "; ".join(
                        f"{d['dimension']}: {_why_not(d)}" for d in dimensions
                        if not d.get("alt_test", {}).get("passed"))),
    }


def _why_not(section: dict) -> str:
    test = section.get("alt_test", {})
    return test.get("why") or test.get("reason") or section.get("reason", "")


def _n(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _p(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def _kappa(result: dict) -> str:
    if not result.get("computable"):
        return f"— ({result.get('reason')})"
    ci = result.get("ci95")
    return f"{_n(result['kappa'])}" + (f" [{_n(ci[0])}, {_n(ci[1])}]" if ci else "") + \
        f" on {result['items']} items"


def _alpha(result: dict) -> str:
    if not result.get("computable"):
        return f"— ({result.get('reason')})"
    ci = result.get("ci95")
    return f"{_n(result['alpha'])}" + (f" [{_n(ci[0])}, {_n(ci[1])}]" if ci else "")


def to_markdown(report: dict) -> str:
    judge = report["judge"]
    lines = [f"# Judge calibration: {report['campaign']}", "",
             f"Judge run {judge['run_id']}: `{judge['model']}` ({judge['backend']}), "
             f"{judge['scored']} rationales scored. Clinician ratings: "
             f"{report['design'].get('simulated_ratings', 'excluded')} simulated ones.", "",
             f"**Verdict: {report['verdict']}** (alt-test, ε = {report['epsilon']}, "
             f"Benjamini–Yekutieli q = {report['q']}, at least {report['min_items']} items per "
             "clinician).", ""]
    for d in report["dimensions"]:
        lines += [f"## {d['dimension']}", ""]
        if d.get("computable") is False and "alpha_panel" not in d:
            lines += [f"Not computable: {d['reason']}.", ""]
            continue
        lines += [f"- α of the clinicians (the ceiling): {_alpha(d['alpha_panel'])}",
                  f"- α with the judge as one more coder: {_alpha(d['alpha_with_judge'])}",
                  f"- κ ({d['kappa_vs_consensus'].get('weights', 'quadratic')} weights), "
                  f"judge vs the panel's consensus: {_kappa(d['kappa_vs_consensus'])}",
                  f"- α, judge vs the panel's consensus: {_alpha(d['alpha_vs_consensus'])}"]
        sp = d["spearman_vs_panel_mean"]
        lines.append("- Spearman ρ, judge vs the panel's mean: "
                     + (f"{_n(sp['rho'])} (p = {sp['p_value']:.3g}, {sp['items']} items)"
                        if sp.get("computable") else f"— ({sp['reason']})"))
        lines += ["", "| clinician | weighted κ vs judge | α with judge | alt-test items | "
                      "ρ judge | ρ clinician | p | judge wins |",
                  "|---|---|---|---|---|---|---|---|"]
        alt = {r["rater"]: r for r in d["alt_test"].get("raters", [])}
        for k in d["kappa_vs_raters"]:
            a = alt.get(k["rater"], {})
            lines.append(f"| {k['rater']} | {_kappa(k)} | {_alpha(k['alpha'])} | "
                         f"{a.get('items', 0)} | "
                         f"{_n(a.get('rho_judge'), 2)} | {_n(a.get('rho_human'), 2)} | "
                         f"{_p(a.get('p_value'))} | "
                         f"{'yes' if a.get('judge_wins') else 'no'} |")
        alt_test = d["alt_test"]
        if alt_test.get("computable"):
            lines += ["", f"Alt-test: winning rate {alt_test['winning_rate']:.2f}, average "
                          f"advantage probability ρ = {alt_test['rho']:.2f}; {alt_test['why']}."
                      + (" Fewer than three clinicians: the alt-test's authors recommend three "
                         "or more." if alt_test.get("few_clinicians") else "")]
        else:
            lines += ["", f"Alt-test not computable: {alt_test.get('reason')}."]
        lines.append("")
    return "\n".join(lines)
