"""The mechanism's reading rule is stated before the runs: it reads models only where they
were trained to answer, its hash is in every run's identity, and a report refuses runs
made under another rule."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.grid.config import ExperimentGrid
from training.reading_rule import POST_HOC, ReadingRule, check_runs, trained_position
from training.reproduce_config import ReproduceConfig
from training.runs import RunError

ROOT = Path(__file__).resolve().parents[2]


def _rule(a, b) -> dict:
    return {"contrasts": {"c": {"a": a, "b": b, "what": "x"}}, "explanations": {"e": ["c"]}}


@pytest.mark.parametrize("side, why", [
    (["rationale-free", "direct"], "rationale-free scored direct"),
    (["label-padded", "forced"], "label-padded scored forced"),
    (["rationale-answer-only", "generate"], "rationale-answer-only scored generate"),
])
def test_a_rule_that_reads_a_model_where_it_never_learned_to_answer_is_refused(side, why):
    with pytest.raises(ValidationError, match=why):
        ReadingRule.model_validate(_rule(["label", "direct"], side))


def test_own_scoring_and_sampled_rationales_are_trained_positions():
    assert trained_position("label", "direct") and trained_position("answer-first", "direct")
    assert trained_position("rationale-free", "generate")
    assert trained_position("rationale-free", "sampled")
    assert not trained_position("label", "sampled")
    ReadingRule.model_validate(_rule(["rationale-free", "sampled"],
                                     ["rationale-free", "generate"]))


def test_an_explanation_must_predict_contrasts_the_rule_has():
    with pytest.raises(ValidationError, match="unknown contrast"):
        ReadingRule.model_validate({**_rule(["label", "direct"], ["multitask", "direct"]),
                                    "explanations": {"e": ["nothing"]}})


def test_the_rule_is_in_every_runs_identity_and_absent_rules_change_nothing():
    config = ReproduceConfig.model_validate(
        yaml.safe_load((ROOT / "experiments" / "mechanism-v2.yaml").read_text()))
    _, grid = config.resolve("cpu")
    assert grid.reading.trained_positions_only and len(grid.sft.seeds) >= 2
    runs = [c for _, cands in grid.sft_cells() for c in cands]
    assert {c.reading_rule for c in runs} == {grid.preregistration()}
    other = grid.model_copy(update={"reading": ReadingRule.model_validate(
        _rule(["label", "direct"], ["multitask", "direct"]))})
    assert all(a.identity("h") != b.identity("h") for a, b in zip(
        runs, [c for _, cands in other.sft_cells() for c in cands], strict=True))
    unruled = ExperimentGrid(dataset="v", sft={"targets": ["label"]})
    assert unruled.sft_cells()[0][1][0].reading_rule is None
    assert "reading_rule" not in unruled.sft_cells()[0][1][0].identity_data()


def test_a_report_refuses_runs_made_under_another_rule(tmp_path):
    rule = ReadingRule.model_validate(_rule(["label", "direct"], ["multitask", "direct"]))
    rows = []
    for run_id, made in ((1, rule.digest()), (2, "0" * 64)):
        folder = tmp_path / f"run{run_id}"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"reading_rule": made}))
        rows.append({"kind": "sft", "run_id": run_id, "run_dir": str(folder)})
    with pytest.raises(RunError, match=r"rule or its scoring settings changed.*run 2 "
                                       r"\(000000000000\)"):
        check_runs(rows, rule)
    check_runs(rows[:1], rule)  # made under this rule: read


def test_the_first_reports_rule_is_kept_as_it_was_for_its_grid():
    assert not POST_HOC.trained_positions_only
    assert POST_HOC.contrasts["direct scoring"].a == ("rationale-free", "direct")


def test_a_rule_names_how_its_intervals_are_drawn_and_the_first_rule_keeps_its_hash():
    """``interval`` is part of what a rule pre-registers (it changes the hash), but a
    rule that leaves it at the first report's value hashes as it did before the field."""
    assert POST_HOC.interval == "patients"
    assert POST_HOC.digest().startswith("e74697be876c")  # the committed mechanism report's
    plain = ReadingRule.model_validate(_rule(["label", "direct"], ["multitask", "direct"]))
    seeded = ReadingRule.model_validate({**_rule(["label", "direct"], ["multitask", "direct"]),
                                         "interval": "seeds-then-patients"})
    assert seeded.digest() != plain.digest()


