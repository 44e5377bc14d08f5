"""What an evidence-ablation run tells a team: the model's behaviour beside its raters.

    rationale-audit faithfulness report --campaign pilot --format html

- **Distributions** of comprehensiveness, sufficiency, the random baseline and the margin
  (comprehensiveness − baseline) over the rationales whose cited evidence the history shows.
- **The share of rationales whose cited evidence beats the random baseline** by the stated
  margin, with its Wilson 95% CI: how often the evidence a rationale names is evidence the
  reader's prediction actually rests on, more than as many other items.
- **Rank correlations** (Spearman, with a bootstrap 95% CI over rationales) of
  comprehensiveness with the clinicians' mean faithfulness score and with the judge's: a
  check of the raters and of the judge against the model's behaviour. A clinician's
  faithfulness score judges the text against the record; comprehensiveness measures what a
  model's prediction rests on. A weak correlation is a finding about the two views, not
  proof that either is wrong.
- **Per claim**: the distributions and the share beating the baseline for every claim that
  cites shown items (its CI resamples rationales, whose claims are not independent), and
  the mean comprehensiveness of claims by the clinicians' majority verdict and by the
  judge's (claims get verdicts, not scores, so there is no per-claim correlation).

The numbers belong to the scorer that read the histories (named at the top): a base model
and a trained adapter can rest their predictions on different evidence.
"""

import html
import json
from collections import Counter, defaultdict

import numpy as np
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import faithfulness as store
from annotation_db.models import Campaign, FaithfulnessScore, JudgeRating, JudgeRun

QUANTILES = (5, 25, 50, 75, 95)


def describe(values: list[float]) -> dict:
    """n, mean, SD and quantiles of ``values`` (None entries left out)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return {"n": 0}
    return {"n": int(arr.size), "mean": float(arr.mean()),
            "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "quantiles": {str(q): float(np.percentile(arr, q)) for q in QUANTILES}}


def share_above(margins: list[float], threshold: float) -> dict:
    """The share of ``margins`` above ``threshold`` with its Wilson 95% CI."""
    from statsmodels.stats.proportion import proportion_confint

    values = [m for m in margins if m is not None]
    if not values:
        return {"n": 0, "threshold": threshold}
    hits = sum(m > threshold for m in values)
    low, high = proportion_confint(hits, len(values), alpha=0.05, method="wilson")
    return {"n": len(values), "threshold": threshold, "above": hits,
            "share": hits / len(values), "ci95": [float(low), float(high)]}


def spearman(x: list[float], y: list[float], *, replicates: int = 1000, seed: int = 0) -> dict:
    """Spearman's ρ of paired values with a percentile bootstrap 95% CI over pairs."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 5 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"n": int(a.size), "computable": False,
                "reason": "fewer than 5 pairs" if a.size < 5 else "a constant variable"}
    rho = float(spearmanr(a, b).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(replicates):
        index = rng.integers(0, a.size, a.size)
        if np.ptp(a[index]) == 0 or np.ptp(b[index]) == 0:
            continue
        draws.append(spearmanr(a[index], b[index]).statistic)
    if len(draws) < replicates / 2:
        return {"n": int(a.size), "computable": True, "rho": rho, "ci95": None,
                "reason": "most resamples had a constant variable: no bootstrap CI"}
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"n": int(a.size), "computable": True, "rho": rho, "ci95": [float(low), float(high)]}


def clustered_share(groups: list[list[float]], threshold: float, *, replicates: int = 1000,
                    seed: int = 0) -> dict:
    """The share of all values above ``threshold`` with a 95% CI that resamples the groups
    (a rationale's claims are not independent of each other)."""
    groups = [g for g in groups if g]
    values = [v for g in groups for v in g]
    if not values:
        return {"n": 0, "threshold": threshold}
    above = np.array([sum(v > threshold for v in g) for g in groups], dtype=float)
    sizes = np.array([len(g) for g in groups], dtype=float)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(groups), (replicates, len(groups)))
    shares = above[index].sum(axis=1) / sizes[index].sum(axis=1)
    low, high = np.percentile(shares, [2.5, 97.5])
    return {"n": len(values), "groups": len(groups), "threshold": threshold,
            "above": int(above.sum()), "share": float(above.sum() / sizes.sum()),
            "ci95": [float(low), float(high)], "ci_method": "bootstrap over rationales"}


def _clinician_faithfulness(session: Session, campaign: Campaign, include_simulated: bool
                            ) -> dict[int, float]:
    from annotation_db.adjudication import latest_ratings

    out = {}
    for rationale_id, ratings in latest_ratings(session, campaign.id).items():
        values = [r["faithfulness"] for r in ratings if include_simulated or not r["simulated"]]
        if values:
            out[rationale_id] = float(np.mean(values))
    return out


