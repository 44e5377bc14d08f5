"""The grid report's files from collected rows (:mod:`.results`); no database.

``results.csv`` and ``results.md`` (one row per run: factors, AUROC/AUPRC/Brier with
CIs, dataset version hash, run folder), ``comparisons.csv`` (paired DeLong, label-only
vs each rationale format, Holm adjusted), ``predictions.csv`` (every scored patient),
``auroc_by_size.png`` and ``summary.json``.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np

from training import seed_report
from training.evaluate import read_predictions
from training.grid.config import ExperimentGrid
from training.grid.results import RESUMED, ResultRow, first_commit
from training.grid.stats import (
    cell_summary,
    comparisons,
    excluded,
    joint_differences,
    summary_by_target,
    untrained_note,
)
from training.tables import format_metric, number, table

COLUMNS = ["kind", "base_model", "target", "scoring", "train_size", "seed", "lora_r",
           "learning_rate",
           "epochs", "tuned_on", "k", "with_rationales", "selection", "n_test", "auroc",
           "auprc", "brier", "balanced_accuracy", "balanced_accuracy_matched", "yes_rate",
           "mean_p_yes", "reached_answer_share", "mean_label_mass", "valid", "invalid_reason",
           "rationale_token_cap", "truncated_train_rows", "truncated_test_prompts",
           "precision", "padding_share", "trained_under", "train_draw", "run_id", "dataset_version",
           "dataset_sha256", "run_dir"]
PREDICTION_COLUMNS = ["run_id", "kind", "target", "scoring", "train_size", "seed", "k",
                      "with_rationales", "id", "label", "p_yes"]
METRICS = ("auroc", "auprc", "brier", "balanced_accuracy")


def write(grid: ExperimentGrid, every_row: list[ResultRow], refs: list[dict], selection: dict,
          out: Path) -> dict:
    """Every file of the report in ``out``; returns what :func:`training.grid.report`
    returns (rows as dicts, as its callers read them)."""
    from training import mechanism

    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in every_row if not r.extra_scoring]  # each cell's own scoring
    # the rule bound to this grid's scoring settings now (what its runs were made under,
    # grid.preregistration()), whatever copy of the grid carried it here
    rule = grid.reading.with_scoring(grid.scoring_settings()) if grid.reading else None
    tests = comparisons(rows, rule)
    evaluation = grid.evaluate_config("test")
    n_resamples = max(evaluation.n_bootstrap, 2000)
    joint = joint_differences(rows, n_resamples=n_resamples, seed=evaluation.seed,
                              rule=rule)
    _write_results(every_row, out)
    _write_comparisons(tests, out / "comparisons.csv")
    write_predictions(every_row, refs, out / "predictions.csv")
    figure = write_figure(rows, refs, out / "auroc_by_size.png")
    cells = cell_summary(rows, refs)
    every_dict = [r.as_dict() for r in every_row]
    seed_lines, seed_data = seed_report.section(every_dict, n_resamples, evaluation.seed,
                                                rule, selection,
                                                evaluation.max_one_answer_share)
    text = markdown(grid, rows, tests, joint, cells, refs, figure, lead=seed_lines,
                    every_row=every_row)
    mechanism_data = None
    if mechanism.applies(grid):
        lines, mechanism_data = mechanism.section(every_dict, out, n_resamples, evaluation.seed,
                                                  rule)
        text += "\n".join(lines) + "\n"
    text += failed_section(selection.get("failed"))
    (out / "results.md").write_text(text)
    refs_brief = [{k: v for k, v in r.items() if k not in ("ids", "labels", "p_yes")}
                  for r in refs]
    summary = {"rows": len(rows), "comparisons": len(tests), "joint": joint,
               "references": refs_brief, "cells": cells, "figure": figure,
               "excluded": [{"run_id": r.run_id, "scoring": r.scoring,
                             "reason": r.invalid_reason} for r in excluded(every_row)],
               "mechanism": mechanism_data, "seeds": seed_data, "selection": selection}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return {"folder": str(out), "rows": [r.as_dict() for r in rows], "all_rows": every_dict,
            "comparisons": tests,
            "joint": joint, "seeds": seed_data, "references": refs_brief, "cells": cells,
            "selection": selection, "mechanism": mechanism_data}


def failed_section(failed: list[dict] | None) -> str:
    """The report's list of failed cells (empty when none failed)."""
    if not failed:
        return ""
    return ("\n## Failed cells\n\nLeft out of every table above (a failed scoring of a run "
            "that finished: that scoring only); re-run the grid once the cause is fixed "
            "(finished runs and scorings are reused).\n\n" + "".join(
                f"- {describe_failed(f)}: {f['error']}\n" for f in failed))