def test_seeds_then_patients_contrasts_carry_the_spread_between_seeds(tmp_path):
    """Two seeds whose contrasts point opposite ways: read over patients alone, their mean
    is shown; read seeds then patients, the interval takes in both seeds and includes 0.
    Each is the library's own statistic on the same predictions."""
    import numpy as np

    from training.mechanism import contrasts
    from training.metrics import joint_paired_difference
    from training.seed_level import hierarchical_difference

    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 100)
    signal = y + rng.normal(0, 1, y.size)
    rows, arms = [], {"label": [], "multitask": []}
    for seed, (good, bad) in enumerate([(0.1, 3.0), (0.8, 0.6)]):  # +0.17, -0.05
        for target, noise in (("label", good), ("multitask", bad)):
            p = 1 / (1 + np.exp(-(signal + rng.normal(0, noise, y.size))))
            path = tmp_path / f"{target}-{seed}.csv"
            path.write_text("id,label,p_yes\n" + "".join(
                f"P{i:03d},{label},{score!r}\n" for i, (label, score)
                in enumerate(zip(y.tolist(), p.tolist(), strict=True))))
            arms[target].append(p)
            rows.append({"kind": "sft", "run_id": len(rows) + 1, "target": target,
                         "scoring": "direct",
                         "predictions": str(path), "valid": True, "base_model": "m",
                         "train_size": 8, "seed": seed, "lora_r": 16})
    rule = {**_rule(["label", "direct"], ["multitask", "direct"]), "trained_positions_only": True}
    (patients,) = contrasts(rows, 400, 1, ReadingRule.model_validate(rule))
    (seeded,) = contrasts(rows, 400, 1, ReadingRule.model_validate(
        {**rule, "interval": "seeds-then-patients"}))
    joint = joint_paired_difference(y, list(zip(arms["label"], arms["multitask"],
                                                 strict=True)), "auroc", n_resamples=400,
                                    seed=1)
    nested = hierarchical_difference(y, arms["label"], arms["multitask"], "auroc",
                                     n_resamples=400, seed=1)
    assert (patients["low"], patients["high"]) == pytest.approx((joint["low"], joint["high"]))
    assert (seeded["low"], seeded["high"]) == pytest.approx((nested["low"], nested["high"]))
    assert seeded["difference"] == pytest.approx(patients["difference"])
    assert patients["low"] > 0  # over patients alone, the mean of the two is "shown"
    assert seeded["low"] < 0 < seeded["high"] and seeded["high"] - seeded["low"] > (
        patients["high"] - patients["low"])


def test_seeds_then_patients_needs_a_grid_that_varies_only_the_seed():
    rule = {**_rule(["label", "direct"], ["multitask", "direct"]),
            "interval": "seeds-then-patients"}
    sft = {"targets": ["label", "multitask"], "seeds": [0, 1]}
    ExperimentGrid(dataset="v", fewshot=None, sft=sft, reading=rule)
    with pytest.raises(ValidationError, match="vary only the seed"):
        ExperimentGrid(dataset="v", fewshot=None, sft={**sft, "train_sizes": [100, 400]},
                       reading=rule)
    for seeds in ([0], [0, 0]):
        with pytest.raises(ValidationError, match="at least two"):
            ExperimentGrid(dataset="v", fewshot=None, sft={**sft, "seeds": seeds},
                           reading=rule)


def test_a_grid_without_a_rule_refuses_runs_made_under_one(tmp_path):
    """Deleting ``reading:`` does not read a pre-registered grid's runs post hoc."""
    folder = tmp_path / "run1"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"reading_rule": "a" * 64}))
    plain = tmp_path / "run2"
    plain.mkdir()
    (plain / "config.yaml").write_text(yaml.safe_dump({"reading_rule": None}))
    rows = [{"kind": "sft", "run_id": 1, "run_dir": str(folder)},
            {"kind": "sft", "run_id": 2, "run_dir": str(plain)}]
    with pytest.raises(RunError, match=r"states no rule.*run 1 \(aaaaaaaaaaaa\)"):
        check_runs(rows, None)
    check_runs(rows[1:], None)  # made under no rule: read post hoc


