"""`experiment reproduce`: the study end to end, at a chosen scale, as one command.

cohort → label-conditioned rationales (free-form and step-by-step) → audit
(simulated raters unless real ratings exist) → verified export → the grid
(label-only vs both rationale formats × sizes × seeds; few-shot k × with/without
rationales) → a report in the study's style (Markdown and HTML).

One config holds the data settings, a base grid and several *scales* (``smoke``,
``cpu`` and ``cpu-balanced`` for a CPU, ``gpu`` for an accelerator); a scale overrides
data and grid fields, starting from another scale's when it says ``based_on``.
"""

import base64
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from annotation_db.export import view_hashes
from annotation_db.provenance import echo_config, portable_argv, portable_path
from training import seed_report
from training.budget import estimate, sample_token_counts
from training.grid.experiment import run_experiment
from training.reproduce_config import ReproduceConfig
from training.study import prepare_dataset
from training.study_config import DataSettings
from training.tables import format_difference


def dry_run(config: ReproduceConfig, scale: str, engine: Engine | None = None) -> dict:
    """The scale's budget per stage (see :mod:`training.budget`), without running it;
    what ``engine``'s database and the grid's archive already hold is counted as reused."""
    from training.budget import finished_work

    data, grid = config.resolve(scale)
    throughput = config.throughput(scale)
    tokens = sample_token_counts(data, grid)
    finished = finished_work(engine, grid) if engine is not None else None
    if grid.archive:  # what the grid would restore before it runs
        from training.archive import finished_work as archived_work

        finished = _union(finished, archived_work(
            grid.archive, grid.dataset, finished["version_hash"] if finished else None))
    stages = estimate(data, grid, throughput, tokens, finished)
    total = sum(s["seconds"] for s in stages)
    model_time = sum(s["seconds"] for s in stages[1:])
    from generation.cohort_config import CohortConfig

    train_patients = round(data.n * CohortConfig(n=data.n).split_fractions[0])
    pool = train_patients * min(tokens["approved_share"].values())
    largest = max((s for s in (grid.sft.train_sizes if grid.sft else []) if s), default=0)
    return {"scale": scale, "stages": stages, "total_seconds": total,
            "model_seconds": model_time, "measured_data_seconds_per_patient":
                tokens["data_seconds_per_patient"],
            "throughput": throughput.model_dump(), "tokens": tokens,
            "reuse_counted": finished is not None,
            "expected_paired_pool": round(pool), "largest_train_size": largest,
            "pool_warning": (f"the largest training size ({largest}) may exceed the ≈{pool:.0f} "
                             "patients expected to have an approved rationale in every target"
                             ) if largest > pool else None}


def _union(a: dict | None, b: dict | None) -> dict | None:
    """Finished work from the database (``a``) and from the archive (``b``, the same
    dataset version). As :func:`training.archive.restore` does, a run the database holds,
    finished or not, is taken from the database alone; the archive adds the others."""
    if not a or not b or a["version_hash"] != b["version_hash"]:
        return a or b
    held = set(a.get("held", a["runs"]))
    runs = {h: set(r) for h, r in a["runs"].items()}
    runs.update({h: set(r) for h, r in b["runs"].items() if h not in held})
    # the database knows whether a run it holds has its weights here; a run only the
    # archive holds has them if the archive kept them
    weightless = set(a.get("weightless", ())) | {
        h for h in b.get("weightless", ()) if h not in held}
    ranks = {**{k: v for k, v in b.get("ranks", {}).items() if k[0] not in held},
             **a.get("ranks", {})}
    return {"version_hash": a["version_hash"], "runs": runs, "weightless": weightless,
            "ranks": ranks,
            "data_done": a.get("data_done", True) or b.get("data_done", True)}


