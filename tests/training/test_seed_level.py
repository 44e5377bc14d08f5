"""Seed-level statistics: the hierarchical bootstrap's coverage in a simulation with known
seed and patient variance, degenerate runs, and balanced accuracy at a matched yes-rate."""

import numpy as np
import pytest

from training import seed_report
from training.metrics import paired_bootstrap_difference
from training.seed_coverage import coverage
from training.seed_level import (
    balanced_accuracy_at_rate,
    degenerate,
    hierarchical_difference,
    yes_rate,
)


@pytest.mark.parametrize("seeds", [3, 2])  # the cpu scale's and the mechanism grid's
def test_the_hierarchical_interval_covers_the_true_difference_95_percent_of_the_time(seeds):
    """With the cpu scale's seed spread (training/seed_coverage.py; its 2,000-trial run gave
    94.0% with 3 seeds and 93.6% with 2, 86.9% and 80.8% at twice the spread, as the
    reports say)."""
    assert 0.93 <= coverage(seeds) <= 0.97


def test_with_one_seed_it_is_the_paired_patient_bootstrap():
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 40)
    a, b = rng.random(80) + y * 0.3, rng.random(80)
    one_seed = hierarchical_difference(y, [a], [b], n_resamples=500, seed=4)
    paired = paired_bootstrap_difference(y, a, b, metric="auroc", n_resamples=500, seed=4)
    assert (one_seed["value"], one_seed["low"], one_seed["high"]) == pytest.approx(
        (paired.value, paired.low, paired.high))


def test_seed_spread_widens_the_interval_and_per_seed_metrics_are_reported():
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 100)
    shared = rng.normal(size=200)
    steady = [y * 1.0 + shared + rng.normal(size=200) * 0.5 for _ in range(3)]
    scattered = [y * s + shared + rng.normal(size=200) * 0.5 for s in (0.2, 1.0, 1.8)]
    reference = [y * 1.0 + shared + rng.normal(size=200) * 0.5 for _ in range(3)]
    calm = hierarchical_difference(y, reference, steady, n_resamples=800)
    wild = hierarchical_difference(y, reference, scattered, n_resamples=800)
    assert wild["high"] - wild["low"] > 2 * (calm["high"] - calm["low"])
    assert len(wild["per_seed_b"]) == 3 and wild["seeds"] == [3, 3]
    assert wild["per_seed_b"] == sorted(wild["per_seed_b"])  # more signal, higher AUROC


def test_paired_seeds_need_as_many_seeds_in_each_arm():
    y = np.repeat([1, 0], 5)
    with pytest.raises(ValueError, match="as many seeds"):
        hierarchical_difference(y, [np.linspace(0, 1, 10)] * 3, [np.linspace(0, 1, 10)] * 2)
    unpaired = hierarchical_difference(y, [np.linspace(0, 1, 10)] * 3,
                                       [np.linspace(1, 0, 10)] * 2, paired_seeds=False,
                                       n_resamples=200)
    assert unpaired["seeds"] == [3, 2]


@pytest.mark.parametrize("scores, reason", [
    ([0.99] * 97 + [0.01] * 3, "says yes 96% of the time (mean P(yes) 0.961), above 95%"),
    ([0.01] * 97 + [0.99] * 3, "says yes 4% of the time (mean P(yes) 0.039), below 5%"),
    ([1.0] * 95 + [0.0] * 5, None),  # exactly 95%: not above it
    ([0.6] * 50 + [0.4] * 50, None),
    ([0.4] * 100, None),  # graded and below 0.5 for all: its calibration, not one answer
])
def test_a_run_that_says_the_same_for_nearly_everyone_is_degenerate(scores, reason):
    assert degenerate(scores) == reason