def _two_seed_rows(tmp_path, invalid: dict | None = None) -> list[dict]:
    """label, multitask and answer-first on seeds 0 and 1, multitask clearly better than
    label-only; ``invalid`` marks (target, seed) rows invalid with a reason."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], 100)
    rows = []
    for seed in (0, 1):
        for target, noise in (("label", 2.0), ("multitask", 0.3), ("answer-first", 0.3)):
            p = 1 / (1 + np.exp(-(y + rng.normal(0, noise, y.size))))
            path = tmp_path / f"{target}-{seed}.csv"
            path.write_text("id,label,p_yes\n" + "".join(
                f"P{i:03d},{label},{score!r}\n" for i, (label, score)
                in enumerate(zip(y.tolist(), p.tolist(), strict=True))))
            why = (invalid or {}).get((target, seed))
            rows.append({"kind": "sft", "run_id": len(rows) + 1, "target": target,
                         "scoring": "direct", "predictions": str(path), "valid": not why,
                         "invalid_reason": why, "base_model": "m", "train_size": 8,
                         "seed": seed, "lora_r": 16,
                         "auroc": {"value": float(roc_auc_score(y, p))}})
    return rows


def test_a_contrast_that_lost_a_seed_names_it_and_under_seeds_then_patients_decides_nothing(
        tmp_path):
    from training.mechanism import contrasts, markdown, readings

    rule = ReadingRule.model_validate({
        "contrasts": {"multitask": {"a": ["multitask", "direct"], "b": ["label", "direct"],
                                    "what": "x"}},
        "explanations": {"e": ["multitask"]}, "interval": "seeds-then-patients"})
    why = "says yes 99% of the time (mean P(yes) 0.990), above 95%"
    (both,) = contrasts(_two_seed_rows(tmp_path), 200, 1, rule)
    assert both["pairs"] == 2 and both["left_out"] == [] and both["shown"] == 1
    (one,) = contrasts(_two_seed_rows(tmp_path, {("multitask", 1): why}), 200, 1, rule)
    assert one["pairs"] == 1 and one["interval"] == "patients only (one seed)"
    assert one["left_out"] == [{"seed": 1, "side": "multitask/direct", "why": why}]
    (reading,) = readings([one], rule)
    assert reading["one_seed"] == ["multitask"]
    # the rule reads seeds, then patients: one seed has no training variance to draw, so
    # the contrast is shown but decides nothing (it is shown here: a +0.3 difference)
    assert one["shown"] == 1
    assert reading["tested"] == [] and reading["reading"].startswith(
        "not tested (its contrasts kept one seed")
    (post_hoc,) = readings([one], rule.model_copy(update={"interval": "patients"}))
    assert post_hoc["reading"] == "supported"  # the first rule's one-seed grid read it
    unscored = _two_seed_rows(tmp_path)
    unscored[4]["predictions"] = None  # multitask, seed 1: never scored
    (lost,) = contrasts(unscored, 200, 1, rule)
    assert lost["left_out"] == [{"seed": 1, "side": "multitask/direct",
                                 "why": "no test predictions"}]
    text = "\n".join(markdown([], [one], [], [reading], [], False, [], rule.interval))
    assert f"seed 1 left out (multitask/direct: {why})" in text
    assert "multitask read on one seed (patients only), not counted: the rule reads " \
        "seeds, then patients" in text
    assert "| 1; patients only (one seed); counted in no reading;" in text


def test_an_explanation_shown_only_by_a_contrast_another_predicts_is_not_told_apart(
        tmp_path):
    """Two explanations share the contrast that is shown; the one with a contrast of its
    own that is shown too is told apart, the other is not, and says from which."""
    from training.mechanism import contrasts, readings

    contrast = {"what": "x"}
    rule = ReadingRule.model_validate({
        "contrasts": {"multitask": {**contrast, "a": ["multitask", "direct"],
                                    "b": ["label", "direct"]},
                      "answer first": {**contrast, "a": ["answer-first", "direct"],
                                       "b": ["label", "direct"]}},
        "explanations": {"broad": ["multitask", "answer first"], "narrow": ["multitask"]},
        "interval": "seeds-then-patients"})
    found = contrasts(_two_seed_rows(tmp_path), 200, 1, rule)
    assert all(c["shown"] == 1 for c in found)
    reads = {r["explanation"]: r for r in readings(found, rule)}
    assert reads["narrow"]["reading"] == "supported"
    assert reads["narrow"]["not_told_apart"] == ["broad"]
    assert reads["broad"]["not_told_apart"] == []  # answer first is its own
    only_shared = [c for c in found if c["contrast"] == "multitask"]
    reads = {r["explanation"]: r for r in readings(only_shared, rule)}
    assert reads["broad"]["not_told_apart"] == ["narrow"]
    # an explanation a contrast contradicts is told apart already: not named
    against = [dict(c, shown=-1) if c["contrast"] == "answer first" else c for c in found]
    reads = {r["explanation"]: r for r in readings(against, rule)}
    assert reads["broad"]["reading"] == "contradicted"
    assert reads["narrow"]["reading"] == "supported" and reads["narrow"]["not_told_apart"] == []
    assert reads["broad"]["not_told_apart"] == []  # only a reading that is supported names


def test_a_setting_read_where_its_model_never_learned_to_answer_is_marked_so(tmp_path):
    from training.mechanism import markdown, settings

    rows = _two_seed_rows(tmp_path)
    for r in rows:
        if r["target"] == "answer-first":  # pretend: a rationale model scored direct
            r["target"] = "rationale-free"
    rule = ReadingRule.model_validate(_rule(["label", "direct"], ["multitask", "direct"]))
    marked = {(e["target"], e["scoring"]): e["untrained_position"]
              for e in settings(rows, 200, 1, "patients", rule)}
    assert marked == {("label", "direct"): False, ("multitask", "direct"): False,
                      ("rationale-free", "direct"): True}
    entries = settings(rows, 200, 1, "patients", POST_HOC)  # the first rule marks nothing
    assert not any(e["untrained_position"] for e in entries)
    text = "\n".join(markdown(settings(rows, 200, 1, "patients", rule), [], [], [], [],
                              False, []))
    assert "| rationale-free | direct (not where it was trained to answer; in no contrast) |" \
        in text


def test_the_section_reads_runs_under_the_rule_they_were_made_under_and_says_so(tmp_path):
    """The report's Mechanism section checks every run against the grid's rule, prints
    its hash and says it was pre-registered; a run made under another rule stops it."""
    from training.mechanism import section

    rule = ReadingRule.model_validate({
        "contrasts": {"multitask": {"a": ["multitask", "direct"], "b": ["label", "direct"],
                                    "what": "x"}},
        "explanations": {"e": ["multitask"]}, "interval": "seeds-then-patients"})
    rows = _two_seed_rows(tmp_path)
    for r in rows:
        folder = tmp_path / f"run{r['run_id']}"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"reading_rule": rule.digest()}))
        r["run_dir"] = str(folder)
    out = tmp_path / "report"
    out.mkdir()
    lines, data = section(rows, out, 200, 1, rule)
    # a rule on its own (no grid's scoring settings bound): its pre-registration is its hash
    assert data["reading_rule"] == {"hash": rule.digest(), "rule": rule.digest(),
                                    "pre_registered": True,
                                    "interval": "seeds-then-patients",
                                    "sides_must_learn": True, "amends": []}
    assert f"Pre-registration `{rule.digest()[:12]}` (reading rule `{rule.digest()[:12]}` " \
        "and how each side is scored" in "\n".join(lines)
    assert "stated in the grid's config before its runs" in "\n".join(lines)
    assert [c["contrast"] for c in data["contrasts"]] == ["multitask"]
    (Path(rows[0]["run_dir"]) / "config.yaml").write_text(
        yaml.safe_dump({"reading_rule": "f" * 64}))
    with pytest.raises(RunError, match=r"run 1 \(ffffffffffff\)"):
        section(rows, out, 200, 1, rule)
    with pytest.raises(RunError, match="states no rule"):  # its `reading:` deleted
        section(rows, out, 200, 1, None)


@pytest.mark.parametrize("side", [["answer-first", "direct"],        # not trained here
                                  ["rationale-free", "sampled"]])   # not scored so
def test_a_rule_must_read_what_its_grid_makes(side):
    """A contrast side the grid never produces would be neither read nor listed unread."""
    sft = {"targets": ["label", "rationale-free", "multitask"], "seeds": [0, 1]}
    ExperimentGrid(dataset="v", fewshot=None, sft=sft,
                   reading=_rule(["multitask", "direct"], ["rationale-free", "generate"]))
    with pytest.raises(ValidationError, match=f"reads {side[0]} scored {side[1]}, which "
                                              "this grid does not make"):
        ExperimentGrid(dataset="v", fewshot=None, sft=sft,
                       reading=_rule(["label", "direct"], side))


def test_a_grid_that_scores_every_model_one_way_is_read_that_way():
    """With ``evaluation.scoring: direct`` the rationale model's rows are direct ones: a
    contrast may read them so, and one that asks for its generate result is refused."""
    sft = {"targets": ["label", "rationale-free"], "seeds": [0, 1]}
    rule = {**_rule(["label", "direct"], ["rationale-free", "direct"]),
            "trained_positions_only": False}
    ExperimentGrid(dataset="v", fewshot=None, sft=sft, evaluation={"scoring": "direct"},
                   reading=rule)
    for side in (["rationale-free", "generate"], ["rationale-free", "forced"]):
        with pytest.raises(ValidationError, match="does not make"):
            ExperimentGrid(dataset="v", fewshot=None, sft=sft, evaluation={"scoring": "direct"},
                           reading={**_rule(["label", "direct"], side),
                                    "trained_positions_only": False})


# Amended on 2026-12-07, before any of the grid's runs (no run was ever made under
# 8e7ef937af65): `sides_must_learn: true` added to the rule, and the runs now carry the
# pre-registration digest (rule + scoring settings), not the rule's alone.
MECHANISM_V2_RULE = "4faa154a4505ac3fd250551f5a6ac4acd1199247bda02b8d19e73d4306d96e70"
MECHANISM_V2_PREREGISTRATION = \
    "b1afe78759e7f6f90e105c428acee71a24e7151cd48225ecabe8f11d446ad2a9"


def _mechanism_v2():
    return ReproduceConfig.load(ROOT / "experiments" / "mechanism-v2.yaml").resolve("cpu")[1]


def test_mechanism_v2s_rule_keeps_the_hash_its_runs_are_made_under():
    """The pre-registration digest is in each of its runs' identities: editing the rule's
    wording, adding a field with a default to the rule's models, or changing how a side is
    scored would orphan every run already made."""
    grid = _mechanism_v2()
    assert grid.reading.digest() == MECHANISM_V2_RULE
    assert grid.preregistration() == MECHANISM_V2_PREREGISTRATION
    assert grid.reading.preregistration() == MECHANISM_V2_PREREGISTRATION  # what the report
    assert grid.reading.sides_must_learn and "sides_must_learn" in (  # checks; stated there
        yaml.safe_load((ROOT / "experiments" / "mechanism-v2.yaml").read_text())
        ["grid"]["reading"])


def _mechanism_v2_rows(tmp_path, grid, left_out: dict) -> list[dict]:
    """Every (target, seed, scoring) the real mechanism-v2 grid makes, as report rows
    with synthetic test predictions (200 patients) and run folders stamped with its rule;
    ``left_out`` marks (target, scoring, seed) degenerate with a reason."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from training import seed_report

    rng = np.random.default_rng(17)
    y = np.repeat([1, 0], 100)
    rows = []
    for seed in grid.sft.seeds:
        for target in grid.sft.targets:
            folder = tmp_path / f"{target}-{seed}"
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text(
                yaml.safe_dump({"reading_rule": grid.preregistration()}))
            own = grid.own_scoring(target)
            for scoring in (own, *grid.scorings_for(target)):
                p = 1 / (1 + np.exp(-(y + rng.normal(0, 1.0, y.size))))
                path = folder / f"{scoring}.csv"
                path.write_text("id,label,p_yes\n" + "".join(
                    f"P{i:03d},{label},{score!r}\n"
                    for i, (label, score) in enumerate(zip(y.tolist(), p.tolist(),
                                                           strict=True))))
                why = left_out.get((target, scoring, seed))
                row = {"kind": "sft", "run_id": len(rows) + 1, "target": target,
                       "scoring": scoring, "extra_scoring": scoring != own,
                       "predictions": str(path), "valid": not why, "invalid_reason": why,
                       "invalid_code": "degenerate" if why else None,
                       "base_model": grid.base_models[0], "train_size": 400, "seed": seed,
                       "lora_r": 16, "run_dir": str(folder), "tuned_on": None,
                       "answer_weight_share": None,
                       "auroc": {"value": float(roc_auc_score(y, p)), "low": 0.55,
                                 "high": 0.85}}
                rows.append({**row, **seed_report.run_figures(row)})
    return rows


