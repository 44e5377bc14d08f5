"""Two reproductions scored on the same test patients, side by side: how each setting's
seed-level test AUROC moved from report A to report B, and how each rationale target's
gap to label-only moved.

The question is the balanced teacher's (``docs/reproduction.md``): the ``cpu`` and
``cpu-balanced`` scales train one grid on one cohort, with the template teacher's
rationales in one and the balanced teacher's in the other. The change in "label-only
minus a rationale target" between them is the part of that target's loss that goes with
the teacher. The comparison reads two report folders as they are committed
(``results.csv`` and ``predictions.csv``), so it can be recomputed from the repository
alone.

* every setting (training size, target, scoring; a few-shot setting by its
  demonstration selection) in both reports: ``mean_s AUROC_B − mean_s AUROC_A``;
* every rationale target with label-only in both: ``(label − target)_B − (label −
  target)_A``, the difference of the two reports' headline gaps.

Both come from :func:`training.seed_level.hierarchical_contrast`. Each replicate draws
the test patients once for both reports, since they are the same patients. It draws the
seeds once for both reports where seed s trained on the same patients in both, run for
run (``train_draw`` in results.csv: the cpu and cpu-balanced versions approve the same
patients, so their draws agree), and each report's seeds on their own otherwise (older
reports, or other patients). Within a report, label-only and the target keep the seed
pairing of that report's own headline. A run its report marked invalid, or whose mean
P(yes) is outside the degenerate bounds, is left out and named with its reason.
Reports whose runs were scored on different patients or labels are refused, naming the
run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from annotation_db.errors import UserError
from annotation_db.provenance import echo_config, file_sha256, portable_path
from training.evaluate_config import lead_scoring
from training.grid.results import first_commit
from training.seed_level import degenerate, hierarchical_contrast
from training.tables import format_difference, number, table

REPORT_FILES = ("results.csv", "predictions.csv")


class ComparisonError(UserError):
    """Two reports that cannot be compared, or a folder that is not a report."""


def read_report(folder: str | Path, max_one_answer_share: float = 0.95
                ) -> dict[tuple, dict[int, dict]]:
    """A report folder's LLM runs by setting, then by seed. Each run holds its test
    patients (sorted), their labels and P(yes), and ``left_out``: why it takes no part
    (None when it does)."""
    folder = Path(folder)
    for name in REPORT_FILES:
        if not (folder / name).is_file():
            raise ComparisonError(f"{folder} is not a report folder: it has no {name} (write "
                                  "one with `experiment reproduce` or `experiment report`)")
    scores: dict[tuple, dict[str, tuple[int, float]]] = {}
    with (folder / "predictions.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["kind"], row["run_id"], row["scoring"] or "")
            scores.setdefault(key, {})[row["id"]] = (int(row["label"]), float(row["p_yes"]))
    settings: dict[tuple, dict[int, dict]] = {}
    own: dict[tuple, str] = {}  # a run's first row is its own scoring, then its extras
    with (folder / "results.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] not in ("sft", "fewshot"):
                continue
            key, seed = _setting(row), int(row["seed"])
            if seed in settings.get(key, {}):
                raise ComparisonError(
                    f"{folder / 'results.csv'} has two runs of {setting_name(key)}, seed "
                    f"{seed}: a run is known by its training size, target, scoring and "
                    "seed here, so a grid of several base models or LoRA ranks cannot be "
                    "compared")
            run = _run(row, scores.get((row["kind"], row["run_id"], row["scoring"] or "")),
                       max_one_answer_share)
            run["own"] = own.setdefault((row["kind"], row["run_id"]), row["scoring"]) \
                == row["scoring"]
            settings.setdefault(key, {})[seed] = run
    return settings


def _setting(row: dict) -> tuple:
    """(kind, training size, target, scoring): what a run's seeds are seeds of. A few-shot
    run's seed is its demonstration draw, and its "scoring" is its selection (zero-shot
    for k = 0) and the scoring where it is not its own (sampled)."""
    if row["kind"] == "fewshot":  # results.csv's strings: "" where a row has no value
        k = row.get("k")
        name = "zero-shot" if k not in (None, "") and int(float(k)) == 0 \
            else row.get("selection") or "random"
        return ("fewshot", None, row["target"],
                name + (f", {row['scoring']}" if row.get("scoring") else ""))
    size = row["train_size"]
    return ("sft", int(size) if size else None, row["target"], row["scoring"])


def setting_name(key: tuple) -> str:
    kind, size, target, scoring = key
    if kind == "fewshot":
        return f"{target} ({scoring})"
    return f"{target} ({scoring}, {'all' if size is None else size} patients)"


def _run(row: dict, predictions: dict | None, share: float) -> dict:
    run = {"run_id": row["run_id"], "ids": None, "y": None, "p": None, "left_out": None,
           "draw": row.get("train_draw") or None, "code": row.get("trained_under") or None}
    if predictions:
        ids = sorted(predictions)
        run.update(ids=ids, y=np.array([predictions[i][0] for i in ids]),
                   p=np.array([predictions[i][1] for i in ids], dtype=float))
    if row.get("valid") == "False":
        run["left_out"] = row.get("invalid_reason") or "marked invalid by its report"
    elif not predictions:
        run["left_out"] = "no predictions in its report"
    else:
        run["left_out"] = degenerate(run["p"], low=1 - share, high=share,
                                     sampled=row["scoring"] == "sampled")
    return run


def _patients(a: dict, b: dict) -> tuple[list[str], np.ndarray]:
    """The test patients and labels every scored run of both reports shares."""
    scored = [(report, key, seed, run) for report, settings in (("A", a), ("B", b))
              for key, seeds in settings.items() for seed, run in seeds.items()
              if run["ids"] is not None]
    if not scored:
        raise ComparisonError("neither report has predictions to compare")
    first_report, _, _, first = scored[0]
    for report, key, seed, run in scored[1:]:
        if run["ids"] != first["ids"] or not np.array_equal(run["y"], first["y"]):
            raise ComparisonError(
                f"report {report}'s run {run['run_id']} ({setting_name(key)}, seed {seed}) "
                f"was scored on other patients or labels than report {first_report}'s run "
                f"{first['run_id']}; the comparison needs one test set")
    return first["ids"], first["y"]


def compare(folder_a: str | Path, folder_b: str | Path, n_resamples: int = 2000,
            seed: int = 0, max_one_answer_share: float = 0.95) -> dict:
    """Every setting in both reports (B − A) and every rationale target's gap to
    label-only (its B − A), with the settings only one report has."""
    a = read_report(folder_a, max_one_answer_share)
    b = read_report(folder_b, max_one_answer_share)
    ids, y = _patients(a, b)
    shared = sorted((k for k in a if k in b), key=_order)
    primary = _primary(shared, {k for k in shared if any(r["own"] for r in a[k].values())})
    changes = [{**_change(key, a[key], b[key], y, n_resamples, seed),
                "primary": key in primary and key[0] == "sft"} for key in shared]
    gaps = []
    for key in shared:
        label = _label_key(key, a, b)
        if key[0] == "sft" and key[2] != "label" and label:
            gaps.append({**_gap(key, label, a, b, y, n_resamples, seed),
                         "primary": key in primary})
    return {"patients": len(ids), "positives": int(y.sum()), "n_resamples": n_resamples,
            "label_code": _label_code(a, b),
            "code_recorded": {name: any(run["code"] for key, seeds in report.items()
                                        if key[0] == "sft" for run in seeds.values())
                              for name, report in (("a", a), ("b", b))},
            "seed": seed, "max_one_answer_share": max_one_answer_share,
            "views": same_views(folder_a, folder_b), "changes": changes, "gaps": gaps,
            "only_in_a": [setting_name(k) for k in sorted(a.keys() - b.keys(), key=_order)],
            "only_in_b": [setting_name(k) for k in sorted(b.keys() - a.keys(), key=_order)]}


def _label_code(a: dict, b: dict) -> list[dict]:
    """Label-only seeds both reports compare whose runs were not shown to be trained
    under the same code (``trained_under`` differs: another commit began or resumed one
    of them; or a first commit is unknown; or the tree was uncommitted, ``+dirty``):
    their change between the reports is training noise under two versions of the
    training code, not under one. Reports without the column name none."""
    out = []
    for key in sorted((k for k in a if k in b and k[0] == "sft" and k[2] == "label"),
                      key=_order):
        for seed in sorted(_used(a[key]).keys() & _used(b[key]).keys()):
            code_a, code_b = (r[key][seed]["code"] for r in (a, b))
            if code_a and code_b and (code_a != code_b or first_commit(code_a) is None
                                      or "+dirty" in code_a):
                out.append({"setting": setting_name(key), "seed": seed, "a": code_a,
                            "b": code_b})
    return out


def same_views(folder_a: str | Path, folder_b: str | Path) -> dict | None:
    """Which of the two dataset versions' views hold the same rows, file for file (the
    views' hashes in each report's ``reproduce.json``); None where a report does not
    record them (not written by ``experiment reproduce``, or before 2026-12-07)."""
    hashes = []
    for folder in (folder_a, folder_b):
        path = Path(folder) / "reproduce.json"
        views = (json.loads(path.read_text()).get("dataset") or {}).get("views") \
            if path.is_file() else None
        if not views:
            return None
        hashes.append(views)
    a, b = hashes
    return {"same": sorted(v for v in a if b.get(v) == a[v]),
            "different": sorted(v for v in a.keys() | b.keys() if a.get(v) != b.get(v))}


def _order(key: tuple):
    kind, size, target, scoring = key
    return (kind != "sft", size or 0, target != "label", target, scoring)


def _primary(keys: list[tuple], own: set[tuple]) -> set[tuple]:
    """Per SFT size and target, the scoring its comparison leads with, as in the
    reports' headline (:func:`training.seed_report.headline`): the first of the primary
    variants it has, else its own scoring (``own``: the settings scored the way their
    runs score by default; the grid's extra scorings are not)."""
    by_target: dict[tuple, list[tuple]] = {}
    for key in keys:
        by_target.setdefault(key[:3], []).append(key)
    chosen = set()
    for group in by_target.values():
        scorings = {k[3]: k for k in group}
        own_scoring = next((k[3] for k in group if k in own), None)
        chosen.add(scorings.get(lead_scoring(scorings, own_scoring)))
    return chosen


def _label_key(key: tuple, a: dict, b: dict) -> tuple | None:
    """Label-only's setting at ``key``'s training size, when both reports have it."""
    return next((k for k in a if k[0] == "sft" and k[1] == key[1] and k[2] == "label"
                 and k in b), None)


def _used(seeds: dict[int, dict]) -> dict[int, np.ndarray]:
    return {s: run["p"] for s, run in sorted(seeds.items()) if not run["left_out"]}


def _same_draws(*arms: tuple[dict[int, dict], dict[int, np.ndarray]]) -> bool:
    """Whether the arms (each: its runs by seed, and the seeds it uses) use the same seeds
    and, seed by seed, trained on the same patients (``train_draw`` in results.csv, on
    every run): their seeds can then be drawn together across the two reports."""
    seeds = {tuple(used) for _, used in arms}
    if len(seeds) != 1 or not next(iter(seeds)):
        return False
    return all(len({runs[s]["draw"] for runs, _ in arms}) == 1
               and all(runs[s]["draw"] for runs, _ in arms) for s in next(iter(seeds)))


def _left(report: str, arm: str, seeds: dict[int, dict]) -> list[dict]:
    return [{"report": report, "arm": arm, "seed": s, "why": run["left_out"]}
            for s, run in sorted(seeds.items()) if run["left_out"]]


def _interval(result: dict, seeds: dict[str, list[list[int]]], together: bool = False
              ) -> dict:
    """The figures, and what the interval draws: a report whose every arm has one seed
    adds no seed-level spread, so an interval over it is patients only there (narrower
    than the seed level would make it). ``together``: the two reports' seeds were drawn
    as one (seed s trained on the same patients in both)."""
    figures = {k: result[k] for k in ("value", "low", "high", "p")}
    single = [report for report, arms in seeds.items() if all(len(s) == 1 for s in arms)]
    if len(single) == len(seeds):
        what = "patients only (one seed each)"
    elif single:
        what = (f"seeds, then patients; {' and '.join(single)}: one seed, so its seed "
                "spread is not in the interval (too narrow)")
    else:
        what = "seeds, then patients"
    if together and len(single) != len(seeds):
        what += " (seeds paired across the reports: same training patients)"
    return {**figures, "interval": what}


def _change(key: tuple, seeds_a: dict, seeds_b: dict, y: np.ndarray, n_resamples: int,
            seed: int) -> dict:
    """``mean_s AUROC_B − mean_s AUROC_A`` of one setting: the two reports' seeds drawn
    together where each seed trained on the same patients in both (SFT runs with the
    same ``train_draw``, seed for seed), else each report's on their own."""
    used_a, used_b = _used(seeds_a), _used(seeds_b)
    out = {"setting": setting_name(key), "kind": key[0], "train_size": key[1],
           "target": key[2], "scoring": key[3], "seeds_a": sorted(used_a),
           "seeds_b": sorted(used_b), "left_out": _left("A", key[2], seeds_a)
           + _left("B", key[2], seeds_b)}
    if not used_a or not used_b:
        return {**out, "value": None, "mean_a": None, "mean_b": None, "sd_a": None,
                "sd_b": None}
    together = key[0] == "sft" and _same_draws((seeds_a, used_a), (seeds_b, used_b))
    arms = [(-1.0, list(used_a.values())), (1.0, list(used_b.values()))]
    result = hierarchical_contrast(y, [arms] if together else [[arms[0]], [arms[1]]],
                                   "auroc", n_resamples=n_resamples, seed=seed)
    per_a, per_b = result["per_seed"]  # one list of per-seed figures per arm
    return {**out, "mean_a": float(np.mean(per_a)), "mean_b": float(np.mean(per_b)),
            "sd_a": _sd(per_a), "sd_b": _sd(per_b), "per_seed_a": per_a, "per_seed_b": per_b,
            "seeds_across": "paired" if together else "unpaired",
            **_interval(result, {"A": [sorted(used_a)], "B": [sorted(used_b)]}, together)}


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _gap(key: tuple, label_key: tuple, a: dict, b: dict, y: np.ndarray, n_resamples: int,
         seed: int) -> dict:
    """``(label − target)_B − (label − target)_A``: within a report, the seeds both arms
    kept are paired (one group), or each arm's seeds are drawn on their own when they
    share none; where all four arms use the same seeds and each seed trained on the same
    patients in all of them, the four arms are one group (seeds drawn together across the
    reports)."""
    out = {"setting": setting_name(key), "train_size": key[1], "target": key[2],
           "scoring": key[3], "left_out": [], "value": None, "gap_a": None, "gap_b": None}
    arms = {}
    for report, settings in (("A", a), ("B", b)):
        out["left_out"] += (_left(report, "label", settings[label_key])
                            + _left(report, key[2], settings[key]))
        arms[report] = (_used(settings[label_key]), _used(settings[key]))
    missing = [f"report {report} has no valid {'label-only' if not label else key[2]} seed"
               for report, (label, target) in arms.items() if not label or not target]
    if missing:
        return {**out, "why": "; ".join(missing)}
    groups, seeds_used = [], {}
    together = _same_draws(*((settings[k], arms[r][i]) for r, settings in (("A", a), ("B", b))
                             for i, k in enumerate((label_key, key))))
    for (report, (label, target)), sign in zip(arms.items(), (-1.0, 1.0), strict=True):
        shared = sorted(label.keys() & target.keys())
        if shared:
            out["left_out"] += [{"report": report, "arm": arm, "seed": s,
                                 "why": "no paired seed"}
                                for arm, seeds in (("label", label), (key[2], target))
                                for s in sorted(seeds) if s not in shared]
            label, target = {s: label[s] for s in shared}, {s: target[s] for s in shared}
            groups.append([(sign, list(label.values())), (-sign, list(target.values()))])
        else:
            groups += [[(sign, list(label.values()))], [(-sign, list(target.values()))]]
        out[f"label_seeds_{report.lower()}"] = sorted(label)
        out[f"target_seeds_{report.lower()}"] = sorted(target)
        out[f"paired_{report.lower()}"] = bool(shared)
        seeds_used[report] = [sorted(label), sorted(target)]
    if together:  # seed s trained on the same patients in all four arms: one group
        groups = [[arm for group in groups for arm in group]]
    result = hierarchical_contrast(y, groups, "auroc", n_resamples=n_resamples, seed=seed)
    label_a, target_a, label_b, target_b = (float(np.mean(s)) for s in result["per_seed"])
    return {**out, "gap_a": label_a - target_a, "gap_b": label_b - target_b,
            "label_a": label_a, "target_a": target_a, "label_b": label_b,
            "target_b": target_b, "seeds_across": "paired" if together else "unpaired",
            **_interval(result, seeds_used, together)}


def write(result: dict, config, folder_a: str | Path, folder_b: str | Path) -> Path:
    """``compare.md``, ``compare.csv`` and ``compare.json`` in the config's folder (or
    ``reports/compare-A-vs-B``), with the config echoed and each input's file hashes."""
    out = Path(config.out) if config.out else \
        Path("reports") / f"compare-{Path(folder_a).resolve().name}-vs-" \
                          f"{Path(folder_b).resolve().name}"
    echo_config(config, out, "experiment compare")
    inputs = {report: {"folder": portable_path(str(folder)),
                       **{name: file_sha256(Path(folder) / name) for name in REPORT_FILES}}
              for report, folder in (("a", folder_a), ("b", folder_b))}
    (out / "compare.json").write_text(json.dumps({"inputs": inputs, **result}, indent=2,
                                                 default=_plain) + "\n")
    _write_csv(out / "compare.csv", result)
    (out / "compare.md").write_text("\n".join(markdown(result, inputs)) + "\n")
    return out


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


CSV_COLUMNS = ("table", "setting", "kind", "train_size", "target", "scoring", "primary",
               "mean_a", "mean_b", "label_a", "target_a", "label_b", "target_b", "gap_a",
               "gap_b", "value", "low", "high", "p", "interval", "seeds_across", "why",
               "seeds_a", "seeds_b", "label_seeds_a", "label_seeds_b", "left_out")


def _write_csv(path: Path, result: dict) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for name, rows in (("change", result["changes"]), ("gap", result["gaps"])):
            for row in rows:
                # a gap row's seeds_a and seeds_b are its target's (label's beside them)
                seeds_a = row.get("seeds_a", row.get("target_seeds_a", []))
                seeds_b = row.get("seeds_b", row.get("target_seeds_b", []))
                writer.writerow({**row, "table": name, "kind": row.get("kind", "sft"),
                                 "seeds_a": " ".join(map(str, seeds_a)),
                                 "seeds_b": " ".join(map(str, seeds_b)),
                                 **{f"label_seeds_{r}": " ".join(
                                     map(str, row.get(f"label_seeds_{r}", [])))
                                    for r in ("a", "b")},
                                 "left_out": _left_text(row["left_out"])})


def _left_text(left: list[dict]) -> str:
    """``A rationale-free seeds 0, 1: why``: the seeds left out for one reason, once."""
    grouped: dict[tuple, list[int]] = {}
    for d in left:
        grouped.setdefault((d["report"], d["arm"], d["why"]), []).append(d["seed"])
    return "; ".join(f"{report} {arm} seed{'s' if len(seeds) > 1 else ''} "
                     f"{', '.join(map(str, seeds))}: {why}"
                     for (report, arm, why), seeds in grouped.items())


def _figure(row: dict) -> str:
    if row.get("value") is None:
        return "–"
    return format_difference(row)


def _mean_sd(mean, sd) -> str:
    return "–" if mean is None else number(mean) + ("" if sd is None else f" ± {sd:.3f}")


def markdown(result: dict, inputs: dict) -> list[str]:
    """The comparison as Markdown: what was compared, the gaps first, then every
    setting."""
    lines = ["# Two reproductions compared", "",
             f"A: `{inputs['a']['folder']}`; B: `{inputs['b']['folder']}`. Both scored the "
             f"same {result['patients']} test patients ({result['positives']} positive). "
             f"Intervals: 95%, {result['n_resamples']} replicates that draw the seeds, "
             "then the test patients once for both (bootstrap seed "
             f"{result['seed']}). A seed its report marked invalid, or whose mean P(yes) is "
             f"outside [{1 - result['max_one_answer_share']:.2f}, "
             f"{result['max_one_answer_share']:.2f}], is left out and named. A seed is "
             "drawn once for both reports where seed s trained on the same patients in "
             "both, run for run (`train_draw` in each results.csv; the interval column "
             "says \"paired across the reports\"), and each report's seeds on their own "
             "otherwise (wider).", "",
             "## The gap to label-only", "",
             "Label-only minus the target (mean test AUROC over seeds) in each report, and "
             "B's gap minus A's: below zero, the target loses less to label-only in B. "
             "★ marks the scoring each target's headline leads with.", ""]
    lines += table(["setting", "gap in A", "gap in B", "B − A [95% CI]", "p",
                    "interval", "left out"],
                   [[r["setting"] + (" ★" if r["primary"] else ""),
                     number(r.get("gap_a")), number(r.get("gap_b")), _figure(r),
                     number(r.get("p")), r.get("interval") or r.get("why", "–"),
                     _left_text(r["left_out"]) or "–"] for r in result["gaps"]])
    lines += ["", "## Every setting", "",
              "Mean test AUROC ± SD over seeds (few-shot: over demonstration draws) in each "
              "report, and B minus A.", ""]
    lines += table(["setting", "seeds A", "AUROC A", "seeds B", "AUROC B",
                    "B − A [95% CI]", "p", "interval", "left out"],
                   [[r["setting"] + (" ★" if r["primary"] else ""),
                     ", ".join(map(str, r["seeds_a"])) or "–", _mean_sd(r["mean_a"],
                                                                     r["sd_a"]),
                     ", ".join(map(str, r["seeds_b"])) or "–", _mean_sd(r["mean_b"],
                                                                     r["sd_b"]),
                     _figure(r), number(r.get("p")), r.get("interval") or "–",
                     _left_text(r["left_out"]) or "–"] for r in result["changes"]])
    for report in ("a", "b"):
        if result[f"only_in_{report}"]:
            lines += ["", f"Only in {report.upper()} (not compared): "
                      + "; ".join(result[f"only_in_{report}"]) + "."]
    views = result.get("views")
    same_label = bool(views) and "label_only" in views["same"]
    lines += ["", "## What it can and cannot say", "",
              "Each difference is between two separate trainings of each setting. Their "
              "datasets differ in the rationales and, because the audit approves "
              "rationales, possibly in which patients were exported. A change in a "
              "rationale target is the change that goes with the whole difference between "
              "the two dataset versions, not with one sentence of the teacher. "
              + ("Label-only's training data is the same in both, file for file (the "
                 "`label_only` view's hash in each report's `reproduce.json`), so its own "
                 "change between the reports is training noise alone: "
                 if same_label else
                 "Label-only sees no rationale, but it trains on the approved patients, so "
                 "its own change between the reports is training noise plus any change in "
                 "those patients" + ("" if views is None else
                                     " (its view differs between the two versions)")
                 + ": ")
              + "the floor under which the other rows' changes say nothing. "
              + (("Its runs were not trained under the same code in the two reports for "
                  + "; ".join(f"{c['setting']} seed {c['seed']} (A: {c['a']}; B: {c['b']})"
                              for c in result.get("label_code", []))
                  + ": that floor then includes any change to the training code between "
                  "them (`trained_under` in results.csv). ")
                 if result.get("label_code") else "")
              + ("Whether label-only's runs were trained under the same code cannot be told "
                 "here: report " + " and ".join(
                     name.upper() for name, known in result["code_recorded"].items()
                     if not known)
                 + " does not record it (`trained_under`, written since 2026-12-07). "
                 if not all((result.get("code_recorded") or {"": True}).values()) else "")
              + "With three seeds "
              "a report, the seed "
              "level is measured coarsely (`training/seed_level.py` gives the interval's "
              "coverage in simulation)."]
    return lines


__all__ = ["ComparisonError", "compare", "markdown", "read_report", "setting_name", "write"]
