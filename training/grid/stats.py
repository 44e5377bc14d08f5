"""The grid report's statistics, from collected rows (:mod:`.results`); no database.

Label-only against every other target on the same cells: paired DeLong tests per cell
(Holm adjusted), one joint paired bootstrap over all cells, and means over seeds.

Under a reading rule that reads models only where they were trained to answer
(``trained_positions_only``), a row scored where its model was never trained to answer
(:func:`training.reading_rule.trained_position`: the answer-only ablation's rationale, a
rationale model scored direct) is left out of these comparisons too, not only of the
rule's contrasts; :func:`untrained_note` says so once.
"""

import numpy as np

from training import runs
from training.evaluate import read_predictions
from training.grid.results import ResultRow
from training.metrics import delong_test, holm, joint_paired_difference
from training.reading_rule import ReadingRule, trained_position

CELL = ("base_model", "train_size", "seed", "lora_r")


def cell_of(row: ResultRow) -> dict:
    return {k: getattr(row, k) for k in CELL}


def _aligned(reference: ResultRow, other: ResultRow):
    """Two rows' predictions on their common patients (:func:`training.runs.paired`)."""
    return runs.paired(read_predictions(reference.predictions),
                       read_predictions(other.predictions), reference.run_id, other.run_id)


def untrained(row: ResultRow, rule: ReadingRule | None) -> bool:
    """Whether ``rule`` reads trained positions only and ``row`` is scored where its
    model was never trained to answer."""
    return bool(rule and rule.trained_positions_only and row.kind == "sft" and row.scoring
                and not trained_position(row.target, row.scoring))


def untrained_note(rows: list[ResultRow], rule: ReadingRule | None) -> str | None:
    """The one sentence that says which valid rows the comparisons leave out under
    ``rule`` and why (None when none is)."""
    left = sorted({(r.target, r.scoring) for r in rows
                   if r.predictions and r.valid and untrained(r, rule)})
    if not left:
        return None
    return ("Left out of the comparisons with label-only (DeLong, joint and secondary "
            "readings), as the grid's reading rule reads models only where they were "
            "trained to answer: " + ", ".join(f"{t} scored {s}" for t, s in left)
            + " (each read where its model was never trained to answer).")


def label_pairs(rows: list[ResultRow], rule: ReadingRule | None = None
                ) -> list[tuple[ResultRow, ResultRow]]:
    """(label-only run, rationale run) of the same cell, both valid and scored; under a
    rule that reads trained positions only, no run scored where it was never trained to
    answer (:func:`untrained`)."""
    sft = [r for r in rows if r.kind == "sft" and r.predictions and r.valid
           and not untrained(r, rule)]
    labels = {tuple(cell_of(r).values()): r for r in sft if r.target == "label"}
    return [(labels[tuple(cell_of(r).values())], r) for r in sft
            if r.target != "label" and tuple(cell_of(r).values()) in labels]


def comparisons(rows: list[ResultRow], rule: ReadingRule | None = None) -> list[dict]:
    """Paired DeLong tests, label-only vs each valid rationale run per matched cell, Holm
    adjusted. Runs marked invalid are left out (see :func:`excluded`), and under ``rule``
    runs scored where they were never trained to answer (:func:`untrained_note`)."""
    out = []
    for ref, r in label_pairs(rows, rule):
        _, y, a, b = _aligned(ref, r)
        if len(set(y.tolist())) < 2:
            continue
        test = delong_test(y, a, b)
        out.append({**cell_of(r), "comparison": f"label vs {r.target}",
                    "scoring": r.scoring, "auroc_label": test.auc1, "auroc_rationale": test.auc2,
                    "difference": test.difference, "ci_low": test.ci_low,
                    "ci_high": test.ci_high, "z": test.z, "p_value": test.p_value,
                    "label_run": ref.run_id, "rationale_run": r.run_id})
    for row, adjusted in zip(out, holm([r["p_value"] for r in out]), strict=True):
        row["p_holm"] = adjusted
    return out