def test_mechanism_v2s_own_rule_reads_every_contrast_over_both_seeds(tmp_path):
    """The real grid and rule, end to end through the report's code: every contrast is
    read over its two seeds, then the patients; the answer-only ablation is tabulated but
    read in no contrast and no headline; a contrast that loses a seed decides nothing."""
    from training import mechanism, seed_report
    from training.reproduce import conclusions

    grid = _mechanism_v2()
    rows = _mechanism_v2_rows(tmp_path / "all", grid, {})
    lines, data = mechanism.section(rows, tmp_path / "all", 200, 0, grid.reading)
    assert data["reading_rule"] == {"hash": MECHANISM_V2_PREREGISTRATION,
                                    "rule": MECHANISM_V2_RULE, "pre_registered": True,
                                    "interval": "seeds-then-patients",
                                    "sides_must_learn": True, "amends": []}
    assert {c["contrast"] for c in data["contrasts"]} == set(grid.reading.contrasts)
    assert all(c["pairs"] == 2 and c["interval"] == "seeds-then-patients"
               for c in data["contrasts"])
    assert data["unread_contrasts"] == []
    assert all(not r["reading"].startswith("not tested") and not r["one_seed"]
               for r in data["readings"])
    untrained = {(s["target"], s["scoring"]) for s in data["settings"]
                 if s.get("untrained_position")}
    assert untrained == {("rationale-answer-only", "generate")}
    _, seeds = seed_report.section(rows, 200, 0, grid.reading)
    said = conclusions({"rows": [r for r in rows if not r["extra_scoring"]],
                        "all_rows": rows, "seeds": seeds, "references": [], "joint": []})
    assert "label − rationale-answer-only" not in said
    assert "label vs rationale-answer-only (400 patients, generate): not read" in said
    assert "With two seeds the seed draw has three outcomes" in "\n".join(lines)
    assert "label vs rationale-weighted (400 patients, scored sampled, primary)" in said

    why = "says yes 99% of the time (mean P(yes) 0.990), above 95%"
    rows = _mechanism_v2_rows(tmp_path / "lost", grid,
                              {("rationale-weighted", "sampled", 1): why})
    _, data = mechanism.section(rows, tmp_path / "lost", 200, 0, grid.reading)
    weighting = next(c for c in data["contrasts"] if c["contrast"] == "weighting")
    assert weighting["pairs"] == 1 and weighting["interval"] == "patients only (one seed)"
    shift = next(r for r in data["readings"]
                 if r["explanation"] == "next-token loss shifted onto rationale tokens")
    assert shift["tested"] == [] and shift["one_seed"] == ["weighting"]
    assert shift["reading"].startswith("not tested (its contrasts kept one seed")
    dilution = next(r for r in data["readings"]
                    if r["explanation"] == "dilution of the answer's gradient by length")
    assert dilution["tested"] == ["length"] and dilution["reading"] != "supported"