def reproduce(engine: Engine, config: ReproduceConfig, scale: str, *, config_path: str | None,
              on_stage: Callable[[str], None] | None = None,
              on_run: Callable[[], None] | None = None) -> dict:
    say = on_stage or (lambda _: None)
    data, grid = config.resolve(scale)
    out = Path(config.output_dir) / f"{config.name}-{scale}"
    echo_config(config, out, f"experiment reproduce --scale {scale}")
    started = time.perf_counter()
    version, data_info = prepare_dataset(engine, data, exports_dir=config.exports_dir,
                                         cache_dir=grid.cache_dir, on_stage=say)
    data_seconds = time.perf_counter() - started
    say(f"grid: {grid.size()}")
    results = run_experiment(engine, grid, out_dir=out, on_stage=say, on_run=on_run,
                             raise_failed=False)  # the study's report first, then the error
    seconds = time.perf_counter() - started
    command = "rationale-audit experiment reproduce " + " ".join(shlex.quote(a) for a in (
        (["--config", portable_path(config_path)] if config_path else []) + ["--scale", scale]))
    summary = {"name": config.name, "scale": scale, "dataset": {"name": version.name,
                                           "sha256": version.content_hash,
                                           "counts": version.manifest["counts"],
                                           "views": view_hashes(version.manifest),
                                           "agreement": version.manifest.get("agreement")},
               "data": data_info, "grid": grid.model_dump(mode="json"),
               "wall_seconds": round(seconds, 1), "data_seconds": round(data_seconds, 1),
               "command": command, "argv": portable_argv()}
    (out / "reproduce.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    md = _study_markdown(summary, (out / "results.md").read_text(), version, data)
    md += conclusions(results, grid.reading)  # reads trained_positions_only alone
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md, out, title(summary)))
    summary["report"] = str(out / "report.md")
    summary["comparisons"] = results["comparisons"]
    if results["failure"]:
        raise results["failure"]
    return summary


def title(summary: dict) -> str:
    """The report's title: which config (``name``, so the mechanism grid's report is not
    taken for the reproduction's) at which scale."""
    name = summary.get("name")
    return "Reproduction report — " + (f"`{name}`, " if name else "") \
        + f"scale `{summary['scale']}`"


def untuned(grid: dict) -> str | None:
    """A sentence when the grid's SFT candidates are untuned (one learning rate × one
    epoch count for every target), else None."""
    sft = grid.get("sft") or {}
    rates, epochs = sft.get("learning_rates") or [], sft.get("epochs") or []
    if not sft or len(rates) * len(epochs) != 1:
        return None
    return (f"The SFT runs are **untuned**: every target trains with one learning rate "
            f"({rates[0]:g}) for {epochs[0]:g} epoch{'' if epochs[0] == 1 else 's'}, chosen "
            "on no validation result, so a "
            "target that needs another setting reads as worse than it could be; a "
            "difference between targets here does not separate \"the target hurts\" from "
            "\"the target is mistuned\".")


def _study_markdown(summary: dict, results_md: str, version, data: DataSettings) -> str:
    audit = summary["data"].get("audit") or {}
    simulated = bool(audit.get("simulated"))
    share = audit.get("simulated_share")
    if simulated:
        raters = ("**simulated raters** (no clinician rated these rationales; the policy "
                  "includes simulated ratings).")
    elif share:
        raters = f"clinicians' ratings mixed with **simulated ratings ({share:.0%})**."
    elif audit.get("ratings"):
        raters = "clinicians' ratings (no simulated ones)."
    else:
        raters = "no ratings in the export."
    agreement = version.manifest.get("agreement") or {}
    campaign_names = ", ".join(f"`{c}`" for c in audit.get("campaigns") or [data.audit.campaign])
    note = untuned(summary.get("grid") or {})
    lines = [f"# {title(summary)}", "",
             "Rationale SFT vs label-only SFT and few-shot demonstrations for five-year "
             "ADRD prediction, on a synthetic cohort (arXiv 2606.10279's design).", "",
             *([note, ""] if note else []),
             "## Data", "",
             f"- Cohort `{data.cohort}`: {data.n} synthetic patients, {data.mode}, seed "
             f"{data.seed}.",
             f"- Teacher: {', '.join(summary['data'].get('teacher', [data.teacher]))}, "
             f"{data.teacher_mode}, formats: " + ", ".join(data.formats) + ".",
             f"- Audit campaign(s) {campaign_names}: " + raters,
             f"- Dataset version **{version.name}**, sha256 `{version.content_hash}`; counts "
             f"{json.dumps(version.manifest['counts'])}.",
             ]
    for name, dims in agreement.items():
        parts = [f"{dim} α = {d['alpha']:.2f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]"
                 for dim, d in (dims or {}).items()
                 if isinstance(d, dict) and d.get("computable") and d.get("alpha") is not None]
        if parts:
            same = {dim: v for dim, v in (audit.get("same_score_share") or {}).items()
                    if v >= 0.8}
            lines.append(f"- Krippendorff's α in `{name}`: " + "; ".join(parts)
                         + (" (" + ", ".join(f"{v:.0%} of {dim} ratings share one score"
                                             for dim, v in same.items())
                            + ": little between-item variance is left for α to measure)"
                            if same else ""))
    lines += ["", f"Wall time of this invocation: {summary['wall_seconds']} s (data stages "
                  f"{summary['data_seconds']} s; finished runs and existing data are reused, so "
                  "a re-run takes only what is new).", "",
              "Re-run exactly:", "", "```", summary["command"], "```", ""]
    body = results_md.split("\n", 1)[1] if results_md.startswith("#") else results_md
    return "\n".join(lines) + body.replace("\n## ", "\n### ").replace("\n# ", "\n## ")