@pytest.mark.parametrize("n_yes, n", [(10, 200), (5, 100), (190, 200), (95, 100)])
def test_a_run_at_exactly_the_bound_is_not_degenerate(n_yes, n, tmp_path):
    """10 of 200 is 5%, not below it, though ``1 − 0.95`` is 0.05000000000000004 in
    floating point; through the report's own path, with its bound from the config."""
    y = np.arange(n) % 2
    scores = [1.0] * n_yes + [0.0] * (n - n_yes)
    row = _row(tmp_path, "label", 0, y, scores, scoring="direct")
    assert row["degenerate"] is None
    fifths = [0.2] * (5 * n_yes) + [0.0] * (n - 5 * n_yes) if 5 * n_yes <= n else None
    if fifths:  # sampled: a mean of fifths that sums to exactly the bound
        assert degenerate(fifths, sampled=True) is None


def test_yes_rate_counts_scores_at_or_above_the_threshold():
    assert yes_rate([0.5, 0.49, 0.9, 0.1]) == 0.5


def test_a_sampled_run_says_yes_in_the_share_of_its_sampled_answers():
    """Sampled scores are the share of a patient's 5 rationales that conclude yes. A run
    concluding yes in 2 of 5 for everyone says yes 40% of the time: not degenerate,
    though a majority vote would call it "no" for all."""
    two_of_five = [0.4] * 100
    assert yes_rate(two_of_five, sampled=True) == pytest.approx(0.4)
    assert degenerate(two_of_five, sampled=True) is None
    assert degenerate([0.0] * 97 + [0.2] * 3, sampled=True) \
        == "says yes in 1% of its sampled answers, below 5%"


def test_balanced_accuracy_at_a_matched_rate_calls_the_top_scores_yes():
    y = [1, 1, 0, 0]
    assert balanced_accuracy_at_rate(y, [0.9, 0.8, 0.7, 0.1], rate=0.5) == 1.0
    assert balanced_accuracy_at_rate(y, [0.9, 0.7, 0.8, 0.1]) == 0.5  # rate = prevalence
    assert balanced_accuracy_at_rate(y, [0.9, 0.8, 0.7, 0.1], rate=0.75) == 0.75


def test_ties_at_the_cut_are_split_in_expectation_whatever_the_order():
    # three tied "yes" scores for two places: each tied patient is called yes 2/3 of a time
    y, p = [1, 0, 1, 0], [1.0, 1.0, 1.0, 0.0]
    expected = ((2 * 2 / 3) / 2 + (1 / 3 + 1) / 2) / 2
    assert balanced_accuracy_at_rate(y, p, rate=0.5) == pytest.approx(expected)
    assert balanced_accuracy_at_rate(y[::-1], p[::-1], rate=0.5) == pytest.approx(expected)


def test_balanced_accuracy_at_rate_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="both classes"):
        balanced_accuracy_at_rate([1, 1], [0.2, 0.3], rate=0.5)
    with pytest.raises(ValueError, match="rate"):
        balanced_accuracy_at_rate([1, 0], [0.2, 0.3], rate=1.5)


def _row(folder, target, seed, y, p, scoring="generate", run_id=None):
    """A report row as the grid collects it, with its predictions file."""
    path = folder / f"{target}-{scoring}-{seed}.csv"
    path.write_text("id,label,p_yes\n" + "".join(
        f"P{i:04d},{label},{float(score)!r}\n"
        for i, (label, score) in enumerate(zip(y, p, strict=True))))
    row = {"kind": "sft", "target": target, "scoring": scoring, "seed": seed,
           "train_size": 400, "run_id": run_id or f"{target}-{seed}", "valid": True,
           "invalid_reason": None, "predictions": str(path)}
    figures = seed_report.run_figures(row)
    if figures["degenerate"]:
        row.update(valid=False, invalid_reason=figures["degenerate"])
    from sklearn.metrics import roc_auc_score

    return {**row, **figures, "auroc": {"value": roc_auc_score(y, p)}}


