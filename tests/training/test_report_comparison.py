"""Two reproductions compared on the same test patients (`experiment compare`): the
contrast's bootstrap, each setting's change, each rationale target's gap to label-only,
and what is refused or left out. Reports here are small generated folders with the
columns the grid's report writes."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import app
from training.metrics import _row_metric, _stratified_blocks
from training.report_comparison import ComparisonError, compare, markdown, read_report
from training.seed_coverage import NOISE_SHARED, N
from training.seed_coverage import expected_auroc as _expected_auroc
from training.seed_coverage import runs as _runs
from training.seed_level import _seed_mean, hierarchical_contrast, hierarchical_difference

REPORTS = Path(__file__).resolve().parents[2] / "docs" / "reports"

RESULT_COLUMNS = ("kind", "target", "scoring", "train_size", "seed", "selection", "valid",
                  "invalid_reason", "run_id")


def _report(folder, y, runs, ids=None):
    """A report folder: ``runs`` are (kind, target, scoring, size, seed, scores[, valid,
    reason]) tuples; every run scored the patients ``ids`` with labels ``y``."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"P{i:07d}" for i in range(len(y))]
    with (folder / "results.csv").open("w", newline="") as r, \
            (folder / "predictions.csv").open("w", newline="") as p:
        results = csv.DictWriter(r, RESULT_COLUMNS)
        predictions = csv.DictWriter(p, ("run_id", "kind", "target", "scoring", "id", "label",
                                         "p_yes"))
        results.writeheader()
        predictions.writeheader()
        for run_id, (kind, target, scoring, size, seed, scores, *validity) in enumerate(runs):
            valid, reason = validity or (True, "")
            results.writerow({"kind": kind, "target": target, "scoring": scoring,
                              "train_size": size, "seed": seed, "selection": "",
                              "valid": valid, "invalid_reason": reason, "run_id": run_id})
            for i, label, score in zip(ids, y, scores, strict=True):
                predictions.writerow({"run_id": run_id, "kind": kind, "target": target,
                                      "scoring": scoring, "id": i, "label": label,
                                      "p_yes": score})
    return folder


def _graded(rng, y, signal, seeds=3):
    """Scores in (0, 1) that rank positives higher by ``signal``; mean P(yes) near 0.5."""
    return [1 / (1 + np.exp(-(signal * (y - 0.5) + rng.normal(size=y.size))))
            for _ in range(seeds)]


def _grid(rng, y, free_signal, label_signal=1.5, seeds=(0, 1, 2)):
    runs = []
    for target, scoring, signal in (("label", "direct", label_signal),
                                    ("rationale-free", "sampled", free_signal)):
        for seed, scores in zip(seeds, _graded(rng, y, signal, len(seeds)), strict=True):
            runs.append(("sft", target, scoring, 400, seed, scores))
    return runs


@pytest.fixture
def patients():
    rng = np.random.default_rng(3)
    return rng, np.repeat([1, 0], [30, 50])


def _two_arms(y, a, b, paired, n_resamples, seed):
    """The two-arm bootstrap written out on its own: one seed draw per replicate for both
    arms when paired, else one for each, after the same patient draws."""
    function, order, m = _row_metric("auroc", 0.5), np.argsort(1 - y, kind="stable"), y.sum()
    value = (np.mean([function(r[order][None, :], m)[0] for r in a])
             - np.mean([function(r[order][None, :], m)[0] for r in b]))
    rng, replicates = np.random.default_rng([seed, 1]), []
    for indices, m in _stratified_blocks(y, n_resamples, seed):
        on_a = np.stack([function(r[indices], m) for r in a])
        on_b = np.stack([function(r[indices], m) for r in b])
        draw_a = rng.integers(0, len(a), size=(indices.shape[0], len(a)))
        draw_b = draw_a if paired else rng.integers(0, len(b), size=draw_a.shape)
        replicates.append(_seed_mean(on_a, draw_a, True) - _seed_mean(on_b, draw_b, True))
    return value, *np.quantile(np.concatenate(replicates), [0.025, 0.975])