def describe_failed(factors: dict) -> str:
    """A failed cell as a reader tells it from the others: an SFT cell by target, size
    and seed; a few-shot run by k, its demonstrations, their selection and draw."""
    if factors.get("kind") == "fewshot":
        return (f"few-shot k={factors.get('k')} "
                f"{'with' if factors.get('with_rationales') else 'without'} rationales, "
                + ("no demonstrations" if factors.get("k") == 0
                   else f"{factors.get('selection') or 'random'} selection")
                + f", seed {factors.get('seed')}"
                + (f", its {factors['scoring']} scoring only (the run and its own scoring "
                   "are in the tables)" if factors.get("scoring") else ""))
    return (f"{factors.get('target')}, size {factors.get('train_size') or 'all'}, seed "
            f"{factors.get('seed')}")


def _write_results(every_row: list[ResultRow], out: Path) -> None:
    """``results.csv``: every row, metrics as value, low, high; run folders relative."""
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS + [f"{m}_{b}" for m in
                                                   ("auroc", "auprc", "brier")
                                                   for b in ("low", "high")],
                                extrasaction="ignore")
        writer.writeheader()
        for row in every_row:
            flat = dict(row.as_dict(), run_dir=os.path.relpath(row.run_dir, out))
            for m in METRICS:
                metric = getattr(row, m) or {}
                flat[m] = metric.get("value")
                flat[f"{m}_low"], flat[f"{m}_high"] = metric.get("low"), metric.get("high")
            writer.writerow(flat)


def _write_comparisons(tests: list[dict], path: Path) -> None:
    with path.open("w", newline="") as handle:
        if tests:
            writer = csv.DictWriter(handle, list(tests[0]))
            writer.writeheader()
            writer.writerows(tests)