def test_the_seed_section_compares_the_seeds_both_arms_kept_and_says_why_one_was_left_out(
        tmp_path):
    rng = np.random.default_rng(5)
    y = np.repeat([1, 0], 50)
    rows = [_row(tmp_path, "label", s, y, 1 / (1 + np.exp(-(y + rng.normal(size=100)))),
                 scoring="direct") for s in (0, 1, 2)]
    rows += [_row(tmp_path, "rationale-free", s, y,
                  np.where(rng.random(100) < 0.5 + 0.2 * (y - 0.5), 0.97, 0.03))
             for s in (0, 1)]
    rows.append(_row(tmp_path, "rationale-free", 2, y, np.full(100, 0.99)))  # always yes
    lines, data = seed_report.section(rows, n_resamples=300, seed=0)
    text = "\n".join(lines)
    (head,) = data["headline"]
    assert head["comparison"] == "label vs rationale-free" and head["paired_seeds"]
    assert head["label_seeds"] == head["rationale_seeds"] == [0, 1]
    assert head["value"] == pytest.approx(
        np.mean([r["auroc"]["value"] for r in rows[:2]])
        - np.mean([r["auroc"]["value"] for r in rows[3:5]]))
    assert "says yes 99% of the time (mean P(yes) 0.990), above 95%" in text
    # per seed: the share it says yes for beside the mean P(yes) the rule reads
    (always,) = [line for line in lines if line.startswith("| 400 | rationale-free | "
                                                          "generate | 2 |")
                 and line.endswith("above 95% |")]
    assert "| 1.00 | 0.99 |" in always
    # the tuning caveat only where later seeds reuse a first seed's choice
    assert "is the seed the learning rate" not in text
    tuned = [{**r, "tuned_on": "validation (sampled), seed 0"} if r["seed"] else r
             for r in rows]
    assert "Seed 0 is the seed the learning rate and epochs were chosen with" in "\n".join(
        seed_report.section(tuned, n_resamples=100, seed=0)[0])
    label = next(t for t in data["targets"] if t["target"] == "label")
    assert label["seeds"] == [0, 1, 2] and label["sd_auroc"] is not None
    # the seed left out is named where the headline is, with the comparison including it
    assert head["dropped"] == [
        {"arm": "label", "seed": 2, "why": "no paired seed"},
        {"arm": "rationale", "seed": 2,
         "why": "says yes 99% of the time (mean P(yes) 0.990), above 95%"}]
    again = head["with_left_out"]
    assert again["label_seeds"] == again["rationale_seeds"] == [0, 1, 2]
    assert again["value"] == pytest.approx(
        np.mean([r["auroc"]["value"] for r in rows[:3]])
        - np.mean([r["auroc"]["value"] for r in rows[3:]]))
    assert "(left out label seed 2: no paired seed; rationale seed 2: says yes 99%" in text
    assert f"with them: {again['value']:+.3f}" in text
    assert "over label seeds 0, 1, 2 and rationale seeds 0, 1, 2" in text
    from training.reproduce import conclusions

    said = conclusions({"rows": rows, "seeds": data, "references": [], "joint": []})
    assert "It left out label seed 2" in said and \
        "over label seeds 0, 1, 2 and rationale seeds 0, 1, 2" in said


