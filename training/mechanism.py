"""The report's "Mechanism" section: why rationale SFT predicts worse, if it does.

Every SFT target and scoring variant of the grid is tabulated against label-only
on one test set, with the 95% CI its reading rule names (``interval``): the test
patients jointly over the cells (the first report's), or the seeds, then the patients
(:func:`training.seed_level.hierarchical_difference`, as the main comparison's
headline). Then *contrasts* — pairs of settings that differ in one thing — test what
each explanation predicts:

- **dilution** (longer targets leave the answer token a smaller share of the
  gradient): label-only beats length-matched filler; up-weighting the answer
  recovers the rationale target;
- **loss shift** (the next-token loss goes to rationale tokens): putting the loss on
  the answer only, or up-weighting it, recovers the rationale target;
- **narrative vs discriminative** (the study's): shuffling the rationale's words —
  same content, no narrative — helps;
- **format** (writing first biases the answer): answering first, or scoring the
  same model directly, beats generate-then-score.

Two targets teach a completion with nothing to finish, filler (``label-padded``) and
shuffled words (``rationale-shuffled``); their contrasts read them *forced*
(:mod:`training.forced_reading`; docs/reproduction.md gives the rule and why). The
same contrasts read direct instead (``ALTERNATIVES``) are reported beside them, and
each explanation's reading says when they would change it.

An explanation is *supported* when every contrast it predicts is shown in its
direction (95% CI excludes 0), *partly supported* when some are and none goes the
other way, *contradicted* when one goes the other way, *open* otherwise. A reading
whose shown contrasts are all predicted by another explanation too says it is not told
apart from that one; a contrast that lost a seed names it. Under a rule that draws its
intervals over seeds, then patients, a contrast left with one seed is shown (its CI over
the patients only) but counts toward no reading: the rule promised training variance in
every interval, and one seed has none to draw. Under a rule whose sides must learn
(``sides_must_learn``), a contrast is read only when each side's seed-mean test AUROC over
the contrast's cells has a 95% interval above 0.5 (:func:`side_auroc`, drawn as the
difference's is); otherwise it is listed unread, naming the side, its AUROC and interval.
The section never says more than that; a CI that includes 0 is no evidence of no effect.
"""

import json
from pathlib import Path

import numpy as np

from training import forced_reading
from training.forced_reading import FORCED
from training.reading_rule import POST_HOC, SIDE_SCORINGS, ReadingRule
from training.targets import TARGETS

CELL = ("base_model", "train_size", "seed", "lora_r")
LABEL = ("label", "direct")
# The rule of the first mechanism report (set after its grid ran): what a grid without a
# pre-registered ``reading:`` is read with (training/reading_rule.py).
CONTRASTS = {name: (tuple(c.a), tuple(c.b), c.what) for name, c in POST_HOC.contrasts.items()}
FORCED_TARGETS = frozenset(key[0] for a, b, _ in CONTRASTS.values() for key in (a, b)
                           if key[1] == FORCED)
ALTERNATIVES = POST_HOC.alternatives
EXPLANATIONS = POST_HOC.explanations


def applies(grid) -> bool:
    """Whether a grid has this section: a mechanism ablation target, or a reading rule of
    its own. A grid that only scores its models more ways (the cpu scale's sampled
    rationales) has none: its seed-level section reads those scorings, and a post-hoc
    rule has nothing to read there."""
    return bool(grid.sft) and (any(TARGETS[t].ablation and TARGETS[t].derived
                                   for t in grid.sft.targets)
                               or grid.reading is not None)


def _key(row: dict) -> tuple[str, str]:
    return row["target"], row["scoring"]


def _difference(aligned: list[tuple], interval: str, n_resamples: int, seed: int) -> dict:
    """AUROC(a) − AUROC(b) over the cells both sides have (``aligned``: one (ids, labels,
    a, b) per cell, on the same patients), its 95% CI drawn as ``interval`` says: the
    patients jointly over the cells, or seeds then patients (each cell one seed)."""
    from training.metrics import joint_paired_difference
    from training.seed_level import hierarchical_difference

    y = aligned[0][1]
    if interval == "patients" or len(aligned) == 1:
        result = joint_paired_difference(y, [(a, b) for _, _, a, b in aligned], "auroc",
                                         n_resamples=n_resamples, seed=seed)
        return {**result, "interval": "patients" if interval == "patients"
                else "patients only (one seed)"}
    result = hierarchical_difference(y, [a for _, _, a, _ in aligned],
                                     [b for _, _, _, b in aligned], "auroc",
                                     n_resamples=n_resamples, seed=seed)
    return {"difference": result["value"], "low": result["low"], "high": result["high"],
            "p_value": result["p"], "pairs": len(aligned), "n": int(len(y)),
            "interval": interval}