def test_a_contrast_of_two_arms_is_the_two_arm_bootstrap_written_out():
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 40)
    a = [rng.random(80) + y * 0.3 for _ in range(3)]
    b = [rng.random(80) + y * 0.1 for _ in range(3)]
    for paired, groups in ((True, [[(1.0, a), (-1.0, b)]]), (False, [[(1.0, a)], [(-1.0, b)]])):
        contrast = hierarchical_contrast(y, groups, n_resamples=600, seed=5)
        two = hierarchical_difference(y, a, b, n_resamples=600, seed=5, paired_seeds=paired)
        expected = _two_arms(y, a, b, paired, 600, 5)
        assert (contrast["value"], contrast["low"], contrast["high"]) == \
            pytest.approx(expected, abs=1e-12)
        assert [two[k] for k in ("value", "low", "high")] == pytest.approx(expected, abs=1e-12)
        assert contrast["per_seed"] == [two["per_seed_a"], two["per_seed_b"]]


@pytest.mark.slow
def test_the_difference_of_gaps_covers_the_truth_95_percent_of_the_time():
    # two reproductions on one set of patients: label-only alike in both (SD over seeds
    # about 0.004), the rationale target spread as the cpu reports' (about 0.06) and a
    # little better in B; three seeds per arm, each report's seeds its own
    label, spread, target_a, target_b = 1.2, 0.02, 0.9, 1.05
    truth = ((_expected_auroc(label, spread) - _expected_auroc(target_b, 0.28))
             - (_expected_auroc(label, spread) - _expected_auroc(target_a, 0.28)))
    rng = np.random.default_rng(1)
    simulations, covered = 400, 0
    for i in range(simulations):
        y = (rng.random(N) < 0.5).astype(int)
        shared = rng.normal(size=N) * NOISE_SHARED  # the same patients in both reports
        la, ta, lb, tb = (_runs(rng, y, shared, signal, s, 3) for signal, s in
                          ((label, spread), (target_a, 0.28), (label, spread),
                           (target_b, 0.28)))
        result = hierarchical_contrast(y, [[(-1.0, la), (1.0, ta)], [(1.0, lb), (-1.0, tb)]],
                                       n_resamples=400, seed=i)
        covered += result["low"] <= truth <= result["high"]
    assert 0.93 <= covered / simulations <= 0.97


@pytest.mark.slow
def test_seeds_drawn_together_across_reports_cover_the_truth_with_a_narrower_interval():
    """Where seed s trained on the same patients in both reports, its effect is shared:
    label-only's fully (the same data), the target's largely (correlation 0.8). One seed
    draw for all four arms still covers the true difference of gaps (at least 93% of
    trials: both designs are conservative here, the run noise being counted at both
    levels) with an interval narrower than each report's seeds drawn on their own."""
    label, spread, target_a, target_b, rho = 1.2, 0.02, 0.9, 1.05, 0.8
    truth = _expected_auroc(target_a, 0.28) - _expected_auroc(target_b, 0.28)
    rng = np.random.default_rng(2)

    def arm(y, shared, signal, effects):
        return [(signal + e) * y + shared + rng.normal(size=y.size) * 0.7 for e in effects]

    simulations, covered, widths = 200, 0, {"together": [], "apart": []}
    for i in range(simulations):
        y = (rng.random(N) < 0.5).astype(int)
        shared = rng.normal(size=N) * NOISE_SHARED
        seed_label, seed_target = rng.normal(size=3) * spread, rng.normal(size=3)
        own = rng.normal(size=3)
        la, lb = arm(y, shared, label, seed_label), arm(y, shared, label, seed_label)
        ta = arm(y, shared, target_a, seed_target * 0.28)
        tb = arm(y, shared, target_b, (rho * seed_target + np.sqrt(1 - rho ** 2) * own) * 0.28)
        arms = [(-1.0, la), (1.0, ta), (1.0, lb), (-1.0, tb)]
        together = hierarchical_contrast(y, [arms], n_resamples=400, seed=i)
        apart = hierarchical_contrast(y, [arms[:2], arms[2:]], n_resamples=400, seed=i)
        covered += together["low"] <= truth <= together["high"]
        for name, result in (("together", together), ("apart", apart)):
            widths[name].append(result["high"] - result["low"])
    assert covered / simulations >= 0.93
    assert np.mean(widths["together"]) < 0.85 * np.mean(widths["apart"])