def test_the_headline_leads_with_sampled_scoring_and_keeps_every_target_in_view(tmp_path):
    """Sampled rationales are the primary comparison where a target has them, listed
    first, greedy beside them; a target whose every seed was left out still has its line,
    with the reasons; one seed per arm is said to be an interval over patients only."""
    rng = np.random.default_rng(7)
    y = np.repeat([1, 0], 50)

    def graded():
        return 1 / (1 + np.exp(-(y + rng.normal(size=100))))

    rows = [_row(tmp_path, "label", s, y, graded(), scoring="direct") for s in (0, 1)]
    for s in (0, 1):
        rows.append(_row(tmp_path, "rationale-free", s, y,
                         np.where(rng.random(100) < 0.5 + 0.2 * (y - 0.5), 0.97, 0.03)))
        rows.append({**_row(tmp_path, "rationale-free", s, y, graded() * 0.4,
                            scoring="sampled"), "extra_scoring": True})
        rows.append(_row(tmp_path, "rationale-stepwise", s, y, np.full(100, 0.99)))
    rows.append(_row(tmp_path, "rationale-align", 0, y, graded()))
    for s in (0, 1):  # a filler model: read after its filler, not by what it wrote
        rows.append(_row(tmp_path, "label-padded", s, y, graded()))
        rows.append({**_row(tmp_path, "label-padded", s, y, graded(), scoring="prefilled"),
                     "extra_scoring": True})
    lines, data = seed_report.section(rows, n_resamples=200, seed=0)
    text = "\n".join(lines)
    heads = [(h["target"], h["scoring"], h["primary"]) for h in data["headline"]]
    assert heads == [("label-padded", "prefilled", True),
                     ("label-padded", "generate", False),
                     ("rationale-align", "generate", True),
                     ("rationale-free", "sampled", True),
                     ("rationale-free", "generate", False),
                     ("rationale-stepwise", "generate", True)]
    align, stepwise = data["headline"][2], data["headline"][-1]
    assert align["interval"] == "patients only (one seed)"
    assert stepwise["left_out"] == "says yes 99% of the time (mean P(yes) 0.990), above 95%"
    assert "sampled (primary)" in text and "left out: says yes 99%" in text
    free_sampled = next(t for t in data["targets"]
                        if (t["target"], t["scoring"]) == ("rationale-free", "sampled"))
    assert free_sampled["seeds"] == [0, 1]  # 40% of its answers say yes: not degenerate
    (stepwise_row,) = [t for t in data["targets"] if t["target"] == "rationale-stepwise"]
    assert stepwise_row["seeds"] == [] and stepwise_row["left_out"]
    assert "none valid: says yes 99%" in text
    # the report's conclusions read these entries as they come
    from training.reproduce import conclusions

    said = conclusions({"rows": rows, "seeds": data, "references": [], "joint": []})
    assert "label vs rationale-free (400 patients, scored sampled, primary)" in said
    assert "label vs rationale-stepwise (400 patients, generate): not compared" in said
    assert "patients only (one seed)" in said


def test_under_a_reading_rule_the_headline_reads_no_model_where_it_never_learned_to_answer(
        tmp_path):
    """The mechanism grid's rule reads trained positions only: the answer-only ablation's
    rationale (its loss was on the answer alone) is listed, left out with that reason,
    never primary, and the conclusions say it was not read. Without a rule (the main
    reproduction) it leads like any other target's own scoring."""
    from training.reading_rule import ReadingRule
    from training.reproduce import conclusions

    rng = np.random.default_rng(11)
    y = np.repeat([1, 0], 50)

    def graded():
        return 1 / (1 + np.exp(-(y + rng.normal(size=100))))

    rows = []
    for s in (0, 1):
        rows.append(_row(tmp_path, "label", s, y, graded(), scoring="direct"))
        rows.append(_row(tmp_path, "rationale-answer-only", s, y, graded()))
        rows.append(_row(tmp_path, "label-padded", s, y, graded()))
        rows.append({**_row(tmp_path, "label-padded", s, y, graded(), scoring="prefilled"),
                     "extra_scoring": True})
    rule = ReadingRule.model_validate({
        "contrasts": {"length": {"a": ["label", "direct"], "b": ["label-padded", "prefilled"],
                                 "what": "x"}},
        "explanations": {"e": ["length"]}, "interval": "seeds-then-patients"})
    _, data = seed_report.section(rows, n_resamples=100, seed=0, rule=rule)
    heads = {(h["target"], h["scoring"]): h for h in data["headline"]}
    answer_only = heads[("rationale-answer-only", "generate")]
    assert answer_only["untrained_position"] and not answer_only["primary"]
    assert answer_only["left_out"] == seed_report.UNTRAINED
    assert heads[("label-padded", "prefilled")]["primary"]
    assert not heads[("label-padded", "generate")]["primary"]
    said = conclusions({"rows": rows, "seeds": data, "references": [], "joint": []})
    assert ("label vs rationale-answer-only (400 patients, generate): not read; read "
            "where this model was never trained to answer") in said
    assert "label − rationale-answer-only" not in said
    assert "label vs label-padded (400 patients, scored prefilled, primary): label − " \
        "label-padded" in said
    _, plain = seed_report.section(rows, n_resamples=100, seed=0)
    assert next(h for h in plain["headline"]
                if h["target"] == "rationale-answer-only")["primary"]