def side_auroc(aligned_scores: list, y, interval: str, n_resamples: int, seed: int) -> dict:
    """One side's mean test AUROC over the cells a contrast reads (``aligned_scores``: its
    score vector in each cell, on the patients of ``y``) with a 95% interval drawn as the
    contrast's difference is: under ``seeds-then-patients`` (two cells or more) the seeds,
    then the patients (:func:`training.seed_level.hierarchical_contrast` of the one arm,
    the headline's statistic); else the patients alone, jointly over the cells (each cell
    weighted 1/k, one bootstrap of the patients shared by every cell)."""
    from training.seed_level import hierarchical_contrast

    if interval == "seeds-then-patients" and len(aligned_scores) > 1:
        groups, drawn = [[(1.0, list(aligned_scores))]], "seeds-then-patients"
    else:
        k = len(aligned_scores)
        groups, drawn = [[(1.0 / k, [a]) for a in aligned_scores]], "patients"
    result = hierarchical_contrast(y, groups, "auroc", n_resamples=n_resamples, seed=seed)
    return {"auroc": result["value"], "low": result["low"], "high": result["high"],
            "cells": len(aligned_scores), "interval": drawn}


def _did_not_learn(sides: dict[str, dict]) -> str:
    """Why a contrast is not read under ``sides_must_learn`` ('' when both learned)."""
    return "; ".join(
        f"{side} has not shown it learned: seed-mean test AUROC {s['auroc']:.3f} "
        f"[{s['low']:.3f}, {s['high']:.3f}] over {s['cells']} cell(s), its 95% interval "
        "not above 0.5" for side, s in sides.items() if not s["low"] > 0.5)


def settings(rows: list[dict], n_resamples: int, seed: int,
             interval: str = "patients", rule: ReadingRule | None = None) -> list[dict]:
    """Every (target, scoring) with its mean AUROC and the paired difference label-only −
    it over the cells both have (its CI drawn as ``interval`` says). Under a rule that
    reads trained positions only, a setting read where its model was not trained to
    answer is marked so (``untrained_position``): tabulated, read in no contrast."""
    from training.reading_rule import trained_position
    from training.tables import align

    sft = [r for r in rows if r["kind"] == "sft" and r["predictions"] and r["valid"]]
    labels = {tuple(r[k] for k in CELL): r for r in sft if _key(r) == LABEL}
    out = []
    for key in sorted({_key(r) for r in sft}, key=lambda k: (list(TARGETS).index(k[0]), k[1])):
        members = [r for r in sft if _key(r) == key]
        entry = {"target": key[0], "scoring": key[1], "runs": len(members),
                 "mean_auroc": float(np.mean([m["auroc"]["value"] for m in members])),
                 "auroc": members[0]["auroc"] if len(members) == 1 else None,
                 "sd_auroc": float(np.std([m["auroc"]["value"] for m in members], ddof=1))
                 if len(members) > 1 else None, "vs_label": None,
                 "untrained_position": bool(rule and rule.trained_positions_only
                                            and key[1] in SIDE_SCORINGS
                                            and not trained_position(*key))}
        pairs = [(labels[c], m) for m in members if (c := tuple(m[k] for k in CELL)) in labels]
        if key != LABEL and pairs:
            aligned = _same_patients([align(a, b) for a, b in pairs], "/".join(key))
            entry["vs_label"] = _difference(aligned, interval, n_resamples, seed)
        out.append(entry)
    invalid = [r for r in rows if r["kind"] == "sft" and not r["valid"]]
    for r in invalid:
        out.append({"target": r["target"], "scoring": r["scoring"], "runs": 1,
                    "mean_auroc": None, "auroc": None, "sd_auroc": None, "vs_label": None,
                    "invalid": r["invalid_reason"]})
    return out


def _same_patients(aligned: list[tuple], what: str) -> list[tuple]:
    from training.runs import RunError

    if any(a[0] != aligned[0][0] for a in aligned):
        raise RunError(f"{what}: the cells were not scored on the same patients; the joint "
                       "bootstrap needs one test set")
    return aligned