def _judge(session: Session, campaign: Campaign, judge_run: int | None
           ) -> tuple[JudgeRun | None, dict[int, JudgeRating]]:
    query = select(JudgeRun).where(JudgeRun.campaign_id == campaign.id)
    if judge_run is not None:
        query = query.where(JudgeRun.id == judge_run)
    run = session.execute(query.order_by(JudgeRun.id.desc())).scalars().first()
    if run is None:
        return None, {}
    return run, {r.rationale_id: r for r in session.execute(select(JudgeRating).where(
        JudgeRating.judge_run_id == run.id)).scalars()}


def _judge_faithfulness(row: JudgeRating) -> float:
    return row.expected_faithfulness if row.expected_faithfulness is not None \
        else float(row.faithfulness)


def _claims(rows: list[FaithfulnessScore], verdicts: dict[tuple[int, int], list[str]],
            judged: dict[int, JudgeRating], threshold: float, replicates: int,
            seed: int) -> dict:
    claims = [(row.rationale_id, c) for row in rows for c in row.claims]
    grouped = [[c["comprehensiveness"] - c["baseline"] for c in row.claims
                if c.get("baseline") is not None] for row in rows]
    margins = [m for group in grouped for m in group]
    by_panel: dict[str, list[float]] = defaultdict(list)
    by_judge: dict[str, list[float]] = defaultdict(list)
    for rationale_id, c in claims:
        said = verdicts.get((rationale_id, c["position"]))
        if said:
            majority, votes = Counter(said).most_common(1)[0]
            if 2 * votes > len(said):
                by_panel[majority].append(c["comprehensiveness"])
        judge = judged.get(rationale_id)
        verdict = (judge.claim_verdicts or {}).get(str(c["position"])) if judge else None
        if verdict:
            by_judge[verdict].append(c["comprehensiveness"])
    return {"claims": len(claims),
            "comprehensiveness": describe([c["comprehensiveness"] for _, c in claims]),
            "margin": describe(margins),
            "beats_baseline": clustered_share(grouped, threshold, replicates=replicates,
                                              seed=seed),
            "by_clinician_verdict": {v: describe(x) for v, x in sorted(by_panel.items())},
            "by_judge_verdict": {v: describe(x) for v, x in sorted(by_judge.items())}}


def report(session: Session, *, run_id: int | None = None, campaign: str | None = None,
           margin: float = 0.05, judge_run: int | None = None, include_simulated: bool = False,
           replicates: int = 1000, seed: int = 0) -> dict:
    """The faithfulness report of run ``run_id`` (default: the newest finished one), read
    beside campaign ``campaign``'s clinicians and judge when one is named."""
    run = store.get_run(session, run_id)
    rows = store.scores(session, run.id)
    measured = [r for r in rows if r.comprehensiveness is not None]
    margins = [store.margin(r) for r in measured]
    out = {"run": store.identity(run), "status": run.status, "stats": run.stats,
           "rationales": len(rows), "with_cited_evidence_shown": len(measured),
           "cited_ids_not_shown": sum(r.cited_missing for r in rows),
           "without_baseline": sum(r.baseline is None for r in measured),
           "comprehensiveness": describe([r.comprehensiveness for r in measured]),
           "sufficiency": describe([r.sufficiency for r in measured]),
           "baseline": describe([r.baseline for r in measured]),
           "margin": describe(margins),
           "beats_baseline": share_above(margins, margin)}
    judged: dict[int, JudgeRating] = {}
    verdicts: dict[tuple[int, int], list[str]] = {}
    if campaign is not None:
        from annotation_db.campaigns import get_campaign
        from annotation_db.claim_review import campaign_verdicts

        chosen = get_campaign(session, campaign)
        clinicians = _clinician_faithfulness(session, chosen, include_simulated)
        judge, judged = _judge(session, chosen, judge_run)
        pairs = [(r.comprehensiveness, clinicians[r.rationale_id]) for r in measured
                 if r.rationale_id in clinicians]  # the campaign's own ratings only
        judge_pairs = [(r.comprehensiveness, _judge_faithfulness(judged[r.rationale_id]))
                       for r in measured if r.rationale_id in judged]
        for v in campaign_verdicts(session, chosen, include_simulated=include_simulated):
            verdicts.setdefault((v["rationale_id"], v["position"]), []).append(v["verdict"])
        out["campaign"] = {
            "name": chosen.name, "simulated_ratings": "included" if include_simulated
            else "excluded", "judge_run": judge.id if judge else None,
            "vs_clinicians_faithfulness": spearman(*zip(*pairs, strict=True),
                                                   replicates=replicates, seed=seed) if pairs else
            {"n": 0, "computable": False, "reason": "no clinician ratings of these rationales"},
            "vs_judge_faithfulness": spearman(*zip(*judge_pairs, strict=True),
                                              replicates=replicates, seed=seed) if judge_pairs else
            {"n": 0, "computable": False, "reason": "no judge run on this campaign"}}
    out["per_claim"] = _claims(measured, verdicts, judged, margin, replicates, seed)
    return out