def test_the_arms_of_a_group_need_as_many_seeds():
    y = np.repeat([1, 0], 5)
    with pytest.raises(ValueError, match="share their seeds"):
        hierarchical_contrast(y, [[(1.0, [np.linspace(0, 1, 10)] * 3),
                                   (-1.0, [np.linspace(0, 1, 10)] * 2)]])
    with pytest.raises(ValueError, match="at least one seed"):
        hierarchical_contrast(y, [[(1.0, [])]])


def test_a_report_against_itself_changes_nothing_and_keeps_its_own_gap(tmp_path, patients):
    rng, y = patients
    runs = _grid(rng, y, free_signal=0.6)
    folder = _report(tmp_path / "a", y, runs)
    result = compare(folder, folder, n_resamples=300)
    assert [c["value"] for c in result["changes"]] == [0.0, 0.0]
    (gap,) = result["gaps"]
    assert gap["value"] == pytest.approx(0.0, abs=1e-12)
    assert gap["low"] < 0 < gap["high"]  # two trainings of each, even when alike
    label = [r[5] for r in runs if r[1] == "label"]
    free = [r[5] for r in runs if r[1] == "rationale-free"]
    own = hierarchical_difference(y, label, free, n_resamples=300)
    assert gap["gap_a"] == pytest.approx(own["value"]) == pytest.approx(gap["gap_b"])
    assert gap["paired_a"] and gap["label_seeds_a"] == gap["target_seeds_a"] == [0, 1, 2]


def test_a_target_that_loses_less_in_b_has_a_gap_change_below_zero(tmp_path, patients):
    rng, y = patients
    a = _report(tmp_path / "a", y, _grid(rng, y, free_signal=0.3))
    b = _report(tmp_path / "b", y, _grid(rng, y, free_signal=2.5))
    result = compare(a, b, n_resamples=500)
    (gap,) = result["gaps"]
    assert gap["value"] == pytest.approx(gap["gap_b"] - gap["gap_a"])
    assert gap["gap_a"] > 0.2 and gap["high"] < 0
    free = next(c for c in result["changes"] if c["target"] == "rationale-free")
    assert free["value"] == pytest.approx(free["mean_b"] - free["mean_a"]) and free["low"] > 0
    assert free["primary"] and gap["primary"]


def test_label_onlys_row_is_called_training_noise_only_where_its_data_is_the_same(
        tmp_path, patients):
    """Each report's ``reproduce.json`` records its dataset's view hashes: where the
    ``label_only`` view is the same in both, label-only's change is training noise alone;
    where it differs, or a report does not record it, it may be a change of patients too."""
    from training.report_comparison import markdown

    rng, y = patients
    runs = _grid(rng, y, free_signal=0.6)
    a, b = _report(tmp_path / "a", y, runs), _report(tmp_path / "b", y, runs)
    inputs = {"a": {"folder": "a"}, "b": {"folder": "b"}}

    def said(views_a, views_b) -> tuple[dict | None, str]:
        for folder, views in ((a, views_a), (b, views_b)):
            (folder / "reproduce.json").unlink(missing_ok=True)
            if views is not None:
                (folder / "reproduce.json").write_text(json.dumps({"dataset": {"views": views}}))
        result = compare(a, b, n_resamples=100)
        return result["views"], "\n".join(markdown(result, inputs))

    views, text = said({"label_only": "1", "rationale_free": "2"},
                       {"label_only": "1", "rationale_free": "3"})
    assert views == {"same": ["label_only"], "different": ["rationale_free"]}
    assert "its own change between the reports is training noise alone" in text
    views, text = said({"label_only": "1"}, {"label_only": "4"})
    assert views == {"same": [], "different": ["label_only"]}
    assert "training noise plus any change in those patients (its view differs" in text
    views, text = said({"label_only": "1"}, None)
    assert views is None and "training noise plus any change in those patients: " in text