def contrasts(rows: list[dict], n_resamples: int, seed: int,
              rule: ReadingRule = POST_HOC) -> list[dict]:
    """Each contrast whose two settings were both run (valid), over the cells both have,
    its CI drawn as the rule's ``interval`` says. Under ``sides_must_learn`` each side's
    AUROC interval is drawn too (``sides``), and a contrast a side of which has not shown
    it learned carries why (``not_learned``): it is read in no reading and listed unread
    (:func:`not_learned`)."""
    from training.tables import align

    every = [r for r in rows if r["kind"] == "sft"]
    sft = [r for r in every if r["predictions"] and r["valid"]]
    out = []
    for name, contrast in rule.contrasts.items():
        a_key, b_key, what = tuple(contrast.a), tuple(contrast.b), contrast.what
        a = {tuple(r[k] for k in CELL): r for r in sft if _key(r) == a_key}
        b = {tuple(r[k] for k in CELL): r for r in sft if _key(r) == b_key}
        cells = sorted(set(a) & set(b), key=str)
        if not cells:
            continue
        aligned = _same_patients([align(a[c], b[c]) for c in cells], name)
        result = _difference(aligned, rule.interval, n_resamples, seed)
        sign = 1 if result["low"] > 0 else -1 if result["high"] < 0 else 0
        sides = {"/".join(key): side_auroc([cell[i] for cell in aligned], aligned[0][1],
                                           rule.interval, n_resamples, seed)
                 for key, i in ((a_key, 2), (b_key, 3))} if rule.sides_must_learn else None
        out.append({"contrast": name, "a": "/".join(a_key), "b": "/".join(b_key),
                    "what": what, "forced": FORCED in (a_key[1], b_key[1]),
                    **{k: result[k] for k in ("difference", "low", "high", "p_value",
                                              "pairs", "n", "interval")},
                    "shown": sign,
                    "left_out": _left_out(every, (a_key, b_key), set(cells)),
                    "sides": sides,
                    "not_learned": _did_not_learn(sides) if sides else ""})
    return out


def learned(found: list[dict]) -> list[dict]:
    """The contrasts read: those none of whose sides failed to learn."""
    return [c for c in found if not c.get("not_learned")]


def not_learned(found: list[dict]) -> list[dict]:
    """The contrasts computed but not read because a side has not shown it learned,
    as :func:`unread` lists them."""
    return [{"contrast": c["contrast"], "reason": c["not_learned"], "sides": c["sides"]}
            for c in found if c.get("not_learned")]


def _left_out(rows: list[dict], sides: tuple, kept: set) -> list[dict]:
    """The cells a contrast ran but could not read (a side invalid there, or without
    test predictions), with why: the seed a contrast lost is named beside it, not only
    in the settings table."""
    out = []
    for r in rows:
        cell = tuple(r[k] for k in CELL)
        if _key(r) in sides and cell not in kept and not (r["valid"] and r["predictions"]):
            out.append({"seed": r["seed"], "side": "/".join(_key(r)),
                        "why": str(r.get("invalid_reason")) if not r["valid"]
                        else "no test predictions"})
    return sorted(out, key=lambda d: (str(d["seed"]), d["side"]))


def _left_out_text(contrast: dict) -> str:
    return "; ".join(f"seed {d['seed']} left out ({d['side']}: {d['why']})"
                     for d in contrast.get("left_out") or [])


def unread(rows: list[dict], found: list[dict], rule: ReadingRule = POST_HOC) -> list[dict]:
    """Each contrast whose two settings were both run but not both valid, and why."""
    sft = [r for r in rows if r["kind"] == "sft" and r["predictions"]]
    done = {c["contrast"] for c in found}
    out = []
    for name, contrast in rule.contrasts.items():
        a_key, b_key = tuple(contrast.a), tuple(contrast.b)
        sides = {key: [r for r in sft if _key(r) == key] for key in (a_key, b_key)}
        if name in done or not all(sides.values()):
            continue
        reasons = [f"{'/'.join(key)}: "
                   + "; ".join(dict.fromkeys(str(m["invalid_reason"]) for m in members))
                   for key, members in sides.items() if not any(m["valid"] for m in members)]
        out.append({"contrast": name, "reason": "; ".join(reasons) or
                    "no cell has both settings valid"})
    return out