def _patients(entry: dict) -> str:
    """``400 patients, ``: a headline entry's training size, as the conclusions name it."""
    return f"{entry['train_size']} patients, " if entry["train_size"] else ""


def _side(low: float, high: float, other: str = "rationale") -> str:
    return ("label-only higher" if low > 0 else f"{other} higher" if high < 0 else
            "no difference shown (the CI includes 0; not evidence that they are equal)")


def _not_shown_worse(primary: list[dict]) -> list[str]:
    """Whether any of the study's rationale targets (and Align) is not shown worse than
    label-only; the mechanism ablations (filler, answer first, multitask...) are read by
    the Mechanism section, not here."""
    from training.targets import TARGETS

    compared = [h for h in primary if not h["left_out"] and h["target"] in TARGETS
                and not (TARGETS[h["target"]].ablation and TARGETS[h["target"]].derived)]
    if not compared:
        return []
    not_worse = [h["target"] for h in compared if h["low"] <= 0]
    return ["- Is any rationale-writing target not shown worse than label-only "
            "(its CI reaching 0)? "
            + (f"Not shown worse: {', '.join(not_worse)} (each CI includes 0 or "
               "favours the rationale; no claim of equivalence: a CI that "
               "includes 0 is not proof of equality)." if not_worse else
               "No: label-only is higher than every rationale target compared, "
               "each CI above 0.")]


def _read_settings(results: dict, heads: list[dict]) -> list[tuple[str, object, list[dict]]]:
    """(name, training size, valid runs) of each setting the conclusions read, label-only
    first (its own scoring), then every target the headline leads with (its primary
    scoring); without a headline, label-only alone at each size. Settings with no valid
    run are left out."""
    rows = results.get("all_rows", results["rows"])
    if heads:
        settings = list(dict.fromkeys((h["train_size"], "label", None) for h in heads))
        settings += [(h["train_size"], h["target"], h["scoring"]) for h in heads
                     if h.get("primary")]
    else:
        settings = [(size or None, "label", None) for size in sorted(
            {r["train_size"] or 0 for r in rows if r["kind"] == "sft"
             and r["target"] == "label"})]
    several = len({size for size, _, _ in settings}) > 1
    out = []
    for size, target, scoring in settings:
        runs = _runs_of(rows, size, target, scoring)
        if runs:  # ``rationale-free (sampled)``; the size where the settings have several
            out.append((target + (f" ({scoring})" if scoring else "")
                        + (f", {size or 'all'} patients" if several else ""), size, runs))
    return out


def _runs_of(rows: list[dict], size, target: str, scoring: str | None) -> list[dict]:
    """The valid SFT runs of one setting with a test AUROC and its interval (label-only:
    its own scoring, ``scoring`` None)."""
    return [r for r in rows if r["kind"] == "sft" and r["train_size"] == size
            and r["target"] == target and r["valid"] and r["auroc"]
            and r["auroc"].get("low") is not None
            and (r["scoring"] == scoring if scoring else not r.get("extra_scoring"))]


def _learned(read: list[tuple[str, object, list[dict]]]) -> list[str]:
    """Per setting read (:func:`_read_settings`): how many runs have a test AUROC CI
    above 0.5."""
    parts, weak = [], []
    for name, _, runs in read:
        learned = sum(r["auroc"]["low"] > 0.5 for r in runs)
        parts.append(f"{name} {learned} of {len(runs)}")
        if learned < len(runs):
            weak.append(name)
    if not parts:
        return []
    return ["- Runs whose test AUROC CI lies above 0.5 (it learned something): "
            + "; ".join(parts) + "." + (
                " A run whose CI includes 0.5 has not shown it learned, and a difference "
                "against it says little about what rationales do to a model that predicts: "
                + ", ".join(weak) + "." if weak else
                " Every one learned, so the comparisons are between models that predict.")]