def test_invalid_and_degenerate_runs_are_left_out_and_named(tmp_path, patients):
    rng, y = patients
    runs = _grid(rng, y, free_signal=1.0)
    runs[3] = (*runs[3][:6], False, "only 40% of rationales reached 'Final answer:'")
    a = _report(tmp_path / "a", y, runs)
    b_runs = _grid(rng, y, free_signal=1.0)
    b_runs[4] = (*b_runs[4][:5], np.where(y == 1, 0.99, 0.97))  # valid, but says yes always
    b = _report(tmp_path / "b", y, b_runs)
    (gap,) = compare(a, b, n_resamples=300)["gaps"]
    why = {(d["report"], d["arm"], d["seed"]): d["why"] for d in gap["left_out"]}
    assert why[("A", "rationale-free", 0)].startswith("only 40%")
    assert why[("A", "label", 0)] == "no paired seed"
    assert "above 95%" in why[("B", "rationale-free", 1)]
    assert gap["target_seeds_a"] == [1, 2] and gap["label_seeds_a"] == [1, 2]
    assert gap["target_seeds_b"] == [0, 2]


def test_a_report_without_any_valid_seed_of_a_target_says_so(tmp_path, patients):
    rng, y = patients
    runs = [(*r[:6], False, "no answer line") if r[1] == "rationale-free" else r
            for r in _grid(rng, y, free_signal=1.0)]
    a = _report(tmp_path / "a", y, runs)
    b = _report(tmp_path / "b", y, _grid(rng, y, free_signal=1.0))
    result = compare(a, b, n_resamples=300)
    (gap,) = result["gaps"]
    assert gap["value"] is None and "report A has no valid rationale-free seed" in gap["why"]
    free = next(c for c in result["changes"] if c["target"] == "rationale-free")
    assert free["value"] is None and free["seeds_b"] == [0, 1, 2]


def test_reports_scored_on_other_patients_or_labels_are_refused(tmp_path, patients):
    rng, y = patients
    a = _report(tmp_path / "a", y, _grid(rng, y, free_signal=1.0))
    other = _report(tmp_path / "b", y, _grid(rng, y, free_signal=1.0),
                    ids=[f"Q{i:07d}" for i in range(y.size)])
    with pytest.raises(ComparisonError, match="other patients or labels.*one test set"):
        compare(a, other, n_resamples=100)
    flipped = _report(tmp_path / "c", 1 - y, _grid(rng, 1 - y, free_signal=1.0))
    with pytest.raises(ComparisonError, match="run 0 .*label.*seed 0"):
        compare(a, flipped, n_resamples=100)


def test_a_folder_that_is_not_a_report_is_refused(tmp_path):
    (tmp_path / "results.csv").write_text("kind\n")
    with pytest.raises(ComparisonError, match="no predictions.csv"):
        read_report(tmp_path)


def test_settings_only_one_report_has_are_listed_not_compared(tmp_path, patients):
    rng, y = patients
    a = _report(tmp_path / "a", y, _grid(rng, y, free_signal=1.0))
    runs = _grid(rng, y, free_signal=1.0) + [
        ("fewshot", "fewshot-k4-rationale", "", "", seed, scores)
        for seed, scores in enumerate(_graded(rng, y, 0.5))]
    b = _report(tmp_path / "b", y, runs)
    result = compare(a, b, n_resamples=200)
    assert result["only_in_b"] == ["fewshot-k4-rationale (random)"]
    assert result["only_in_a"] == [] and len(result["changes"]) == 2