def write_predictions(rows: list[ResultRow], refs: list[dict], path: Path) -> None:
    """Every scored patient of every run and reference, P(yes) at full precision."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, PREDICTION_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            if not r.predictions:
                continue
            for pid, (label, p) in read_predictions(r.predictions).items():
                writer.writerow({**r.as_dict(), "id": pid, "label": label, "p_yes": repr(p)})
        for ref in refs:
            for pid, label, p in zip(ref["ids"], ref["labels"], ref["p_yes"], strict=True):
                writer.writerow({"run_id": "", "kind": "reference",
                                 "target": ref["model"], "train_size": ref["train_size"],
                                 "seed": ref["seed"], "id": pid, "label": label,
                                 "p_yes": repr(float(p))})


def write_figure(rows: list[ResultRow], refs: list[dict], path: Path) -> bool:
    """``auroc_by_size.png``: test AUROC by training-set size per target and reference;
    False (no file) when no valid SFT run has an AUROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sft = [r for r in rows if r.kind == "sft" and r.valid and r.auroc and r.auroc["value"]]
    if not sft:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = sorted({r.train_size or 0 for r in sft})
    series = [(t, [(r.train_size or 0, r.auroc) for r in sft if r.target == t], "-")
              for t in sorted({r.target for r in sft})]
    series += [(f"{m} (reference)", [(r["train_size"] or 0, r["auroc"]) for r in refs
                                     if r["model"] == m], "--")
               for m in sorted({r["model"] for r in refs})]
    for offset, (name, members, style) in enumerate(series):
        _plot_series(ax, sizes, offset, len(series), name, members, style)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    if len(sizes) > 1 and min(sizes) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("training patients")
    ax.set_ylabel("test AUROC, own scoring (mean over seeds; bars: mean 95% CI)")
    ax.set_title("AUROC by target and training-set size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _plot_series(ax, sizes: list[int], offset: int, n_series: int, name: str,
                 members: list[tuple[int, dict]], style: str) -> None:
    """One target's (or reference's) seeds as dots and their mean with its mean CI,
    shifted a little sideways so the series do not hide each other."""
    xs, means, lows, highs = [], [], [], []
    for size in sizes:
        cell = [auroc for s, auroc in members if s == size]
        if not cell:
            continue
        shift = 1 + 0.04 * (offset - n_series / 2)
        xs.append(size * shift if size else offset)
        means.append(float(np.mean([c["value"] for c in cell])))
        lows.append(float(np.mean([c["low"] if c["low"] is not None else c["value"]
                                   for c in cell])))
        highs.append(float(np.mean([c["high"] if c["high"] is not None else c["value"]
                                    for c in cell])))
        ax.scatter([xs[-1]] * len(cell), [c["value"] for c in cell], alpha=0.25, s=10)
    ax.errorbar(xs, means, yerr=[np.subtract(means, lows), np.subtract(highs, means)],
                marker="o", capsize=3, label=name, ls=style)


def _describe(row: ResultRow) -> str:
    if row.kind == "sft":
        return f"{row.target}, size {row.train_size or 'all'}, seed {row.seed}"
    return (f"few-shot k={row.k} {'with' if row.with_rationales else 'without'} "
            f"rationales, " + ("no demonstrations" if row.k == 0
                               else f"{row.selection or 'random'} selection")
            + f", seed {row.seed}")


def markdown(grid: ExperimentGrid, rows: list[ResultRow], tests: list[dict],
             joint: list[dict], cells: list[dict], refs: list[dict], figure: bool,
             lead: list[str] | None = None, every_row: list[ResultRow] | None = None) -> str:
    """``results.md`` before its mechanism section: ``lead`` (the seed-level section,
    the headline) first, then the tables of each run in its own scoring."""
    lines = [f"# Experiment `{grid.name}`", "",
             f"Dataset version **{grid.dataset}** (sha256 `{rows[0].dataset_sha256}`)."
             if rows else ""]
    lines += lead or []
    lines += ["", "## Each run in its own scoring (secondary)", "", _own_scoring_note(rows),
              "", "## Summary (mean over seeds and sizes)", ""]
    lines += table(["setting", "scored by", "runs", "mean AUROC", "SD", "mean AUPRC"], (
        [s["setting"], s["scoring"], s["runs"], number(s["mean_auroc"]),
         number(s["sd_auroc"]), number(s["mean_auprc"])] for s in summary_by_target(rows)))
    lines += ["", "## Per cell: test AUROC, mean ± SD over seeds", ""]
    lines += table(["setting", "scored by", "training patients", "seeds", "mean AUROC",
                    "SD"], (
        [c["setting"], c["scoring"], c["train_size"] or "all", c["seeds"],
         f"{c['mean_auroc']:.3f}", number(c["sd_auroc"])] for c in cells))
    lines += _joint_lines(joint)
    lines += _validity_lines(every_row if every_row is not None else rows)
    lines += _reference_lines(refs)
    if figure:
        lines += ["", "![AUROC by target and training-set size](auroc_by_size.png)"]
    lines += _sft_lines(rows)
    lines += _delong_lines(tests)
    note = untrained_note(rows, grid.reading)  # reads trained_positions_only alone
    if note:
        lines += ["", note]
    lines += _fewshot_lines(every_row if every_row is not None else rows)
    return "\n".join(lines) + "\n"