# --- sides must learn --------------------------------------------------------------------

def _rows_of(tmp_path, arms: dict[str, list], scoring: str = "direct") -> list[dict]:
    """Report rows of ``arms`` (target -> one P(yes) vector per seed; 200 patients, the
    first 100 positive), each with its predictions file."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    y = np.repeat([1, 0], 100)
    rows = []
    for target, seeds in arms.items():
        for seed, p in enumerate(seeds):
            path = tmp_path / f"{target}-{seed}.csv"
            path.write_text("id,label,p_yes\n" + "".join(
                f"P{i:03d},{label},{score!r}\n" for i, (label, score)
                in enumerate(zip(y.tolist(), np.asarray(p).tolist(), strict=True))))
            rows.append({"kind": "sft", "run_id": len(rows) + 1, "target": target,
                         "scoring": scoring, "predictions": str(path), "valid": True,
                         "invalid_reason": None, "base_model": "m", "train_size": 8,
                         "seed": seed, "lora_r": 16,
                         "auroc": {"value": float(roc_auc_score(y, p))}})
    return rows


def _chance_and_below(seed: int = 5):
    """The first report's failure: one side at chance, the other below it, so that their
    difference is "shown" although neither ranks the patients."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.repeat([1, 0], 100)
    at_chance = [rng.uniform(size=y.size) for _ in range(2)]
    below = [1 / (1 + np.exp(-(-0.6 * y + rng.normal(0, 1, y.size)))) for _ in range(2)]
    return at_chance, below