def excluded(rows: list[ResultRow]) -> list[ResultRow]:
    return [r for r in rows if not r.valid]


def joint_differences(rows: list[ResultRow], n_resamples: int, seed: int,
                      rule: ReadingRule | None = None) -> list[dict]:
    """Label-only minus each rationale target over all its valid cells at once, from one
    patient-level bootstrap shared by the cells (they share one test set); under
    ``rule``, as :func:`label_pairs` leaves out."""
    by_target: dict[str, list[tuple[ResultRow, ResultRow]]] = {}
    for ref, r in label_pairs(rows, rule):
        by_target.setdefault(r.target, []).append((ref, r))
    out = []
    for target, pairs in sorted(by_target.items()):
        aligned = [_aligned(ref, r) for ref, r in pairs]
        ids, y = aligned[0][0], aligned[0][1]
        if any(a[0] != ids for a in aligned):
            raise runs.RunError(f"label vs {target}: the cells were not scored on the same "
                                "patients; the joint bootstrap needs one test set")
        result = joint_paired_difference(y, [(a, b) for _, _, a, b in aligned], "auroc",
                                         n_resamples=n_resamples, seed=seed)
        out.append({"comparison": f"label vs {target}", "target": target, **result,
                    "cells": [cell_of(r) for _, r in pairs]})
    return out


def cell_summary(rows: list[ResultRow], refs: list[dict]) -> list[dict]:
    """Mean ± SD of test AUROC over seeds, per target (and reference model) and size."""
    groups: dict[tuple, list[float]] = {}
    scorings: dict[str, str] = {}
    sft = [r for r in rows if r.kind == "sft"]
    several = len({(r.base_model, r.lora_r) for r in sft}) > 1
    for r in sft:
        if r.auroc and r.auroc.get("value") is not None:
            name = r.target + (f" [{r.base_model}, r={r.lora_r}]" if several else "") \
                + ("" if r.valid else " (invalid)")
            groups.setdefault((name, r.train_size), []).append(r.auroc["value"])
            scorings[name] = r.scoring or "–"
    for ref in refs:
        groups.setdefault((f"reference: {ref['model']}", ref["train_size"]), []).append(
            ref["auroc"]["value"])
    return [{"setting": name, "scoring": scorings.get(name, "–"), "train_size": size,
             "seeds": len(values),
             "mean_auroc": float(np.mean(values)),
             "sd_auroc": float(np.std(values, ddof=1)) if len(values) > 1 else None}
            for (name, size), values in sorted(groups.items(), key=lambda g: (g[0][1] or 0,
                                                                               g[0][0]))]


def summary_by_target(rows: list[ResultRow]) -> list[dict]:
    """Mean test AUROC/AUPRC over seeds and sizes per SFT target and few-shot setting."""
    groups: dict[str, list[ResultRow]] = {}
    for r in rows:
        name = r.target if r.kind == "sft" else (
            f"few-shot k={r.k} {'with' if r.with_rationales else 'without'} rationales"
            + (f", {r.selection} demonstrations" if r.k and r.selection not in (None, "random")
               else ""))
        groups.setdefault(name + ("" if r.valid else " (invalid)"), []).append(r)
    out = []
    for name, members in groups.items():
        aurocs = [m.auroc["value"] for m in members if m.auroc and m.auroc["value"]
                  is not None]
        auprcs = [m.auprc["value"] for m in members if m.auprc and m.auprc["value"]
                  is not None]
        out.append({"setting": name,
                    "scoring": (members[0].scoring or "–") if members[0].kind == "sft"
                    else (members[0].scoring or ("its rationale, greedy"
                                                 if members[0].with_rationales else "direct")),
                    "runs": len(members),
                    "mean_auroc": float(np.mean(aurocs)) if aurocs else None,
                    "sd_auroc": float(np.std(aurocs, ddof=1)) if len(aurocs) > 1 else None,
                    "mean_auprc": float(np.mean(auprcs)) if auprcs else None})
    return out