def _own_scoring_note(rows: list[ResultRow]) -> str:
    """What the sections after the headline read: each SFT target's own scoring, test
    patients as the only sampling."""
    own = dict.fromkeys(f"{r.target}: {r.scoring}" for r in rows
                        if r.kind == "sft" and r.scoring)
    return ("The tables of this part, from here to the Mechanism section where there is "
            "one, score each run its own way ("
            + ("; ".join(own) if own else "no SFT run")
            + "; few-shot runs by their answer's probability), and their intervals cover "
            "the sampling of test patients only. Where a target's primary scoring differs "
            "(sampled rationales), the seed-level section above is the result; these "
            "tables are a secondary reading and can differ from it a good deal (a greedy "
            "rationale's score is nearly a yes/no).")


def _joint_lines(joint: list[dict]) -> list[str]:
    lines = ["", "## Label-only vs rationale SFT over all cells (joint paired bootstrap)", "",
             "Each replicate resamples the test patients once (stratified by label) and "
             "recomputes every cell's AUROC difference on them; the cells share one test "
             "set, so they are not independent evidence.", ""]
    return lines + table(["comparison", "cells", "mean AUROC difference (label − rationale) "
                          "[95% CI]", "p"], (
        [j["comparison"], j["pairs"], f"{j['difference']:+.3f} [{j['low']:+.3f}, "
         f"{j['high']:+.3f}]", f"{j['p_value']:.3g}"] for j in joint)
        if joint else [["–", 0, "no valid pair of runs", "–"]])


def _validity_lines(rows: list[ResultRow]) -> list[str]:
    """Runs left out (each scoring of a run on its own: a run can be left out of the
    comparisons of one scoring and kept in another's), truncation and training
    precision."""
    bad = excluded(rows)
    lines = ["", "## Validity", ""]
    if bad:
        lines += ["Runs left out of the comparisons of the scoring named (the seed-level "
                  "section and the tables of that scoring):", ""]
        lines += [f"- run {r.run_id} ({_describe(r)})"
                  + (f", scored {r.scoring}" if r.scoring else "") + f": {r.invalid_reason}"
                  for r in bad]
    else:
        lines.append("Every run reached its answer line in at least the required share of "
                     "test patients and none was degenerate, in every scoring; none was "
                     "left out.")
    sft = list({r.run_id: r for r in rows if r.kind == "sft"}.values())  # once per run
    truncation: dict[str, list[int]] = {}
    for r in sft:
        truncation.setdefault(r.target, []).append(r.truncated_train_rows or 0)
    if truncation:
        lines += ["", "Training rows whose history lost lines to `max_length` (per run): "
                  + "; ".join(f"{t}: {', '.join(map(str, v))}" for t, v in truncation.items())
                  + ". Test prompts truncated by the same rule: "
                  + "; ".join(f"{r.target} run {r.run_id}: {r.truncated_test_prompts}"
                              for r in sft if r.truncated_test_prompts)
                  + ("" if any(r.truncated_test_prompts for r in sft) else "none") + "."]
    padding = [r.padding_share for r in sft if r.padding_share is not None]
    precisions = sorted({r.precision for r in sft if r.precision})
    if padding:
        lines += ["", f"Training precision: {', '.join(precisions)}; padding share of the "
                      f"training batches (grouped by length): {min(padding):.1%}–"
                      f"{max(padding):.1%}."]
    code = {r.run_id: r.trained_under for r in sft if r.trained_under}
    if code:
        begun = {run: first_commit(c) for run, c in code.items()}
        unknown = sum(b is None for b in begun.values())
        commits = {b for b in begun.values() if b is not None}
        moved = sum(RESUMED in c for run, c in code.items() if begun[run] is not None)
        lines += ["", f"Code the {len(code)} trained runs were trained under (`trained_under` "
                      f"in results.csv): {_count(len(commits), 'commit')} began "
                      + ("them" if not unknown else f"the {len(code) - unknown} whose first "
                         "commit is known")
                      + (f"; {_count(moved, 'run')} resumed under other code" if moved else "")
                      + (f"; {_count(unknown, 'run')} resumed before a run kept the commit "
                         "that began it" if unknown else "") + "."]
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _reference_lines(refs: list[dict]) -> list[str]:
    if not refs:
        return []
    lines = ["", "## Reference models (same training and test patients as each cell)", ""]
    lines += table(["model", "training patients", "seed", "AUROC", "AUPRC",
                    "balanced accuracy, matched yes-rate"], (
        [r["model"], r["train_size"] or "all", r["seed"], format_metric(r["auroc"]),
         format_metric(r["auprc"]), number(r.get("balanced_accuracy_matched"))]
        for r in refs))
    return lines + ["", "`structured`: logistic regression on age, sex, APOE ε4 count, "
                        "education, family history and indicators of every coded risk factor "
                        "and possible prodrome in the full record (the ceiling). `tfidf`: "
                        "logistic regression on the prompt's history text. `age`: logistic "
                        "regression on age alone (the floor)."]