@pytest.mark.parametrize("interval", ["patients", "seeds-then-patients"])
def test_a_contrast_with_a_side_that_has_not_learned_is_not_read(tmp_path, interval):
    """A chance-level side against a below-chance one: the difference's CI excludes 0,
    but neither side ranks the patients, so under ``sides_must_learn`` the contrast is
    listed unread, naming the side, its AUROC and interval, and decides no reading; the
    first report's rule (off) read it as support."""
    from training.mechanism import contrasts, markdown, readings, side_auroc, unread

    at_chance, below = _chance_and_below()
    rows = _rows_of(tmp_path, {"multitask": at_chance, "label": below})
    rule = ReadingRule.model_validate({**_rule(["multitask", "direct"], ["label", "direct"]),
                                       "interval": interval})
    assert rule.sides_must_learn  # on unless a rule says otherwise
    (found,) = contrasts(rows, 400, 1, rule)
    assert found["shown"] == 1  # the difference alone would be read
    sides = found["sides"]
    assert set(sides) == {"multitask/direct", "label/direct"}
    assert sides["label/direct"]["auroc"] < 0.5 and not sides["label/direct"]["low"] > 0.5
    assert not sides["multitask/direct"]["low"] > 0.5
    assert "label/direct has not shown it learned: seed-mean test AUROC " \
        f"{sides['label/direct']['auroc']:.3f} [{sides['label/direct']['low']:.3f}, " \
        f"{sides['label/direct']['high']:.3f}] over 2 cell(s)" in found["not_learned"]
    # the side's interval is the library's: the seed-mean AUROC drawn as the rule says
    import numpy as np
    y = np.repeat([1, 0], 100)
    assert sides["label/direct"] == side_auroc(below, y, interval, 400, 1)
    (reading,) = readings([found], rule)
    assert reading["tested"] == [] and reading["not_learned"] == ["c"]
    assert reading["reading"].startswith("not tested (a side of its contrasts has not "
                                         "shown it learned")
    # the section lists it unread (not among the contrasts read) and says why
    from training.mechanism import learned, not_learned
    missing = unread(rows, [found], rule) + not_learned([found])
    assert learned([found]) == [] and [m["contrast"] for m in missing] == ["c"]
    text = "\n".join(markdown([], learned([found]), missing, [reading], [], False, [],
                              interval))
    (line,) = [x for x in text.splitlines() if x.startswith("- not read: **c** (")]
    assert "label/direct has not shown it learned: seed-mean test AUROC" in line
    assert "c not read: a side has not shown it learned" in text
    # the first report's rule read the same numbers as support
    first = rule.model_copy(update={"sides_must_learn": False})
    (old,) = contrasts(rows, 400, 1, first)
    assert old["sides"] is None and not old["not_learned"]
    assert readings([old], first)[0]["reading"] == "supported"


def test_a_contrast_whose_sides_both_learned_is_read(tmp_path):
    import numpy as np

    from training.mechanism import contrasts, readings

    rng = np.random.default_rng(2)
    y = np.repeat([1, 0], 100)
    arms = {t: [1 / (1 + np.exp(-(y * shift + rng.normal(0, 1, y.size)))) for _ in range(2)]
            for t, shift in (("multitask", 2.0), ("label", 1.0))}
    rule = ReadingRule.model_validate({**_rule(["multitask", "direct"], ["label", "direct"]),
                                       "interval": "seeds-then-patients"})
    (found,) = contrasts(_rows_of(tmp_path, arms), 400, 1, rule)
    assert found["not_learned"] == "" and all(s["low"] > 0.5 for s in found["sides"].values())
    assert readings([found], rule)[0]["reading"] == "supported"


def test_sides_must_learn_is_pre_registered_and_its_change_is_refused(tmp_path):
    """The field is in the rule's hash when on (a rule without it, read as before it
    existed, keeps its hash), so runs made under the rule with it off are refused by a
    report that reads with it on, and the other way round."""
    base = _rule(["label", "direct"], ["multitask", "direct"])
    on = ReadingRule.model_validate(base)
    explicit = ReadingRule.model_validate({**base, "sides_must_learn": True})
    off = ReadingRule.model_validate({**base, "sides_must_learn": False})
    assert on.digest() == explicit.digest() != off.digest()
    assert not POST_HOC.sides_must_learn  # the first report's rule, hash unchanged
    folder = tmp_path / "run1"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump({"reading_rule": off.digest()}))
    rows = [{"kind": "sft", "run_id": 1, "run_dir": str(folder)}]
    check_runs(rows, off)
    with pytest.raises(RunError, match=rf"changed.*{on.digest()[:12]}.*run 1 "
                                       rf"\({off.digest()[:12]}\)"):
        check_runs(rows, on)


# --- the pre-registration: the rule and how each side is scored --------------------------

def _v2_like(**changes) -> ExperimentGrid:
    grid = {"dataset": "v", "fewshot": None,
            "sft": {"targets": ["label", "rationale-free", "multitask"], "seeds": [0, 1]},
            "extra_scorings": ["sampled"],
            "reading": _rule(["rationale-free", "sampled"], ["rationale-free", "generate"]),
            "evaluation": {"n_samples": 5}}
    for key, value in changes.items():
        if key in ("evaluation", "reading"):
            grid[key] = {**grid[key], **value}
        else:
            grid[key] = value
    return ExperimentGrid.model_validate(grid)