def _against_references(results: dict, read: list[tuple[str, object, list[dict]]]
                        ) -> list[str]:
    """Each reference model's mean test AUROC against each setting read: seed means of
    valid runs against the reference's mean over the same training size and seeds (the
    same training patients)."""
    lines = []
    for model, what in (("age", "age alone (the floor any model of the record must beat)"),
                        ("tfidf", "TF-IDF on the history text (a bag of words)"),
                        ("structured", "the structured-feature ceiling")):
        parts = []
        for name, size, runs in read:
            seeds = {r["seed"] for r in runs}
            refs = [r["auroc"]["value"] for r in results.get("references", [])
                    if r["model"] == model and r["train_size"] == size
                    and r.get("seed") in seeds]
            if refs:
                mean, mean_ref = (float(np.mean([r["auroc"]["value"] for r in runs])),
                                  float(np.mean(refs)))
                parts.append(f"{name} {mean:.3f} against {mean_ref:.3f} "
                             f"({mean - mean_ref:+.3f})")
        if parts:
            lines.append(f"- Against {what}, mean test AUROC over the same seeds' training "
                         "patients: " + "; ".join(parts) + ".")
    return lines


def _fewshot_reading(contrasts: list[dict]) -> list[str]:
    """The study's second finding as this grid measured it: few-shot demonstrations with
    their audited rationales against the same demonstrations without (primary scoring)."""
    lines = []
    for e in contrasts:
        if not e["primary"]:
            continue
        what = f"Few-shot k={e['k']} ({e['selection']} demonstrations)"
        others = [o for o in contrasts if not o["primary"] and not o["left_out"]
                  and (o["k"], o["selection"]) == (e["k"], e["selection"])]
        if e["left_out"]:
            lines.append(f"- {what}, with rationales scored {e['scoring']} (primary) − "
                         f"without: not compared ({e['left_out']})."
                         + "".join(f" With rationales scored {o['scoring']} (secondary): "
                                   f"{format_difference(o)}, p = {o['p']:.3g}, draws "
                                   f"{seed_report.fewshot_draws(o)}."
                                   for o in others))
            continue
        side = ("the rationales helped" if e["low"] > 0 else "the rationales hurt"
                if e["high"] < 0 else "no difference shown (the CI includes 0; not "
                "evidence that they are equal)")
        lines.append(
            f"- {what}, with rationales scored {e['scoring']} (primary) − without: "
            f"{format_difference(e)}, p = {e['p']:.3g}, {len(e['with_seeds'])} draw(s), "
            f"{e['interval']}: {side}."
            + (" Left out " + "; ".join(f"{d['arm']} draw {d['seed']}: {d['why']}"
                                        for d in e["dropped"]) + "."
               if e.get("dropped") else "")
            + "".join(f" With rationales scored {o['scoring']}: {format_difference(o)}."
                      for o in others))
    return lines


def _untrained_joint(results: dict, rule) -> tuple[list[dict], list[str]]:
    """The joint comparisons the conclusions read, and the (target, scoring) they leave
    out under a rule that reads trained positions only: a target whose own scoring (the
    joint's rows) reads its model where it was never trained to answer."""
    from training.reading_rule import trained_position

    joint = results.get("joint", [])
    if not (rule and rule.trained_positions_only):
        return joint, []
    own = {(r["target"], r["scoring"]) for r in results["rows"]
           if r["kind"] == "sft" and r.get("scoring") and not r.get("extra_scoring")}
    left = {t: s for t, s in own if not trained_position(t, s)}
    kept = [j for j in joint
            if j.get("target", j["comparison"].removeprefix("label vs ")) not in left]
    return kept, [f"{t} scored {s}" for t, s in sorted(left.items())]