def test_a_size_without_a_valid_label_only_run_says_so(tmp_path):
    y = np.repeat([1, 0], 50)
    rows = [_row(tmp_path, "label", 0, y, np.full(100, 0.01), scoring="direct"),
            _row(tmp_path, "rationale-free", 0, y, np.where(y == 1, 0.9, 0.2))]
    (head,) = seed_report.headline(rows, n_resamples=100, seed=0)
    assert head["left_out"] == "label-only: says yes 1% of the time (mean P(yes) 0.010), below 5%"


def test_every_llm_run_reports_its_yes_rate_and_matched_balanced_accuracy(tmp_path):
    y = [1, 1, 0, 0]
    row = _row(tmp_path, "label", 0, y, [0.9, 0.6, 0.7, 0.2], scoring="direct")
    assert row["yes_rate"] == 0.75 and row["degenerate"] is None
    assert row["mean_p_yes"] == pytest.approx(0.6)  # what the degenerate rule reads
    assert row["balanced_accuracy_matched"] == 0.5  # top two: 0.9 (yes) and 0.7 (no)


def test_the_comparison_with_left_out_seeds_uses_every_run_of_each_arm(tmp_path):
    """Beside the headline, "with them" is each arm's every run with predictions, paired
    only when both arms have the same seeds, so a seed left out for want of a pair comes
    back, unpaired; and no seed of either arm is silently lost."""
    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], 50)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()

    def graded():
        return 1 / (1 + np.exp(-(y + rng.normal(size=100))))

    def conclusion():
        return np.where(rng.random(100) < 0.5 + 0.2 * (y - 0.5), 0.97, 0.03)

    # label has seed 2, the rationale arm never ran it: it comes back unpaired
    rows = [_row(tmp_path / "a", "label", s, y, graded(), scoring="direct") for s in (0, 1, 2)]
    rows += [_row(tmp_path / "a", "rationale-free", s, y, conclusion()) for s in (0, 1)]
    (head,) = seed_report.headline(rows, n_resamples=100, seed=0)
    assert head["dropped"] == [{"arm": "label", "seed": 2, "why": "no paired seed"}]
    again = head["with_left_out"]
    assert (again["label_seeds"], again["rationale_seeds"], again["paired_seeds"]) == \
        ([0, 1, 2], [0, 1], False)

    # rationale seed 0 degenerate, seed 2 valid; label seeds 0 and 1: the headline is
    # unpaired ([0, 1] against [2]); with every run, [0, 1] against [0, 2], unpaired
    rows = [_row(tmp_path / "b", "label", s, y, graded(), scoring="direct") for s in (0, 1)]
    rows.append(_row(tmp_path / "b", "rationale-free", 0, y, np.full(100, 0.99)))
    rows.append(_row(tmp_path / "b", "rationale-free", 2, y, conclusion()))
    (head,) = seed_report.headline(rows, n_resamples=100, seed=0)
    assert (head["label_seeds"], head["rationale_seeds"], head["paired_seeds"]) == \
        ([0, 1], [2], False)
    again = head["with_left_out"]
    assert (again["label_seeds"], again["rationale_seeds"], again["paired_seeds"]) == \
        ([0, 1], [0, 2], False)
    assert "over label seeds 0, 1 and rationale seeds 0, 2, unpaired" in \
        seed_report.dropped_text(head)