def test_the_command_writes_the_comparison_with_its_inputs_hashed(tmp_path, patients,
                                                                   monkeypatch):
    rng, y = patients
    monkeypatch.chdir(tmp_path)
    _report(tmp_path / "template", y, _grid(rng, y, free_signal=0.3))
    _report(tmp_path / "balanced", y, _grid(rng, y, free_signal=1.0))
    out = CliRunner().invoke(app, ["experiment", "compare", "template", "balanced",
                                   "--n-resamples", "300"])
    assert out.exit_code == 0, out.output
    assert "rationale-free (sampled): gap to label-only" in out.output
    folder = tmp_path / "reports" / "compare-template-vs-balanced"
    saved = json.loads((folder / "compare.json").read_text())
    assert saved["inputs"]["a"]["folder"] == "template"
    assert len(saved["inputs"]["b"]["predictions.csv"]) == 64
    assert "n_resamples: 300" in (folder / "config.yaml").read_text()
    text = (folder / "compare.md").read_text()
    assert "| rationale-free (sampled, 400 patients) ★ |" in text
    with (folder / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["table"] for r in rows] == ["change", "change", "gap"]
    refused = CliRunner().invoke(app, ["experiment", "compare", "template", "nowhere"])
    assert refused.exit_code == 1 and "is not a report folder" in refused.output


