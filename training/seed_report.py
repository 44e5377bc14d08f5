"""The report's seed-level section: each target's result as mean ± SD over seeds, and
label-only minus each rationale target from the seeds-then-patients bootstrap
(:func:`training.seed_level.hierarchical_difference`) as the headline, with the per-seed
table beside it.

Rows are the grid report's rows (:func:`training.grid.collect`): one per selected run and
scoring. A run marked invalid (no answer line, or degenerate: its mean P(yes) over the
test patients, the share of yes answers it gives when each is drawn from its P(yes),
above 95% or below 5%) is left out with its reason; the comparison then uses the seeds
both arms still have (paired), or each arm's own seeds when none are shared.
"""

from __future__ import annotations

import functools

import numpy as np

from training.evaluate import read_predictions
from training.evaluate_config import lead_scoring
from training.reading_rule import ReadingRule, trained_position
from training.seed_level import (
    TOLERANCE,
    balanced_accuracy_at_rate,
    degenerate,
    expected_yes_rate,
    hierarchical_difference,
    yes_rate,
)
from training.tables import number, table
from training.targets import TARGETS

UNTRAINED = ("read where this model was never trained to answer; the reading rule reads "
             "trained positions only")


def _scores(row: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A run's test patients (sorted), labels and P(yes); each file is read once per
    report (a label-only run is compared with every rationale target)."""
    return _read(str(row["predictions"]))


@functools.lru_cache(maxsize=512)
def _read(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    predictions = read_predictions(path)
    ids = sorted(predictions)
    labels = np.asarray([predictions[i][0] for i in ids])
    scores = np.asarray([predictions[i][1] for i in ids])
    labels.flags.writeable = scores.flags.writeable = False  # shared between callers
    return ids, labels, scores


def run_figures(row: dict, max_one_answer_share: float = 0.95) -> dict:
    """What every LLM run adds to its row: the share it says yes for (P(yes) at or above
    0.5; of its sampled answers, when sampled), its mean P(yes) and why that makes it
    degenerate (or None), and balanced accuracy when it says yes for as many patients as
    there are positives (None with one class)."""
    _, y, p = _scores(row)
    both = 0 < y.sum() < y.size
    share = max_one_answer_share
    sampled = row.get("scoring") == "sampled"
    return {"yes_rate": yes_rate(p, sampled=sampled), "mean_p_yes": expected_yes_rate(p),
            "degenerate": degenerate(p, low=1 - share, high=share, sampled=sampled),
            "balanced_accuracy_matched": balanced_accuracy_at_rate(y, p) if both else None}


def fewshot_setting(row: dict) -> str:
    """How a few-shot run's rows are named where an SFT row names its scoring: zero-shot,
    or the demonstrations' selection, and a scoring beside its own (sampled)."""
    name = ("zero-shot" if row.get("k") == 0
            else f"few-shot, {row.get('selection') or 'random'}")
    return name + (f", {row['scoring']}" if row.get("scoring") else "")


def _setting(row: dict) -> tuple:
    """(size, target, scoring): what a run's seeds are seeds of. Few-shot runs are the
    base model's, their seed the demonstration draw, their "scoring" the selection (and
    the scoring, where it is not their own)."""
    if row["kind"] == "fewshot":
        return (None, row["target"], fewshot_setting(row))
    return (row["train_size"], row["target"], row["scoring"])


def _is_fewshot(t: dict) -> bool:
    return t["kind"] == "fewshot"


def _arms(rows: list[dict], kinds: tuple[str, ...] = ("sft",), valid_only: bool = True
          ) -> dict[tuple, dict[int, dict]]:
    """Valid rows of ``kinds`` (every row with predictions, without ``valid_only``) by
    setting, then by seed."""
    out: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["kind"] in kinds and (r["valid"] or not valid_only) and r["predictions"]:
            out.setdefault(_setting(r), {})[r["seed"]] = r
    return out


def _left_out(rows: list[dict], kinds: tuple[str, ...], valid: dict) -> dict[tuple, str]:
    """Settings of ``kinds`` with runs but no valid seed, and why (each reason once)."""
    out: dict[tuple, list[str]] = {}
    for r in rows:
        key = _setting(r)
        if r["kind"] in kinds and key not in valid and r["invalid_reason"]:
            out.setdefault(key, []).append(str(r["invalid_reason"]))
    return {key: "; ".join(dict.fromkeys(reasons)) for key, reasons in out.items()}


def by_target(rows: list[dict]) -> list[dict]:
    """Mean ± SD over seeds of test AUROC and matched-rate balanced accuracy, per size,
    target and scoring, and per few-shot setting over its demonstration draws (valid runs
    only). A setting whose every run was left out is listed too, with no figures and its
    reasons (``left_out``), so no target leaves the table without a word."""
    kinds = ("sft", "fewshot")
    arms, every = _arms(rows, kinds), _arms(rows, kinds, valid_only=False)
    out = []
    for (size, target, scoring), seeds in arms.items():
        aurocs = [r["auroc"]["value"] for r in seeds.values()]
        matched = [r.get("balanced_accuracy_matched") for r in seeds.values()]
        out.append({"train_size": size, "target": target, "scoring": scoring,
                    "kind": next(iter(seeds.values()))["kind"],
                    "runs": len(every.get((size, target, scoring), seeds)),
                    "seeds": sorted(seeds), "mean_auroc": float(np.mean(aurocs)),
                    "sd_auroc": float(np.std(aurocs, ddof=1)) if len(aurocs) > 1 else None,
                    "mean_balanced_accuracy_matched": (float(np.mean(matched))
                                                       if None not in matched else None),
                    "left_out": None})
    for (size, target, scoring), why in _left_out(rows, kinds, arms).items():
        out.append({"train_size": size, "target": target, "scoring": scoring,
                    "kind": "fewshot" if target not in TARGETS else "sft",
                    "runs": len(every.get((size, target, scoring), {})), "seeds": [],
                    "mean_auroc": None, "sd_auroc": None,
                    "mean_balanced_accuracy_matched": None, "left_out": why})
    return sorted(out, key=lambda t: (t["train_size"] or 0, t["target"], t["scoring"]))


def headline(rows: list[dict], n_resamples: int, seed: int,
             rule: ReadingRule | None = None) -> list[dict]:
    """Label-only (its own scoring) minus each other target, per size and scoring.

    ``primary``: the comparison the report leads with, per size and target: sampled
    scoring where the target has it (greedy rationales turn a template-taught model's
    score into a yes/no), else its own. ``interval``: seeds then patients, or patients
    only where each arm has one seed. A setting with no valid seed is listed with
    ``left_out`` (its reasons) and no figures. Under a reading ``rule`` that reads trained
    positions only, a setting read where its model was never trained to answer (the
    answer-only ablation's rationale) is left out too, with that reason
    (``untrained_position``), and is never primary."""
    arms, every = _arms(rows), _arms(rows, valid_only=False)
    left = _left_out(rows, ("sft",), arms)
    out = []
    for (size, target, scoring), rationale in arms.items():
        if target == "label":
            continue
        label = _label_arm(arms, size)
        if not label:
            why = next((w for (sz, t, _), w in left.items() if sz == size and t == "label"),
                       "no label-only run")
            out.append({"train_size": size, "comparison": f"label vs {target}",
                        "target": target, "scoring": scoring, "label_seeds": [],
                        "rationale_seeds": sorted(rationale), "interval": None,
                        "left_out": f"label-only: {why}"})
            continue
        result, label_seeds, rationale_seeds = _difference(label, rationale, n_resamples,
                                                           seed)
        one_seed = len(label_seeds) == len(rationale_seeds) == 1
        entry = {"train_size": size, "comparison": f"label vs {target}", "target": target,
                 "scoring": scoring, "label_seeds": label_seeds,
                 "rationale_seeds": rationale_seeds,
                 "interval": "patients only (one seed)" if one_seed
                 else "seeds, then patients", "left_out": None, **result}
        # seeds an arm has runs of but the comparison does not use: named, and the
        # comparison again with every run that has predictions (AUROC is still defined)
        label_all = _label_arm(every, size) or label
        rationale_all = every.get((size, target, scoring), rationale)
        entry["dropped"] = [
            {"arm": arm, "seed": s, "why": runs_[s]["invalid_reason"] or "no paired seed"}
            for arm, runs_, used in (("label", label_all, label_seeds),
                                     ("rationale", rationale_all, rationale_seeds))
            for s in sorted(runs_) if s not in used]
        if entry["dropped"]:  # every run of each arm: paired only if their seeds match
            again, a_seeds, b_seeds = _difference(label_all, rationale_all, n_resamples, seed,
                                                  every=True)
            if (a_seeds, b_seeds) != (label_seeds, rationale_seeds):
                entry["with_left_out"] = {**again, "label_seeds": a_seeds,
                                          "rationale_seeds": b_seeds}
        out.append(entry)
    for (size, target, scoring), why in left.items():
        if target != "label":
            out.append({"train_size": size, "comparison": f"label vs {target}",
                        "target": target, "scoring": scoring, "label_seeds": [],
                        "rationale_seeds": [], "interval": None, "left_out": why})
    if rule is not None and rule.trained_positions_only:
        for h in out:
            if h["target"] in TARGETS and not trained_position(h["target"], h["scoring"]):
                h.update(untrained_position=True, left_out=UNTRAINED + (
                    f"; {h['left_out']}" if h["left_out"] else ""))
    own = {(r["train_size"], r["target"]): r["scoring"] for r in rows
           if r["kind"] == "sft" and not r.get("extra_scoring")}
    variants: dict[tuple, set] = {}
    for h in out:
        if not h.get("untrained_position"):
            variants.setdefault((h["train_size"], h["target"]), set()).add(h["scoring"])
    for h in out:
        key = (h["train_size"], h["target"])
        h["primary"] = h["scoring"] == lead_scoring(variants.get(key, ()), own.get(key)) \
            and not h.get("untrained_position")
    return sorted(out, key=lambda h: (h["train_size"] or 0, h["target"], not h["primary"],
                                      h["scoring"]))


def _label_arm(arms: dict[tuple, dict[int, dict]], size) -> dict[int, dict] | None:
    """The label-only runs of one training size, by seed (None: there are none)."""
    return next((s for (sz, t, _), s in arms.items() if sz == size and t == "label"), None)


def _difference(label: dict[int, dict], rationale: dict[int, dict], n_resamples: int,
                seed: int, every: bool = False) -> tuple[dict, list[int], list[int]]:
    """Label-only minus rationale over their shared seeds (paired), or over each arm's
    own seeds when they share none; with the seeds each arm used. ``every``: each arm's
    every seed, paired only when the two arms have the same seeds."""
    shared = sorted(set(label) & set(rationale))
    paired = bool(shared) and (not every or set(label) == set(rationale))
    label_seeds = shared if paired else sorted(label)
    rationale_seeds = shared if paired else sorted(rationale)
    ids, y, _ = _scores(label[label_seeds[0]])
    vectors = []
    for arm, seeds in ((label, label_seeds), (rationale, rationale_seeds)):
        vectors.append([])
        for s in seeds:
            other_ids, _, p = _scores(arm[s])
            if other_ids != ids:
                raise ValueError(f"run {arm[s]['run_id']} was scored on other patients "
                                 "than the run it is compared with; seeds are compared on "
                                 "one test set")
            vectors[-1].append(p)
    result = hierarchical_difference(y, vectors[0], vectors[1], "auroc",
                                     n_resamples=n_resamples, seed=seed,
                                     paired_seeds=paired)
    return result, label_seeds, rationale_seeds


def fewshot_contrasts(rows: list[dict], n_resamples: int, seed: int) -> list[dict]:
    """Few-shot with rationales minus without, per k and selection (the study's second
    finding: rationales help as demonstrations), over the demonstration draws both have
    (paired: draw s shows the same patients' records, with or without their audited
    rationales), then the test patients. The arm with rationales in each of its scorings;
    ``primary``: sampled where it has it (greedy makes its score a yes/no). An arm
    without a valid draw is listed with ``left_out`` and its reasons."""
    groups: dict[tuple, dict[int, dict]] = {}
    every: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["kind"] != "fewshot" or not r["k"] or not r["predictions"]:
            continue
        key = (r["k"], r.get("selection") or "random", bool(r["with_rationales"]),
               r.get("scoring") or ("greedy" if r["with_rationales"] else None))
        every.setdefault(key, {})[r["seed"]] = r
        if r["valid"]:
            groups.setdefault(key, {})[r["seed"]] = r
    out = []
    for (k, selection, with_r, scoring) in sorted(every, key=str):
        if not with_r:
            continue
        entry = {"k": k, "selection": selection, "scoring": scoring, "with_seeds": [],
                 "without_seeds": [], "left_out": None}
        with_arm, without = groups.get((k, selection, True, scoring)), \
            groups.get((k, selection, False, None))
        missing = [(name, key) for name, arm, key in (
            ("with rationales", with_arm, (k, selection, True, scoring)),
            ("without", without, (k, selection, False, None))) if not arm]
        if missing:
            entry["left_out"] = "; ".join(
                f"{name}: " + ("; ".join(dict.fromkeys(
                    str(r["invalid_reason"]) for r in every.get(key, {}).values()))
                    or "no run") for name, key in missing)
        else:
            result, with_seeds, without_seeds = _difference(with_arm, without, n_resamples,
                                                            seed)
            entry.update(result, with_seeds=with_seeds, without_seeds=without_seeds,
                         interval="patients only (one draw)"
                         if len(with_seeds) == len(without_seeds) == 1
                         else "draws, then patients")
            # draws an arm has runs of but the contrast does not use, and why
            entry["dropped"] = [
                {"arm": arm, "seed": s, "why": runs_[s]["invalid_reason"] or "no paired draw"}
                for arm, runs_, used in (
                    ("with rationales", every[(k, selection, True, scoring)], with_seeds),
                    ("without", every[(k, selection, False, None)], without_seeds))
                for s in sorted(runs_) if s not in used]
        out.append(entry)
    scored = {}
    for e in out:
        scored.setdefault((e["k"], e["selection"]), set()).add(e["scoring"])
    for e in out:
        e["primary"] = e["scoring"] == lead_scoring(scored[(e["k"], e["selection"])],
                                                    "greedy")
    return sorted(out, key=lambda e: (e["k"], e["selection"], not e["primary"]))


def _target_lines(rows: list[dict]) -> list[str]:
    """What each SFT target compared above learns (the targets with a summary)."""
    alphas: dict[str, set] = {}
    for r in rows:
        if r["kind"] == "sft" and r["target"] in TARGETS and TARGETS[r["target"]].summary:
            alphas.setdefault(r["target"], set()).add(r.get("align_alpha"))
    if not alphas:
        return []
    return ["", "What each target learns: " + "; ".join(
        f"**{t}**, {TARGETS[t].summary}" + "".join(
            f" (α = {a:g})" for a in sorted(a for a in alphas[t] if a is not None))
        for t in sorted(alphas, key=list(TARGETS).index)) + "."]


def fewshot_draws(e: dict) -> str:
    """The draws a few-shot contrast used (each arm's where they differ), and those it
    left out with why."""
    used = (", ".join(map(str, e["with_seeds"])) if e["with_seeds"] == e["without_seeds"]
            else f"with {', '.join(map(str, e['with_seeds']))}; without "
                 f"{', '.join(map(str, e['without_seeds']))} (unpaired)")
    return (used + (f"; {e['interval']}" if e["interval"].startswith("patients") else "")
            + (" (left out " + "; ".join(f"{d['arm']} draw {d['seed']}: {d['why']}"
                                         for d in e["dropped"]) + ")"
               if e.get("dropped") else ""))


def _fewshot_contrast_lines(contrasts: list[dict]) -> list[str]:
    if not contrasts:
        return []
    lines = ["", "Few-shot: demonstrations with their audited rationales minus the same "
             "demonstrations without them (the study's second finding is that rationales "
             "help here), over the demonstration draws both arms have (the same seed shows "
             "the same patients), then the test patients. **Primary**: the arm with "
             "rationales scored by sampled rationales where it has them.", ""]
    return lines + table(["k", "selection", "with rationales scored by", "draws",
                          "difference (with − without) [95% CI]", "p"], (
        [e["k"], e["selection"], e["scoring"] + (" (primary)" if e["primary"] else ""),
         "–" if e["left_out"] else fewshot_draws(e),
         f"left out: {e['left_out']}" if e["left_out"] else
         f"{e['value']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]",
         "–" if e["left_out"] else f"{e['p']:.3g}"] for e in contrasts))


def dropped_text(h: dict) -> str:
    """The seeds a headline comparison left out, and the comparison with them."""
    if not h.get("dropped"):
        return ""
    names = "; ".join(f"{d['arm']} seed {d['seed']}: {d['why']}" for d in h["dropped"])
    again = h.get("with_left_out")
    return (f"left out {names}" + (
        f"; with them: {again['value']:+.3f} [{again['low']:+.3f}, {again['high']:+.3f}] "
        f"over label seeds {', '.join(map(str, again['label_seeds']))} and rationale seeds "
        f"{', '.join(map(str, again['rationale_seeds']))}"
        + ("" if again["paired_seeds"] else ", unpaired") if again else ""))


def _chosen_with(rows: list[dict]) -> str:
    """The caveat of a grid whose later seeds reuse the first seed's tuning choice (their
    ``tuned_on`` names that seed); nothing where no cell was tuned that way."""
    seeds = sorted({str(r["tuned_on"]).rsplit(", seed ", 1)[1] for r in rows
                    if r["kind"] == "sft" and ", seed " in str(r.get("tuned_on") or "")})
    if not seeds:
        return ""
    return (f"Seed {' and '.join(seeds)} is the seed the learning rate and epochs were "
            "chosen with (the best of the candidates on validation); the other seeds reuse "
            "that choice, so it may carry a small selection advantage of its own. ")


def observed_spread(targets: list[dict], heads: list[dict]) -> str:
    """The seed SD of test AUROC of each target the headline leads with (its primary
    scoring) and of label-only: how this report's seeds spread, beside the spread the
    coverage simulation assumed."""
    primary = {(h["train_size"], h["target"], h["scoring"]) for h in heads if h["primary"]}
    sizes = {t["train_size"] for t in targets if not _is_fewshot(t)}
    parts = [f"{t['target']} ({t['scoring']}"
             + (f", {t['train_size'] or 'all'} patients" if len(sizes) > 1 else "")
             + f") {t['sd_auroc']:.3f}" for t in targets
             if t["sd_auroc"] is not None and not _is_fewshot(t)
             and (t["target"] == "label"
                  or (t["train_size"], t["target"], t["scoring"]) in primary)]
    return ("This report's seeds spread with an AUROC SD of " + "; ".join(parts) + " (the "
            "simulation's rationale arm: 0.06, its label-only arm: 0.004). "
            if parts else "")


def degenerate_rule(rows: list[dict], max_one_answer_share: float) -> list[str]:
    """The degenerate rule as applied, and the runs a rule on the share of patients said
    yes to (P(yes) ≥ 0.5) would also leave out: the rule's reading, made visible."""
    high, low = max_one_answer_share, 1 - max_one_answer_share
    sizes = {r["train_size"] for r in rows if r["kind"] == "sft"}
    also = [r for r in rows if r["kind"] in ("sft", "fewshot") and r["valid"]
            and r.get("scoring") != "sampled"  # there the share is the mean the rule reads
            and r.get("yes_rate") is not None
            and not low - TOLERANCE <= r["yes_rate"] <= high + TOLERANCE]
    lines = ["", f"Degenerate runs: a run whose mean P(yes) over the test patients (under "
             f"sampled scoring, the share of its sampled answers that say yes) is above "
             f"{high:.0%} or below {low:.0%} is left out of the comparisons of that "
             "scoring. The mean, not the share of patients it says yes for at P(yes) ≥ 0.5 "
             "(the \"says yes for\" column): a graded P(yes) that sits on one side of 0.5 "
             "for everyone is a calibration offset its AUROC still ranks through; after a "
             "written conclusion the two agree, P(yes) being nearly 0 or 1."]
    if also:
        lines[-1] += (" A rule on that share would also leave out: " + "; ".join(
            f"{r['target']} ({_setting(r)[2]}, "
            + (f"{r['train_size'] or 'all'} patients, "
               if len(sizes) > 1 and r["kind"] == "sft" else "")
            + f"seed {r['seed']}, says yes for "
            f"{r['yes_rate']:.0%}, mean P(yes) {r['mean_p_yes']:.2f})" for r in also)
            + " (each kept here).")
    else:
        lines[-1] += " A rule on that share would leave out no other run."
    return lines


def tuning_lines(selection: dict | None) -> list[str]:
    """Each tuned cell's candidates, their validation scores and the choice; a cell that
    reuses the first seed's choice is named by it."""
    cells = [c for c in (selection or {}).get("cells", [])
             if len(c.get("candidate_scores") or []) > 1]
    if not cells:
        return []
    reused = sorted({str(c.get("tuned_on")).rsplit(", seed ", 1)[1]
                     for c in (selection or {}).get("cells", [])
                     if ", seed " in str(c.get("tuned_on") or "")})
    lines = ["", "Tuning: each target's candidates, scored on validation (the scoring named "
             "in `tuned on`; valid candidates rank before invalid ones)."
             + (f" Later seeds reuse the choice of seed {' and '.join(reused)}." if reused
                else " Each seed listed chose on its own."), ""]
    lines += table(["training patients", "target", "seed", "tuned on", "candidates (lr × "
                    "epochs: validation AUROC)", "chosen"], (
        [c.get("train_size") or "all", c["target"], c["seed"], c.get("tuned_on") or "–",
         "; ".join(f"{s['learning_rate']:g} × {s['epochs']:g}: "
                   + (number(s["validation_auroc"]) if s["validation_auroc"] is not None
                      else "no score") + ("" if s["valid"] else " (invalid)")
                   for s in c["candidate_scores"]),
         f"{c['learning_rate']:g} × {c['epochs']:g}"] for c in cells))
    values = {"learning_rate": set(), "epochs": set()}
    for c in cells:
        for s in c["candidate_scores"]:
            values["learning_rate"].add(s["learning_rate"])
            values["epochs"].add(s["epochs"])
    searched = {k: sorted(v) for k, v in values.items() if len(v) > 1}
    if searched and all(len(v) == 2 for v in searched.values()):
        lines += ["", "Each setting tuned was searched over two values ("
                  + "; ".join(f"{k.replace('_', ' ')} {', '.join(f'{x:g}' for x in v)}"
                              for k, v in searched.items())
                  + "), so every choice lies at an edge of what was searched: the tuning "
                  "cannot show that a setting outside that range would not do better."]
    elif searched:
        edges = [c for c in cells if any(
            c[key] in (v[0], v[-1]) for key, v in searched.items()
            if key in c and len(v) > 2)]
        if edges:
            lines += ["", f"{len(edges)} of {len(cells)} choices lie at an edge of a setting "
                      "searched over more than two values (its lowest or highest): the tuning "
                      "cannot show that a setting outside that range would not do better."]
    return lines


def section(rows: list[dict], n_resamples: int, seed: int,
            rule: ReadingRule | None = None, selection: dict | None = None,
            max_one_answer_share: float = 0.95) -> tuple[list[str], dict]:
    """Markdown lines and data of the seed-level section (``rule``: the grid's
    pre-registered reading rule, if it states one; ``selection``: the grid's choices,
    for the tuning table)."""
    targets, heads = by_target(rows), headline(rows, n_resamples, seed, rule)
    fewshot = fewshot_contrasts(rows, n_resamples, seed)
    lines = ["", "## Seeds as the unit", "",
             "Label-only minus each other SFT target: the mean over seeds of each arm's test "
             "AUROC, with a 95% interval from a bootstrap that draws the seeds (the same seed "
             "numbers for both arms: a seed is one training-patient draw and one "
             "initialisation), then the test patients. This is the headline; the tables after "
             "it give each seed. **Primary**: sampled rationales where the target has them "
             "(greedy ones make the score a yes/no; a filler model: its filler written in, "
             "prefilled), else the target's own scoring; the other scorings are beside "
             "it.", "",
             "What the interval can and cannot say: with S seeds a replicate draws one of "
             "only C(2S − 1, S) seed multisets (10 for 3 seeds), so the seed part of the "
             "interval reaches little past the seeds' observed range, even scaled to their "
             "unbiased variance. In simulation (200 test patients, the design of "
             "`training/seed_coverage.py`) it covered the true difference about "
             "94% of the time with 3 seeds when the seeds spread as the cpu scale's "
             "rationale runs did, and 87% when they spread twice as much: where seeds "
             "differ a lot, 3 seeds understate the uncertainty; with 2 seeds (3 multisets) "
             "94% and 81%. " + observed_spread(targets, heads) + _chosen_with(rows)
             + "A seed left out of a comparison (a run degenerate or without its answers) "
             "takes its pair with it; the comparison with every run included is given "
             "beside it.", ""]

    def scored_by(h: dict) -> str:
        return h["scoring"] + (" (primary)" if h["primary"] else "")

    lines += table(["training patients", "comparison", "that target scored by", "seeds",
                    "difference (label − that target) [95% CI]", "p"], (
        [h["train_size"] or "all", h["comparison"], scored_by(h),
         ", ".join(map(str, h["rationale_seeds"])) or "none valid" if h["left_out"] else
         ", ".join(map(str, h["rationale_seeds"])) + ("" if h["paired_seeds"] else
                                                      " (unpaired)")
         + (f"; {h['interval']}" if h["interval"].startswith("patients") else "")
         + (f" ({dropped_text(h)})" if h.get("dropped") else ""),
         f"left out: {h['left_out']}" if h["left_out"] else
         f"{h['value']:+.3f} [{h['low']:+.3f}, {h['high']:+.3f}]",
         "–" if h["left_out"] else f"{h['p']:.3g}"]
        for h in heads) if heads else [["–", "–", "–", "–", "no valid pair of arms", "–"]])
    lines += _target_lines(rows)
    lines += _fewshot_contrast_lines(fewshot)
    lines += ["", "Per target, over seeds (valid runs only; balanced accuracy when each run "
              "says yes for as many patients as there are positives):", ""]
    lines += table(["training patients", "target", "scoring", "seeds", "mean AUROC", "SD",
                    "balanced accuracy, matched yes-rate"], (
        [t["train_size"] or ("–" if _is_fewshot(t) else "all"),
         t["target"], t["scoring"],
         len(t["seeds"]) if len(t["seeds"]) == t["runs"]
         else f"{len(t['seeds'])} of {t['runs']} valid",
         f"none valid: {t['left_out']}" if t["left_out"] else number(t["mean_auroc"]),
         number(t["sd_auroc"]), number(t["mean_balanced_accuracy_matched"])]
        for t in targets))
    per_seed = sorted((r for r in rows if r["kind"] in ("sft", "fewshot")),
                      key=lambda r: (r["kind"] == "fewshot", *map(str, _setting(r)),
                                     r["seed"]))
    lines += ["", "Per seed (few-shot: per demonstration draw):", ""]
    lines += table(["training patients", "target", "scoring", "seed", "lr × epochs",
                    "test AUROC", "says yes for", "mean P(yes)",
                    "balanced accuracy, matched", "left out because"], (
        [size or ("–" if r["kind"] == "fewshot" else "all"), target, scoring, r["seed"],
         f"{r['learning_rate']:g} × {r['epochs']:g}"
         if r.get("learning_rate") is not None and r.get("epochs") is not None else "–",
         number((r["auroc"] or {}).get("value")), number(r.get("yes_rate"), 2),
         number(r.get("mean_p_yes"), 2),
         number(r.get("balanced_accuracy_matched")), r["invalid_reason"] or ""]
        for r in per_seed for size, target, scoring in [_setting(r)]))
    lines += degenerate_rule(rows, max_one_answer_share)
    lines += tuning_lines(selection)
    return lines, {"headline": heads, "targets": targets, "fewshot": fewshot}