def _num(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _dist_row(name: str, d: dict) -> str:
    if not d.get("n"):
        return f"| {name} | 0 | — | — | — | — | — |"
    q = d["quantiles"]
    return (f"| {name} | {d['n']} | {_num(d['mean'])} | {_num(d.get('sd'))} | {_num(q['5'])} "
            f"| {_num(q['50'])} | {_num(q['95'])} |")


def _share(s: dict) -> str:
    if not s.get("n"):
        return "not computable (no rationale cites evidence the history shows)"
    return (f"{s['above']} of {s['n']} = **{s['share']:.1%}** (95% CI {s['ci95'][0]:.1%}–"
            f"{s['ci95'][1]:.1%}) beat the random baseline by more than {s['threshold']:g}")


def _rho(r: dict) -> str:
    if not r.get("computable"):
        return f"not computable ({r.get('reason')}; n = {r.get('n', 0)})"
    if r.get("ci95") is None:
        return f"ρ = {r['rho']:.3f} (n = {r['n']}; {r['reason']})"
    return f"ρ = {r['rho']:.3f} (95% CI {r['ci95'][0]:.3f} to {r['ci95'][1]:.3f}; n = {r['n']})"


def to_markdown(rep: dict) -> str:
    run = rep["run"]
    scorer = run["scorer"]
    who = (f"training run {scorer['training_run']} ({scorer['target']}, adapter "
           f"{scorer['adapter_sha256'][:12]})" if scorer.get("kind") == "training_run"
           else f"model {scorer.get('model')}")
    settings = run["settings"]
    lines = [f"# Faithfulness by evidence ablation: run {run['faithfulness_run']}", "",
             f"- generation run {run['generation_run']}; read by {who}",
             f"- history budget {settings.get('history_budget')} tokens; {settings.get('draws')}"
             f" random draws per rationale; seed {settings.get('seed')}; status {rep['status']}",
             f"- {rep['rationales']} rationales scored, {rep['with_cited_evidence_shown']} cite "
             f"evidence the history shows ({rep['cited_ids_not_shown']} cited ids not shown; "
             f"{rep['without_baseline']} without a random baseline, the history showing fewer "
             "uncited items than they cite)",
             "", "## What the cited evidence does to the prediction", "",
             "Drops in the probability of the rationale's own conclusion (ERASER):", "",
             "| quantity | n | mean | SD | 5% | median | 95% |", "|---|---|---|---|---|---|---|",
             _dist_row("comprehensiveness (cited removed)", rep["comprehensiveness"]),
             _dist_row("sufficiency (only cited kept)", rep["sufficiency"]),
             _dist_row("baseline (as many random uncited removed)", rep["baseline"]),
             _dist_row("margin (comprehensiveness − baseline)", rep["margin"]), "",
             _share(rep["beats_baseline"]) + ".", ""]
    if "campaign" in rep:
        c = rep["campaign"]
        lines += [f"## Beside the raters of campaign {c['name']}", "",
                  f"- comprehensiveness vs the clinicians' mean faithfulness: "
                  f"{_rho(c['vs_clinicians_faithfulness'])} (simulated ratings "
                  f"{c['simulated_ratings']})",
                  f"- comprehensiveness vs the judge's faithfulness (judge run "
                  f"{c['judge_run'] or '—'}): {_rho(c['vs_judge_faithfulness'])}", "",
                  "A clinician's faithfulness score judges the text against the record; "
                  "comprehensiveness measures what this reader's prediction rests on. They "
                  "answer different questions, so a weak correlation is a finding, not an error.",
                  ""]
    claims = rep["per_claim"]
    lines += ["## Per claim", "", f"{claims['claims']} claims cite evidence the history shows.",
              "", "| quantity | n | mean | SD | 5% | median | 95% |",
              "|---|---|---|---|---|---|---|",
              _dist_row("comprehensiveness", claims["comprehensiveness"]),
              _dist_row("margin", claims["margin"]), "", _share(claims["beats_baseline"]) + "."]
    for title, key in (("clinicians' majority verdict", "by_clinician_verdict"),
                       ("judge's verdict", "by_judge_verdict")):
        if claims[key]:
            lines += ["", f"Comprehensiveness by the {title}:", "", "| verdict | n | mean |",
                      "|---|---|---|"]
            lines += [f"| {v} | {d['n']} | {_num(d.get('mean'))} |"
                      for v, d in claims[key].items()]
    return "\n".join(lines) + "\n"


def to_json(rep: dict) -> str:
    return json.dumps(rep, indent=2, sort_keys=True) + "\n"


def to_html(rep: dict) -> str:
    import markdown_it

    body = markdown_it.MarkdownIt("commonmark").enable("table").render(to_markdown(rep))
    title = f"Faithfulness run {rep['run']['faithfulness_run']}"
    style = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{style}</style></head><body>{body}"
            "</body></html>\n")