def test_runs_of_a_real_report_are_keyed_by_their_scoring_and_led_by_their_own():
    # the first mechanism report: one run scored two or three ways under one run id
    folder = REPORTS / "mechanism-cpu"
    settings = read_report(folder)
    with (folder / "results.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "sft"]
    for row in rows:
        run = settings[("sft", 400, row["target"], row["scoring"])][int(row["seed"])]
        if row["valid"] == "True" and not run["left_out"]:
            auroc = hierarchical_contrast(run["y"], [[(1.0, [run["p"]])]],
                                          n_resamples=100)["value"]
            assert auroc == pytest.approx(float(row["auroc"]), abs=1e-9)
    result = compare(folder, folder, n_resamples=100)
    led = {c["target"]: c["scoring"] for c in result["changes"] if c["primary"]}
    assert led["rationale-free"] == "sampled"
    assert led["rationale-weighted"] == led["label-padded"] == "generate"  # not the extra
    assert led["label"] == led["multitask"] == "direct"


def test_an_older_report_without_a_selection_column_compares_its_few_shot_runs():
    folder = REPORTS / "reproduce-cpu"
    result = compare(folder, folder, n_resamples=100)
    few = [c for c in result["changes"] if c["kind"] == "fewshot"]
    assert {c["setting"] for c in few} == {"fewshot-k4-label (random)",
                                           "fewshot-k4-rationale (random)"}
    assert all(c["value"] == 0.0 for c in few)


def test_a_report_resting_on_one_seed_says_its_interval_is_too_narrow(tmp_path, patients):
    rng, y = patients
    a = _report(tmp_path / "a", y, _grid(rng, y, free_signal=1.0, seeds=(0,)))
    b = _report(tmp_path / "b", y, _grid(rng, y, free_signal=1.0))
    result = compare(a, b, n_resamples=200)
    (gap,) = result["gaps"]
    assert gap["interval"].startswith("seeds, then patients; A: one seed")
    assert "too narrow" in gap["interval"]
    both_one = compare(a, a, n_resamples=200)["gaps"][0]
    assert both_one["interval"] == "patients only (one seed each)"


def test_seeds_without_a_partner_are_named_in_the_gap(tmp_path, patients):
    rng, y = patients
    runs = _grid(rng, y, free_signal=1.0)
    runs[3] = (*runs[3][:6], False, "no answer line")  # rationale-free seed 0
    a = _report(tmp_path / "a", y, runs)
    (gap,) = compare(a, a, n_resamples=200)["gaps"]
    why = {(d["arm"], d["seed"]): d["why"] for d in gap["left_out"] if d["report"] == "A"}
    assert why == {("rationale-free", 0): "no answer line", ("label", 0): "no paired seed"}
    assert gap["label_seeds_a"] == [1, 2]


def test_a_grid_without_sizes_and_a_report_with_two_runs_of_one_seed(tmp_path, patients):
    rng, y = patients
    runs = [(kind, target, scoring, "", seed, scores)
            for kind, target, scoring, _, seed, scores in _grid(rng, y, free_signal=1.0)]
    folder = _report(tmp_path / "a", y, runs)
    (gap,) = compare(folder, folder, n_resamples=100)["gaps"]
    assert gap["setting"] == "rationale-free (sampled, all patients)"
    twice = _report(tmp_path / "b", y, runs + [runs[0]])
    with pytest.raises(ComparisonError, match="two runs of label .*seed 0.*base models"):
        read_report(twice)


def _with_draws(folder, draw, code=None):
    """Give every SFT run of a report folder its ``train_draw`` (``draw(seed)``), as the
    grid's report writes it: the digest of the patients the run trained on; and with
    ``code``, its ``trained_under`` (``code(target, seed)``)."""
    path = folder / "results.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, [*RESULT_COLUMNS, "train_draw", "trained_under"])
        writer.writeheader()
        for row in rows:
            sft = row["kind"] == "sft"
            writer.writerow({**row, "train_draw": draw(int(row["seed"])) if sft else "",
                             "trained_under": code(row["target"], int(row["seed"]))
                             if sft and code else ""})
    return folder


def test_seeds_that_trained_on_the_same_patients_in_both_reports_are_drawn_together(
        tmp_path, patients):
    rng, y = patients
    runs_a, runs_b = _grid(rng, y, free_signal=0.6), _grid(rng, y, free_signal=1.2)
    a = _with_draws(_report(tmp_path / "a", y, runs_a), lambda s: f"patients-{s}")
    b = _with_draws(_report(tmp_path / "b", y, runs_b), lambda s: f"patients-{s}")
    result = compare(a, b, n_resamples=300, seed=4)
    (gap,) = result["gaps"]
    assert gap["seeds_across"] == "paired" and "paired across the reports" in gap["interval"]
    arms = {(report, target): [r[5] for r in runs if r[1] == target]  # seeds 0, 1, 2
            for report, runs in (("a", runs_a), ("b", runs_b))
            for target in ("label", "rationale-free")}
    one_group = hierarchical_contrast(y, [[(-1.0, arms["a", "label"]),
                                           (1.0, arms["a", "rationale-free"]),
                                           (1.0, arms["b", "label"]),
                                           (-1.0, arms["b", "rationale-free"])]],
                                      n_resamples=300, seed=4)
    assert [gap[k] for k in ("value", "low", "high")] == \
        pytest.approx([one_group[k] for k in ("value", "low", "high")], abs=1e-12)
    free = next(c for c in result["changes"] if c["target"] == "rationale-free")
    together = hierarchical_contrast(y, [[(-1.0, arms["a", "rationale-free"]),
                                          (1.0, arms["b", "rationale-free"])]],
                                     n_resamples=300, seed=4)
    assert free["seeds_across"] == "paired"
    assert (free["low"], free["high"]) == pytest.approx((together["low"], together["high"]))
    text = "\n".join(markdown(result, {"a": {"folder": "a"}, "b": {"folder": "b"}}))
    assert "drawn once for both reports" in text and "paired across the reports" in text


def test_seeds_are_drawn_on_their_own_where_one_seed_trained_on_other_patients(
        tmp_path, patients):
    rng, y = patients
    runs_a, runs_b = _grid(rng, y, free_signal=0.6), _grid(rng, y, free_signal=1.2)
    a = _with_draws(_report(tmp_path / "a", y, runs_a), lambda s: f"patients-{s}")
    b = _with_draws(_report(tmp_path / "b", y, runs_b),
                    lambda s: "other" if s == 2 else f"patients-{s}")
    plain = _report(tmp_path / "plain", y, runs_b)  # an older report: no train_draw column
    short = _with_draws(_report(tmp_path / "short", y, [r for r in runs_b if r[4] != 2]),
                        lambda s: f"patients-{s}")  # the same draws, one seed fewer
    for other in (b, plain, short):
        result = compare(a, other, n_resamples=300, seed=4)
        (gap,) = result["gaps"]
        assert gap["seeds_across"] == "unpaired" and "across" not in gap["interval"]
        assert {c["seeds_across"] for c in result["changes"]} == {"unpaired"}


def test_label_only_seeds_trained_under_other_code_are_named_beside_its_noise_floor(
        tmp_path, patients):
    rng, y = patients
    a = _with_draws(_report(tmp_path / "a", y, _grid(rng, y, free_signal=0.6)),
                    lambda s: f"patients-{s}",
                    lambda target, s: "aaaaaaaaaaaa" if s == 0 else "cccccccccccc")
    b = _with_draws(_report(tmp_path / "b", y, _grid(rng, y, free_signal=0.6)),
                    lambda s: f"patients-{s}",
                    lambda target, s: "cccccccccccc resumed under dddddddddddd")
    result = compare(a, b, n_resamples=200)
    # seed 0 began under another commit; seeds 1 and 2 began alike, but B's were resumed
    # under other code
    assert [(c["seed"], c["a"]) for c in result["label_code"]] == [
        (0, "aaaaaaaaaaaa"), (1, "cccccccccccc"), (2, "cccccccccccc")]
    text = "\n".join(markdown(result, {"a": {"folder": "a"}, "b": {"folder": "b"}}))
    assert ("not trained under the same code in the two reports for label (direct, 400 "
            "patients) seed 0 (A: aaaaaaaaaaaa; B: cccccccccccc resumed under dddddddddddd)"
            ) in text
    # a first commit unknown on both sides, or an uncommitted tree, is not the same code
    for code in ("eeeeeeeeeeee (resumed from checkpoint-25; the commit that began it is "
                 "unknown)", "ffffffffffff+dirty"):
        c = _with_draws(_report(tmp_path / code[:4], y, _grid(rng, y, free_signal=0.6)),
                        lambda s: f"patients-{s}", lambda target, s, code=code: code)
        assert [x["seed"] for x in compare(c, c, n_resamples=100)["label_code"]] == [0, 1, 2]
    # an older report does not record the code: the comparison says it cannot tell
    older = _report(tmp_path / "older", y, _grid(rng, y, free_signal=0.6))
    told = compare(a, older, n_resamples=100)
    assert told["label_code"] == [] and told["code_recorded"] == {"a": True, "b": False}
    assert ("cannot be told here: report B does not record it" in "\n".join(
        markdown(told, {"a": {"folder": "a"}, "b": {"folder": "older"}})))
    same = compare(b, b, n_resamples=200)
    assert same["label_code"] == [] and "not trained under the same code" not in "\n".join(
        markdown(same, {"a": {"folder": "b"}, "b": {"folder": "b"}}))


def test_a_few_shot_runs_sampled_scoring_is_its_own_setting(tmp_path, patients):
    """A few-shot run with rationales is scored greedy (its own) and by sampled
    rationales: two settings, each compared across the reports, never one run twice."""
    rng, y = patients
    few = [("fewshot", "fewshot-k4-rationale", scoring, "", seed, scores)
           for scoring in ("", "sampled")
           for seed, scores in enumerate(_graded(rng, y, 0.5))]
    a = _report(tmp_path / "a", y, _grid(rng, y, free_signal=1.0) + few)
    b = _report(tmp_path / "b", y, _grid(rng, y, free_signal=1.0) + few)
    result = compare(a, b, n_resamples=100)
    settings = {c["setting"] for c in result["changes"] if c["kind"] == "fewshot"}
    assert settings == {"fewshot-k4-rationale (random)",
                        "fewshot-k4-rationale (random, sampled)"}