def test_the_seed_section_states_its_degenerate_rule_its_spread_and_how_tuning_chose(
        tmp_path):
    """The section says which rule left runs out and which runs a rule on the share said
    yes to would also drop; how this report's seeds spread beside the simulation's; and
    each tuned cell's candidates with their validation scores and the choice."""
    rng = np.random.default_rng(11)
    y = np.repeat([1, 0], 50)
    # label-only: graded, but below 0.5 for every patient (says yes for 0%, mean 0.2)
    rows = [_row(tmp_path, "label", s, y, 0.15 + 0.1 * rng.random(100) * (1 + y),
                 scoring="direct") for s in (0, 1, 2)]
    rows += [_row(tmp_path, "rationale-free", s, y,
                  np.where(rng.random(100) < 0.5 + 0.2 * (y - 0.5), 0.97, 0.03),
                  scoring="sampled") for s in (0, 1, 2)]
    candidates = [{"run_id": 1, "learning_rate": 1e-3, "epochs": 2.0, "valid": True,
                   "validation_auroc": 0.52},
                  {"run_id": 2, "learning_rate": 1e-3, "epochs": 4.0, "valid": True,
                   "validation_auroc": 0.64},
                  {"run_id": 3, "learning_rate": 2e-3, "epochs": 2.0, "valid": False,
                   "validation_auroc": 0.70}]
    selection = {"cells": [
        {"target": "rationale-free", "train_size": 400, "seed": 0, "learning_rate": 1e-3,
         "epochs": 4.0, "tuned_on": "validation (sampled)", "candidate_scores": candidates},
        {"target": "rationale-free", "train_size": 400, "seed": 1, "learning_rate": 1e-3,
         "epochs": 4.0, "tuned_on": "validation (sampled), seed 0",
         "candidate_scores": candidates[1:2]}]}
    rows = [{**r, "learning_rate": 1e-3, "epochs": 4.0} for r in rows]
    lines, data = seed_report.section(rows, n_resamples=100, seed=0, selection=selection)
    text = "\n".join(lines)
    assert all(r["valid"] for r in rows)  # the mean P(yes) rule keeps them all
    # each seed's row says what it was trained at
    assert [line for line in lines if line.startswith("| 400 | rationale-free | sampled | 1 "
                                                       "| 0.001 × 4 |")]
    assert "mean P(yes) over the test patients" in text and "above 95% or below 5%" in text
    assert ("A rule on that share would also leave out: label (direct, seed 0, says yes for "
            "0%, mean P(yes)") in text and "(each kept here)" in text
    label_sd = next(t["sd_auroc"] for t in data["targets"] if t["target"] == "label")
    assert (f"This report's seeds spread with an AUROC SD of label (direct) {label_sd:.3f}; "
            "rationale-free (sampled)") in text
    # tuning: one row for the cell that was tuned, none for the seed that reused it
    (tuned,) = [line for line in lines if line.startswith("| 400 | rationale-free | 0 |")]
    assert ("0.001 × 2: 0.520; 0.001 × 4: 0.640; 0.002 × 2: 0.700 (invalid) | 0.001 × 4 |"
            in tuned)
    assert not [line for line in lines if line.startswith("| 400 | rationale-free | 1 |")
                and "×" in line]
    assert ("Each setting tuned was searched over two values (learning rate 0.001, 0.002; "
            "epochs 2, 4), so every choice lies at an edge of what was searched") in text
    assert "Later seeds reuse the choice of seed 0." in text
    # a setting searched over three values: only a choice at its lowest or highest is named
    three = [{"run_id": i, "learning_rate": lr, "epochs": 2.0, "valid": True,
              "validation_auroc": 0.6} for i, lr in enumerate((1e-4, 2e-4, 4e-4))]
    for chosen, said in ((2e-4, False), (4e-4, True)):
        cell = {"target": "label", "train_size": 400, "seed": 0, "learning_rate": chosen,
                "epochs": 2.0, "tuned_on": "validation", "candidate_scores": three}
        text3 = "\n".join(seed_report.tuning_lines({"cells": [cell]}))
        assert ("1 of 1 choices lie at an edge of a setting searched over more than two "
                "values" in text3) is said
        assert "Each seed listed chose on its own." in text3
        assert "searched over two values (" not in text3
    # without a selection (or an untuned grid) there is no tuning table
    assert "Tuning:" not in "\n".join(seed_report.section(rows, 100, 0)[0])
    # graded runs that straddle 0.5: no other run would be left out
    (tmp_path / "plain").mkdir()
    plain = [_row(tmp_path / "plain", "label", s, y,
                  1 / (1 + np.exp(-(y + rng.normal(size=100)))), scoring="direct")
             for s in (0, 1)]
    assert "A rule on that share would leave out no other run." in "\n".join(
        seed_report.section(plain, 100, 0)[0])
    # the bounds pass, as in the rule itself; a sampled share is the mean the rule read
    edge = [{**plain[0], "yes_rate": 1 - 0.95},
            {**plain[1], "scoring": "sampled", "yes_rate": 0.02}]
    assert seed_report.degenerate_rule(edge, 0.95)[-1].endswith(
        "A rule on that share would leave out no other run.")