def counts(contrast: dict, rule: ReadingRule) -> bool:
    """Whether a contrast counts toward a reading: under ``seeds-then-patients`` it
    needs two seeds or more (one seed's interval has no training variance in it), and
    under ``sides_must_learn`` both its sides must have shown they learned."""
    return ((rule.interval != "seeds-then-patients" or contrast["pairs"] >= 2)
            and not contrast.get("not_learned"))


def _verdict(tested: list[dict], predicted: list[str], one_seed: bool = False,
             unlearned: bool = False) -> str:
    if not tested:
        if unlearned:
            return ("not tested (a side of its contrasts has not shown it learned: its "
                    "AUROC interval is not above 0.5)")
        if one_seed:
            return ("not tested (its contrasts kept one seed; the rule reads seeds, then "
                    "patients)")
        return "not tested (its contrasts were not run, or a setting they compare was invalid)"
    if any(c["shown"] < 0 for c in tested):
        return "contradicted"
    if all(c["shown"] > 0 for c in tested) and len(tested) == len(predicted):
        return "supported"
    if any(c["shown"] > 0 for c in tested):
        return "partly supported"
    return "open (no predicted difference shown)"


def readings(found: list[dict], rule: ReadingRule = POST_HOC) -> list[dict]:
    """Each explanation: supported, partly supported, contradicted, open or not tested;
    and, where reading its contrasts direct (``ALTERNATIVES``) would say otherwise, that."""
    every = {c["contrast"]: c for c in found}
    by_name = {name: c for name, c in every.items() if counts(c, rule)}
    # a side that has not shown it learned: listed unread, counted in no reading
    unlearned_names = {name for name, c in every.items() if c.get("not_learned")}
    # read over one seed's patients (only seeds-then-patients falls back so): shown, not
    # counted
    one_seed_names = every.keys() - by_name.keys() - unlearned_names
    out = []
    for explanation, predicted in rule.explanations.items():
        tested = [by_name[p] for p in predicted if p in by_name]
        one_seed = [p for p in predicted if p in one_seed_names]
        unlearned = [p for p in predicted if p in unlearned_names]
        verdict = _verdict(tested, predicted, bool(one_seed), bool(unlearned))
        swapped = [rule.alternatives.get(p, p) for p in predicted]
        other = _verdict([by_name[p] for p in swapped if p in by_name], swapped,
                         any(p in one_seed_names for p in swapped),
                         any(p in unlearned_names for p in swapped))
        used = [p for p in swapped if p in by_name and p not in predicted]
        shown = [c["contrast"] for c in tested if c["shown"] > 0]
        out.append({"explanation": explanation, "predicts": predicted,
                    "tested": [c["contrast"] for c in tested], "reading": verdict,
                    "untested": [p for p in predicted if p not in every],
                    "forced": [c["contrast"] for c in tested if c["forced"]],
                    "not_told_apart": _sharing(explanation, shown, rule, by_name)
                    if verdict in ("supported", "partly supported") else [],
                    "one_seed": one_seed, "not_learned": unlearned,
                    "direct_reading": {"contrasts": used, "reading": other,
                                       "same": other == verdict} if used else None})
    return out


def _sharing(explanation: str, shown: list[str], rule: ReadingRule,
             by_name: dict[str, dict]) -> list[str]:
    """The other explanations that predict every contrast shown for ``explanation``, and
    that no contrast contradicts: a reading resting only on contrasts they share does not
    tell it from them (one contradicted is told apart already)."""
    if not shown:
        return []
    return [other for other, predicted in rule.explanations.items()
            if other != explanation and all(c in predicted for c in shown)
            and not any(by_name[c]["shown"] < 0 for c in predicted if c in by_name)]


def diagnostics(rows: list[dict]) -> list[dict]:
    """Per SFT run: the last logged answer-loss share, the last probe gradient share and
    the direct validation AUROC after each epoch (from ``metrics.jsonl``)."""
    out = []
    seen = set()
    for r in rows:
        if r["kind"] != "sft" or r["run_id"] in seen:
            continue
        seen.add(r["run_id"])
        lines = _metrics(Path(r["run_dir"]))
        shares = [(m["step"], m["answer_loss_share"]) for m in lines if "answer_loss_share" in m]
        probes = [m["probe_answer_grad_share"] for m in lines
                  if m.get("probe_answer_grad_share") is not None]
        epochs = [m["validation_auroc_direct"] for m in lines if "validation_auroc_direct" in m]
        out.append({"run_id": r["run_id"], "target": r["target"], "seed": r["seed"],
                    "answer_loss_share": shares, "final_answer_loss_share":
                        shares[-1][1] if shares else None,
                    "final_grad_share": probes[-1] if probes else None,
                    "validation_auroc_by_epoch": epochs,
                    "answer_weight_share": r.get("answer_weight_share")})
    return out