def _sft_lines(rows: list[ResultRow]) -> list[str]:
    lines = ["", "## SFT runs (test split; 95% bootstrap CIs)", ""]
    return lines + table(["target", "scored by", "size", "seed", "r", "lr", "epochs",
                          "tuned on", "AUROC", "AUPRC", "Brier", "reached answer", "cap",
                          "valid", "run"], (
        [r.target, r.scoring or "–", r.train_size or "all", r.seed, r.lora_r,
         f"{r.learning_rate:g}",
         f"{r.epochs:g}", r.tuned_on or "–", format_metric(r.auroc), format_metric(r.auprc),
         format_metric(r.brier), number(r.reached_answer_share, 2),
         r.rationale_token_cap or "–", "yes" if r.valid else "no",
         f"`{Path(r.run_dir).name}`"]
        for r in rows if r.kind == "sft"))


def _delong_lines(tests: list[dict]) -> list[str]:
    lines = ["", "## Paired DeLong tests per cell: label-only vs every other target "
                 "(Holm adjusted over all of them)", ""]
    return lines + table(["comparison", "that target scored by", "size", "seed",
                          "AUROC label", "AUROC that target", "difference [95% CI]", "p",
                          "p (Holm)"], (
        [t["comparison"], t.get("scoring") or "–", t["train_size"] or "all", t["seed"],
         f"{t['auroc_label']:.3f}",
         f"{t['auroc_rationale']:.3f}", f"{t['difference']:+.3f} [{t['ci_low']:+.3f}, "
         f"{t['ci_high']:+.3f}]", f"{t['p_value']:.3g}", f"{t['p_holm']:.3g}"]
        for t in tests))


def _fewshot_lines(rows: list[ResultRow]) -> list[str]:
    lines = ["", "## Few-shot (base model, demonstrations from the fewshot_pool)", ""]
    return lines + table(["k", "demonstrations", "selection", "scored by", "seed", "AUROC",
                          "AUPRC", "reached answer", "says yes for", "mean P(yes)", "valid",
                          "run"], (
        [r.k, f"{'with' if r.with_rationales else 'without'} rationales",
         "none (zero-shot)" if r.k == 0 else r.selection or "random",
         r.scoring or ("its rationale, greedy" if r.with_rationales else "direct"), r.seed,
         format_metric(r.auroc), format_metric(r.auprc),
         number(r.reached_answer_share, 2), number(r.yes_rate, 2), number(r.mean_p_yes, 2),
         "yes" if r.valid else f"no: {r.invalid_reason}", f"`{Path(r.run_dir).name}`"]
        for r in rows if r.kind == "fewshot"))