def _fewshot_row(folder, with_rationales, seed, y, p, selection="random", scoring=None,
                 k=4):
    """A few-shot report row (its seed is the demonstration draw)."""
    target = f"fewshot-k{k}-{'rationale' if with_rationales else 'label'}"
    row = _row(folder, f"{target}-{selection}", seed, y, p, scoring=scoring or "own")
    return {**row, "kind": "fewshot", "target": target, "train_size": None, "k": k,
            "with_rationales": with_rationales, "selection": selection,
            "scoring": scoring, "extra_scoring": scoring is not None}


def test_few_shot_rationales_are_read_against_the_same_draws_without_them(tmp_path):
    """The study's second finding, measured: demonstrations with rationales minus the same
    draws without, primary where the arm with rationales is scored by sampled rationales;
    a setting short of valid draws says how many of its runs it kept; zero-shot and a
    scoring beside a run's own are named as such."""
    rng = np.random.default_rng(11)
    y = np.repeat([1, 0], 50)

    def graded(strength):
        return 1 / (1 + np.exp(-(strength * y + rng.normal(size=100))))

    rows = [_fewshot_row(tmp_path, False, 0, y, graded(0.3), k=0)]
    for s in (0, 1, 2):
        rows.append(_fewshot_row(tmp_path, False, s, y, graded(0.5)))
        rows.append(_fewshot_row(tmp_path, True, s, y, np.where(  # greedy: a yes/no
            rng.random(100) < 0.5 + 0.1 * (y - 0.5), 0.97, 0.03)))
        rows.append(_fewshot_row(tmp_path, True, s, y, graded(1.5) * 0.5 + 0.2,
                                 scoring="sampled"))
    nearest_with = _fewshot_row(tmp_path, True, 0, y, graded(1.0), selection="nearest")
    rows += [_fewshot_row(tmp_path, False, 0, y, graded(0.5), selection="nearest"),
             {**nearest_with, "valid": False, "invalid_reason": "answer line not reached"}]
    rows[5] = {**rows[5], "valid": False, "invalid_reason": "answer line not reached"}
    lines, data = seed_report.section(rows, n_resamples=300, seed=0)
    text = "\n".join(lines)
    contrasts = [(e["selection"], e["scoring"], e["primary"]) for e in data["fewshot"]]
    assert contrasts == [("nearest", "greedy", True), ("random", "sampled", True),
                         ("random", "greedy", False)]
    nearest, sampled, greedy = data["fewshot"]
    assert nearest["left_out"] == "with rationales: answer line not reached"
    # draw 1's greedy run was left out: greedy pairs draws 0 and 2, sampled all three
    assert greedy["with_seeds"] == greedy["without_seeds"] == [0, 2]
    assert greedy["dropped"] == [
        {"arm": "with rationales", "seed": 1, "why": "answer line not reached"},
        {"arm": "without", "seed": 1, "why": "no paired draw"}]
    assert ("| 4 | random | greedy | 0, 2 (left out with rationales draw 1: answer line "
            "not reached; without draw 1: no paired draw) |") in text
    assert sampled["with_seeds"] == [0, 1, 2] and sampled["paired_seeds"]
    auroc = {(r["scoring"], r["with_rationales"], r["seed"]): r["auroc"]["value"]
             for r in rows if r["selection"] == "random" and r["k"]}
    assert sampled["value"] == pytest.approx(
        np.mean([auroc[("sampled", True, s)] for s in (0, 1, 2)])
        - np.mean([auroc[(None, False, s)] for s in (0, 1, 2)]))
    assert sampled["low"] > 0  # strongly graded sampled scores beat weak direct ones
    assert "| 4 | random | sampled (primary) | 0, 1, 2 |" in text
    # per target: zero-shot named, sampled beside the greedy, 2 of 3 greedy draws kept
    names = {(t["target"], t["scoring"]): t for t in data["targets"]}
    assert ("fewshot-k0-label", "zero-shot") in names
    assert names[("fewshot-k4-rationale", "few-shot, random, sampled")]["seeds"] == [0, 1, 2]
    assert "| – | fewshot-k4-rationale | few-shot, random | 2 of 3 valid |" in text
    from training.reproduce import conclusions

    said = conclusions({"rows": rows, "seeds": data, "references": [], "joint": []})
    assert ("Few-shot k=4 (random demonstrations), with rationales scored sampled "
            "(primary) − without: ") in said and "the rationales helped" in said
    assert "Few-shot k=4 (nearest demonstrations), with rationales scored greedy (primary) " \
        "− without: not compared (with rationales: answer line not reached)." in said
    assert "Left out with rationales draw 1: answer line not reached" not in said  # primary
    # where the primary cannot be read, the other scoring is given as secondary
    unread = [{**r, "valid": False, "invalid_reason": "too few answers"}
              if r["scoring"] == "sampled" else r for r in rows]
    again = seed_report.section(unread, n_resamples=200, seed=0)[1]
    said = conclusions({"rows": unread, "seeds": again, "references": [], "joint": []})
    assert ("Few-shot k=4 (random demonstrations), with rationales scored sampled (primary) "
            "− without: not compared (with rationales: too few answers). With rationales "
            "scored greedy (secondary): ") in said
    assert ", draws 0, 2 (left out with rationales draw 1: answer line not reached; " \
        "without draw 1: no paired draw)." in said


def test_the_seed_section_says_what_each_compared_target_learns(tmp_path):
    """A reader of the headline is told what rationale-align is (its α from its runs)."""
    y = np.repeat([1, 0], 20)
    p = np.linspace(0.1, 0.9, 40)
    rows = [_row(tmp_path, "label", 0, y, p, scoring="direct"),
            {**_row(tmp_path, "rationale-align", 0, y, p), "align_alpha": 0.5},
            _row(tmp_path, "rationale-free", 0, y, p)]
    text = "\n".join(seed_report.section(rows, n_resamples=100, seed=0)[0])
    (line,) = [x for x in text.splitlines() if x.startswith("What each target learns")]
    assert line.index("**label**, the answer line alone") < line.index("**rationale-free**")
    assert "label part (the answer token and the rationale's decision tokens" in line
    assert line.endswith("arXiv 2510.16686) (α = 0.5).")