def _metrics(folder: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (folder / "metrics.jsonl").read_text()
                .splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def figure(diags: list[dict], path: Path) -> bool:
    """The answer tokens' share of the loss over training, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for d in diags:  # a log window of explain rows only has no answer token: no share
        d["answer_loss_share"] = [(s, v) for s, v in d["answer_loss_share"] if v > 0]
    runs = [d for d in diags if d["answer_loss_share"]]
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {t: f"C{i}" for i, t in enumerate(sorted({d["target"] for d in runs}))}
    labelled = set()
    for d in runs:
        steps, shares = zip(*d["answer_loss_share"], strict=True)
        ax.plot(steps, shares, color=colours[d["target"]], alpha=0.8,
                label=None if d["target"] in labelled else d["target"])
        labelled.add(d["target"])
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("answer tokens' share of the loss")
    ax.set_title("Where the loss falls, per target")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _ci(entry: dict | None) -> str:
    if not entry:
        return "–"
    one_seed = "; patients only (one seed)" if str(entry.get("interval", "")).startswith(
        "patients only") else ""
    return f"{entry['difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}]{one_seed}"


def _direct_note(alternative: dict | None) -> str:
    if not alternative:
        return ""
    said = "the same" if alternative["same"] else alternative["reading"]
    return f" Read with {', '.join(alternative['contrasts'])} instead: {said}."


INTERVALS = {"patients": "joint paired bootstrap of the test patients over the cells both "
                         "have",
             "seeds-then-patients": "bootstrap of the seeds both have, then of the test "
                                    "patients, so training variance is counted"}


def markdown(entries: list[dict], found: list[dict], missing: list[dict], reads: list[dict],
             diags: list[dict], has_figure: bool, forced: list[dict],
             interval: str = "patients") -> list[str]:
    from training.tables import format_metric, number, table

    lines = ["", "## Mechanism", "",
             "Every target and scoring variant against label-only on the same test patients "
             f"(difference label-only − setting; 95% CI from a {INTERVALS[interval]}; the "
             "contrasts below alike). Targets are defined in `training/targets.py`."
             + (" With two seeds the seed draw has three outcomes: in the seed section's "
                "simulation such an interval covered the true difference 94% of the time "
                "when seeds spread as the cpu scale's rationale runs did and 81% at twice "
                "that spread." if interval == "seeds-then-patients"
                and any(c["pairs"] == 2 for c in found) else ""), ""]
    lines += table(["target", "scoring", "runs", "AUROC", "label − setting [95% CI]", "p"], (
        [t["target"], t["scoring"] + (" (not where it was trained to answer; in no "
                                      "contrast)" if t.get("untrained_position") else ""),
         t["runs"],
         t.get("invalid") and f"invalid: {t['invalid']}" or (
             format_metric(t["auroc"]) if t["auroc"] else
             f"{t['mean_auroc']:.3f} ± {t['sd_auroc']:.3f}" if t["sd_auroc"] is not None
             else f"{t['mean_auroc']:.3f}"),
         _ci(t["vs_label"]), f"{t['vs_label']['p_value']:.3g}" if t["vs_label"] else "–"]
        for t in entries))
    lines += forced_reading.table(forced)
    lines += ["", "### Contrasts (AUROC of the first minus the second)", ""]
    lines += table(["contrast", "what differs", "difference [95% CI]", "p", "cells"], (
        [c["contrast"], c["what"], f"{c['difference']:+.3f} [{c['low']:+.3f}, "
         f"{c['high']:+.3f}]", f"{c['p_value']:.3g}",
         f"{c['pairs']}" + ("; patients only (one seed); counted in no reading"
                            if c.get("interval", "").startswith("patients only") else "")
         + (f"; {_left_out_text(c)}" if c.get("left_out") else "")]
        for c in found)
        if found else [["–", "no contrast had both settings valid", "–", "–", 0]])
    lines += [""] * bool(missing) + [f"- not read: **{c['contrast']}** ({c['reason']})"
                                     for c in missing]
    lines += ["", "### What the contrasts say about each explanation", ""]
    lines += [f"- **{r['explanation']}** (predicts a positive "
              f"{', '.join(r['predicts'])}): {r['reading']}"
              + (f"; {', '.join(r['forced'])} read from forced answers" if r["forced"] else "")
              + (f"; {', '.join(r['untested'])} not read"
                 if r["untested"] and (r["tested"] or r.get("one_seed")) else "")
              + (f"; {', '.join(r['one_seed'])} read on one seed (patients only), not "
                 "counted: the rule reads seeds, then patients" if r.get("one_seed") else "")
              + (f"; {', '.join(r['not_learned'])} not read: a side has not shown it "
                 "learned (see above)" if r.get("not_learned") else "")
              + (f"; not told apart from {' or '.join(r['not_told_apart'])}, which "
                 "predict(s) every contrast shown here too" if r.get("not_told_apart")
                 else "")
              + "." + _direct_note(r["direct_reading"]) for r in reads]
    lines += ["", "A reading is only as strong as its contrasts: with one test set and few "
              "seeds, a CI that includes 0 cannot tell a small effect from none, and a shown "
              "difference is for this cohort, teacher and model.", "",
              "### Training diagnostics", ""]
    lines += table(["target", "seed", "answer share of loss weight", "answer share of loss "
                     "(last log)", "answer share of gradient norm (last probe)",
                     "validation AUROC by epoch (direct)"], (
        [d["target"], d["seed"], number(d["answer_weight_share"], 4),
         number(d["final_answer_loss_share"], 4), number(d["final_grad_share"], 4),
         ", ".join(f"{v:.3f}" for v in d["validation_auroc_by_epoch"]) or "–"]
        for d in diags))
    if has_figure:
        lines += ["", "![Answer tokens' share of the loss](mechanism_loss_share.png)"]
    return lines


def section(rows: list[dict], out: Path, n_resamples: int, seed: int,
            rule: ReadingRule | None = None) -> tuple[list[str], dict]:
    """The section's Markdown lines and its data (for ``summary.json``). ``rule``: the
    grid's pre-registered reading rule (every run checked to be made under it); None:
    the post-hoc rule of the first report."""
    from training.reading_rule import check_runs

    check_runs(rows, rule)  # without a rule: refuses runs that were made under one
    used = rule or POST_HOC
    forced_targets = frozenset(side[0] for c in used.contrasts.values()
                               for side in (c.a, c.b) if side[1] == FORCED)
    forced = forced_reading.forced_rows(rows, forced_targets)
    every = rows + forced
    entries = settings(every, n_resamples, seed, used.interval, used)
    found = contrasts(every, n_resamples, seed, used)
    missing = unread(every, found, used) + not_learned(found)
    reads = readings(found, used)
    found = learned(found)  # a contrast a side of which has not learned is listed unread
    diags = diagnostics(rows)
    has_figure = figure(diags, out / "mechanism_loss_share.png")
    data = {"settings": [{k: v for k, v in t.items() if k != "auroc"} for t in entries],
            "forced": [{k: r.get(k) for k in forced_reading.SUMMARY_KEYS} for r in forced],
            "contrasts": found, "unread_contrasts": missing, "readings": reads,
            "reading_rule": {"hash": used.preregistration(), "rule": used.digest(),
                             "pre_registered": rule is not None,
                             "interval": used.interval,
                             "sides_must_learn": used.sides_must_learn,
                             "amends": list(used.amends)},
            "diagnostics": [{k: v for k, v in d.items() if k != "answer_loss_share"}
                            for d in diags]}
    lines = markdown(entries, found, missing, reads, diags, has_figure, forced, used.interval)
    if rule is not None:
        lines += ["", f"Pre-registration `{used.preregistration()[:12]}` (reading rule "
                  f"`{used.digest()[:12]}` and how each side is scored: the grid's "
                  "evaluation settings, extra scorings and who gets them): stated in the "
                  "grid's config before its runs, and in each run's identity."
                  + (" Contrasts are read only where each side learned (its AUROC "
                     "interval above 0.5)." if used.sides_must_learn else "")]
        lines += [f"- Rule amended after runs existed: earlier digest `{a[:12]}` (runs of "
                  "these cells had been finished under it; they were not read, and these "
                  "runs were made again under this pre-registration)." for a in used.amends]
    else:
        lines += ["", f"Reading rule `{used.digest()[:12]}`: the first report's, set after "
                  "its grid ran (not pre-registered); a grid states its own under "
                  "`reading:`."]
    return lines, data