def conclusions(results: dict, rule=None) -> str:
    """What the numbers allow one to say, written from them (no verdict beyond the data).

    Led by the seed-level headline in each target's primary scoring (sampled rationales
    where it has them); the patient-only joint comparison of each cell's own scoring
    follows as a secondary reading. Under a reading ``rule`` that reads trained positions
    only, a target whose own scoring reads its model where it was never trained to answer
    is left out of the secondary readings too, with the reason said once."""
    heads = (results.get("seeds") or {}).get("headline") or []
    lines = ["", "## What this design can and cannot conclude", ""]
    read = _read_settings(results, heads)
    lines += _learned(read)
    lines += _against_references(results, read)
    primary = [h for h in heads if h.get("primary")]
    for h in primary:
        size = _patients(h)
        others = [o for o in heads if not o.get("primary") and not o["left_out"]
                  and (o["train_size"], o["target"]) == (h["train_size"], h["target"])]
        if h["left_out"]:
            whose = "label-only has no valid seed" if h["left_out"].startswith(
                "label-only") else "every seed was left out"
            lines.append(f"- {h['comparison']} ({size}{h['scoring']}): not compared; "
                         f"{whose} ({h['left_out']})."
                         + "".join(f" Scored {o['scoring']} (secondary): label − {o['target']} "
                                   f"{format_difference(o)}, "
                                   f"{len(o['rationale_seeds'])} seed(s)." for o in others))
            continue
        lines.append(
            f"- {h['comparison']} ({size}scored {h['scoring']}, primary): label − {h['target']} "
            f"{format_difference(h)}, p = {h['p']:.3g}, "
            f"{len(h['rationale_seeds'])} seed(s), {h['interval']}: "
            f"{_side(h['low'], h['high'], h['target'])}."
            + (f" It {seed_report.dropped_text(h)}." if h.get("dropped") else "")
            + "".join(f" Scored {o['scoring']}: {format_difference(o)}." for o in others))
    led = {(h["train_size"], h["target"]) for h in primary}
    for h in heads:  # a model the reading rule reads nowhere it was trained to answer
        if h.get("untrained_position") and (h["train_size"], h["target"]) not in led:
            lines.append(f"- {h['comparison']} ({_patients(h)}{h['scoring']}): not read; "
                         f"{h['left_out']}.")
    compared = [h for h in primary if not h["left_out"]]
    if compared:
        seeds = sorted({len(h["rationale_seeds"]) for h in compared})
        lines.append(
            f"- How far to trust these: each primary interval rests on "
            f"{' or '.join(map(str, seeds))} seed(s), and with few seeds the seed part of a "
            "bootstrap interval is narrow (the coverage note in the seed section); "
            f"{len(compared)} primary comparison(s) are read, none adjusted for multiplicity. "
            "A CI that only just excludes 0 is weak evidence.")
    lines += _not_shown_worse(primary)
    lines += _fewshot_reading((results.get("seeds") or {}).get("fewshot") or [])
    joint, untrained = _untrained_joint(results, rule)
    if untrained:
        lines.append(f"- Left out of the secondary readings below: {', '.join(untrained)}, "
                     "read where its model was never trained to answer (the reading rule "
                     "reads trained positions only).")
    for j in joint:
        lines.append(f"- Secondary, each cell's own scoring and the test patients only "
                     f"(joint paired bootstrap over {j['pairs']} cells): {j['comparison']} "
                     f"{format_difference(j, 'difference')}, "
                     f"p = {j['p_value']:.3g}: {_side(j['low'], j['high'])}.")
    left: dict[tuple, int] = {}
    for r in results.get("all_rows", results["rows"]):  # every scoring of every run
        if r["kind"] == "sft" and not r["valid"]:
            key = (r.get("scoring") or "own", r.get("invalid_code") or "invalid")
            left[key] = left.get(key, 0) + 1
    if left:
        names = {"degenerate": "degenerate (the same answer for nearly every patient)",
                 "answer_not_reached": "the answer line not reached"}
        lines.append("- Left out of the comparisons of their scoring: " + "; ".join(
            f"{count} run(s) scored {scoring}, {names.get(code, code)}"
            for (scoring, code), count in sorted(left.items())) + ".")
    lines += ["- The design can show whether, on this synthetic cohort with this teacher and "
              "model, rationale targets predict worse than label-only targets trained on the "
              "same patients with the same tuning budget. It cannot say why (see the mechanism "
              "ablations), nor that the same holds for real records, clinicians' rationales or "
              "larger models; the test set is one draw of patients, shared by every cell."]
    return "\n".join(lines) + "\n"


def _html(markdown_text: str, folder: Path, heading: str = "Reproduction report") -> str:
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(markdown_text)
    figure = folder / "auroc_by_size.png"
    if figure.exists():
        data = base64.b64encode(figure.read_bytes()).decode()
        html = html.replace('src="auroc_by_size.png"', f'src="data:image/png;base64,{data}"')
    style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;"
             "padding:0 1rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:.25rem .5rem;font-size:.9rem}code{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{heading.replace('`', '')}</title><style>{style}</style></head>"
            f"<body>{html}</body></html>\n")