@pytest.mark.parametrize("change", [
    {"evaluation": {"n_samples": 10}}, {"evaluation": {"sample_temperature": 0.7}},
    {"evaluation": {"seed": 3}}, {"evaluation": {"max_rationale_tokens": 300}},
    {"evaluation": {"min_reached_answer": 0.8}}, {"evaluation": {"max_one_answer_share": 0.99}},
    {"extra_scorings": ["sampled", "direct"]},
    {"extra_scoring_targets": {"sampled": ["rationale-free"]}},
    {"select_on": "primary"},
    {"reading": {"sides_must_learn": False}},
])
def test_the_pre_registration_digest_changes_with_how_each_side_is_scored(change):
    """Scoring a reused run otherwise after its results are seen changes the digest its
    runs are made and read under; where the scores are computed does not."""
    grid = _v2_like()
    changed = _v2_like(**change)
    assert changed.preregistration() != grid.preregistration()
    assert changed.reading.preregistration() == changed.preregistration()  # the report's
    ids = {c.identity("h") for _, cs in grid.sft_cells() for c in cs}
    assert not ids & {c.identity("h") for _, cs in changed.sft_cells() for c in cs}


def test_where_scores_are_computed_is_not_pre_registered():
    grid = _v2_like()
    for same in ({"batch_size": 64}, {"server_url": "http://localhost:8000/v1"}):
        assert _v2_like(evaluation=same).preregistration() == grid.preregistration()


def _rows_made_under(tmp_path, digest: str) -> list[dict]:
    """Two seeds' report rows whose run folders echo a config made under ``digest``."""
    rows = _two_seed_rows(tmp_path)
    for r in rows:
        folder = tmp_path / f"run{r['run_id']}"
        folder.mkdir()
        (folder / "config.yaml").write_text(yaml.safe_dump({"reading_rule": digest}))
        r["run_dir"] = str(folder)
    return rows


def test_a_report_refuses_runs_scored_with_other_sampling_settings(tmp_path):
    """Runs made (and scored) with 5 samples are not read by a grid that now samples 10,
    though its reading rule is word for word the same."""
    from training.mechanism import section

    made = _v2_like()
    now = _v2_like(evaluation={"n_samples": 10})
    assert made.reading.digest() == now.reading.digest()
    rows = _rows_made_under(tmp_path, made.preregistration())
    with pytest.raises(RunError, match=rf"pre-registration \(rule and scoring settings\) is "
                                       rf"{now.preregistration()[:12]}"):
        section(rows, tmp_path, 200, 1, now.reading)


def test_a_rule_given_to_a_grid_is_bound_to_that_grids_scoring_alone():
    rule = ReadingRule.model_validate(_rule(["rationale-free", "sampled"],
                                            ["rationale-free", "generate"]))
    grid = _v2_like(reading=rule.model_dump())
    other = ExperimentGrid.model_validate({**grid.model_dump(), "reading": rule,
                                           "evaluation": {"n_samples": 7}})
    assert rule.preregistration() == rule.digest()  # the rule given is left unbound
    assert grid.reading.preregistration() != other.reading.preregistration()
    grid.evaluation = grid.evaluation.model_copy(update={"n_samples": 9})  # assigned: bound again
    assert grid.reading.preregistration() == grid.preregistration()


# --- a grid refuses to start over runs made under another pre-registration ---------------

def _store_runs(engine, grid: ExperimentGrid, made: str | None, status: str = "finished",
                seeds=None) -> None:
    import hashlib

    from sqlmodel import Session

    from annotation_db.models import TrainingRun

    with Session(engine) as session:
        for factors, candidates in grid.sft_cells():
            if seeds is not None and factors["seed"] not in seeds:
                continue
            for c in candidates:
                config = c.model_dump(mode="json") | {"reading_rule": made}
                session.add(TrainingRun(kind="sft", target=c.target, base_model=c.base_model,
                                        config=config, config_hash=hashlib.sha256(
                                            f"{made}-{c.identity('h')}".encode()).hexdigest(),
                                        run_dir=f"/nowhere/sft-{c.target}-{c.seed}",
                                        status=status))
        session.commit()


def test_a_grid_refuses_to_start_over_its_runs_made_under_another_pre_registration(engine):
    """Changing the rule or its scoring after runs of the grid's cells exist stops the
    grid before it trains anything, naming both digests; the rule's ``amends`` lets it
    go on, and the report says the rule was amended after runs existed."""
    from training.grid.experiment import check_preregistration, run_experiment

    before = _v2_like()
    _store_runs(engine, before, before.preregistration())
    check_preregistration(engine, before)  # its own runs: reused, nothing to refuse
    after = _v2_like(evaluation={"n_samples": 10})
    ran = []
    with pytest.raises(RunError, match=rf"{after.preregistration()}.*"
                                       rf"under `{before.preregistration()}`.*"
                                       "reading.amends") as refused:
        run_experiment(engine, after, runner=lambda *a, **k: ran.append(1))
    assert ran == []  # refused before any run
    assert "6 under" in str(refused.value)  # 3 targets × 2 seeds
    amended = _v2_like(evaluation={"n_samples": 10},
                       reading={"amends": [before.preregistration()[:12]]})
    check_preregistration(engine, amended)
    assert amended.preregistration() != after.preregistration()  # the amendment is recorded


def test_runs_under_no_rule_other_cells_or_unfinished_are_not_an_amendment(engine):
    from training.grid.experiment import check_preregistration

    grid = _v2_like()
    _store_runs(engine, grid, None)                      # a rule-less grid's runs (v1)
    _store_runs(engine, grid, "e" * 64, status="failed")  # never finished
    other_seeds = _v2_like(sft={"targets": ["label", "rationale-free", "multitask"],
                                "seeds": [5, 6]})
    _store_runs(engine, other_seeds, "d" * 64)          # other cells
    check_preregistration(engine, grid)
    with pytest.raises(ValidationError, match="not a digest"):
        _v2_like(reading={"amends": ["abc"]})


def test_an_amended_rule_says_so_in_the_report(tmp_path):
    from training.mechanism import section

    rule = ReadingRule.model_validate({
        "contrasts": {"multitask": {"a": ["multitask", "direct"], "b": ["label", "direct"],
                                    "what": "x"}},
        "explanations": {"e": ["multitask"]}, "amends": ["a" * 64]})
    assert rule.digest() != rule.model_copy(update={"amends": []}).digest()
    rows = _rows_made_under(tmp_path, rule.preregistration())
    lines, data = section(rows, tmp_path, 200, 1, rule)
    assert data["reading_rule"]["amends"] == ["a" * 64]
    assert any(line.startswith("- Rule amended after runs existed: earlier digest "
                               "`aaaaaaaaaaaa`") for line in lines)


# --- the secondary tables follow the rule's trained positions ----------------------------

def test_the_secondary_comparisons_leave_out_rows_read_where_no_model_was_trained(tmp_path):
    """Under a rule that reads trained positions only, the answer-only ablation's
    rationale (it was never trained to write one) is in no DeLong test, joint comparison
    or secondary sentence, and the conclusions say why once; without a rule it is."""
    import numpy as np

    from training.grid.results import ResultRow
    from training.grid.stats import comparisons, joint_differences, label_pairs, untrained_note
    from training.reproduce import conclusions

    rng = np.random.default_rng(4)
    y = np.repeat([1, 0], 100)
    rows = []
    for seed in (0, 1):
        for target, scoring in (("label", "direct"), ("rationale-free", "generate"),
                                ("rationale-answer-only", "generate")):
            p = 1 / (1 + np.exp(-(y + rng.normal(0, 1, y.size))))
            path = tmp_path / f"{target}-{seed}.csv"
            path.write_text("id,label,p_yes\n" + "".join(
                f"P{i:03d},{label},{score!r}\n" for i, (label, score)
                in enumerate(zip(y.tolist(), p.tolist(), strict=True))))
            rows.append(ResultRow(kind="sft", base_model="m", target=target, train_size=8,
                                  seed=seed, lora_r=16, run_id=len(rows) + 1,
                                  scoring=scoring, predictions=str(path), valid=True))
    rule = ReadingRule.model_validate(_rule(["label", "direct"],
                                            ["rationale-free", "generate"]))
    assert {r.target for _, r in label_pairs(rows)} == {"rationale-free",
                                                        "rationale-answer-only"}
    assert {r.target for _, r in label_pairs(rows, rule)} == {"rationale-free"}
    assert {c["comparison"] for c in comparisons(rows, rule)} == {"label vs rationale-free"}
    assert len(comparisons(rows)) == 4  # no rule: every pair, as before
    joint = joint_differences(rows, 200, 1, rule)
    assert [j["target"] for j in joint] == ["rationale-free"]
    assert untrained_note(rows, rule).endswith(
        "trained to answer: rationale-answer-only scored generate (each read where its "
        "model was never trained to answer).")
    assert untrained_note(rows, None) is None
    assert untrained_note(rows, POST_HOC) is None  # the first rule reads every position

    # the conclusions drop it from the secondary sentences even when handed it
    everything = joint_differences(rows, 200, 1)
    results = {"rows": [r.as_dict() for r in rows], "seeds": {}, "references": [],
               "joint": everything}
    said = conclusions(results, rule)
    assert "label vs rationale-answer-only" not in said
    assert "label vs rationale-free" in said
    assert said.count("Left out of the secondary readings below: rationale-answer-only "
                      "scored generate") == 1
    assert "label vs rationale-answer-only" in conclusions(results)  # no rule: as before


# --- the report's title and the grid's settings ------------------------------------------

def test_the_report_names_its_config_and_says_when_its_candidates_are_untuned():
    from types import SimpleNamespace

    from training.reproduce import _study_markdown
    from training.study_config import DataSettings

    version = SimpleNamespace(name="v", content_hash="ab" * 32, manifest={"counts": {}})
    grid = _mechanism_v2().model_dump(mode="json")
    summary = {"name": "mechanism-v2", "scale": "cpu", "wall_seconds": 1, "data_seconds": 1,
               "command": "c", "data": {"teacher": ["t"], "audit": {}}, "grid": grid}
    text = _study_markdown(summary, "# r\n", version, DataSettings())
    assert text.startswith("# Reproduction report — `mechanism-v2`, scale `cpu`\n")
    assert "The SFT runs are **untuned**: every target trains with one learning rate " \
        "(0.001) for 2 epochs" in text
    tuned = {**grid, "sft": {**grid["sft"], "learning_rates": [1e-4, 1e-3]}}
    assert "untuned" not in _study_markdown({**summary, "grid": tuned}, "# r\n", version,
                                            DataSettings())


def test_mechanism_v2_validates_no_epoch_directly():
    """Per-epoch direct validation reads rationale models where they were never trained
    to answer; it is bookkeeping, so turning it off leaves every run's identity as is."""
    grid = _mechanism_v2()
    runs = [c for _, cs in grid.sft_cells() for c in cs]
    assert not any(c.validate_each_epoch for c in runs)
    assert all(c.identity("h") == c.model_copy(update={"validate_each_epoch": True})
               .identity("h") for c in runs)
