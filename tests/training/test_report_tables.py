"""The grid report's tables keep apart what differs: few-shot demonstrations drawn at
random and chosen as each query's nearest records, and every arm's operating point."""

import numpy as np
import pytest

from training.grid.report_files import _fewshot_lines, _reference_lines, _validity_lines
from training.grid.results import ResultRow
from training.grid.stats import summary_by_target


def _fewshot(seed, selection, auroc, yes_rate=0.4):
    return ResultRow(kind="fewshot", k=4, with_rationales=True, seed=seed,
                     selection=selection, auroc={"value": auroc, "low": None, "high": None},
                     yes_rate=yes_rate, run_dir=f"runs/fewshot-{selection}-{seed}")


def test_few_shot_by_nearest_records_is_summarised_apart_from_random_draws():
    rows = [_fewshot(s, "random", 0.55 + 0.01 * s) for s in (0, 1, 2)]
    rows.append(_fewshot(0, "nearest", 0.70))
    by_setting = {s["setting"]: s for s in summary_by_target(rows)}
    assert by_setting["few-shot k=4 with rationales"]["runs"] == 3
    assert by_setting["few-shot k=4 with rationales, nearest demonstrations"][
        "mean_auroc"] == pytest.approx(0.70)
    text = "\n".join(_fewshot_lines(rows))
    assert "| nearest |" in text and "| random |" in text and "says yes for" in text


def test_the_reference_models_report_balanced_accuracy_at_a_matched_yes_rate():
    from sklearn.linear_model import LogisticRegression

    from training.evaluate_config import EvaluateConfig
    from training.reference import _scored

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 1))
    y = (x[:, 0] + rng.normal(scale=0.5, size=80) > 0).astype(int)
    result = _scored(LogisticRegression(), x[:40], y[:40], x[40:], y[40:],
                     EvaluateConfig(n_bootstrap=100))
    assert 0.5 < result["balanced_accuracy_matched"] <= 1
    text = "\n".join(_reference_lines([{"model": "age", "train_size": 400, "seed": 0,
                                        **result}]))
    assert "balanced accuracy, matched yes-rate" in text
    assert f"{result['balanced_accuracy_matched']:.3f}" in text


def _sft(run_id, scoring, valid=True, reason=None, extra=False, **more):
    return ResultRow(kind="sft", target="rationale-free", train_size=400, seed=run_id,
                     run_id=run_id, scoring=scoring, extra_scoring=extra, valid=valid,
                     invalid_reason=reason, truncated_train_rows=0, precision="bf16-autocast",
                     padding_share=0.01, run_dir=f"runs/sft-{run_id}", **more)


def test_a_run_left_out_of_one_scorings_comparisons_is_named_with_that_scoring():
    """Greedy and sampled scorings of one run are judged on their own: the validity
    section names the scoring a run was left out in, and counts each run once."""
    rows = [_sft(1, "generate", valid=False, reason="says yes 97% of the time",
                 trained_under="aaaaaaaaaaaa"),
            _sft(1, "sampled", extra=True, trained_under="aaaaaaaaaaaa"),
            _sft(2, "generate", trained_under="aaaaaaaaaaaa resumed under bbbbbbbbbbbb"),
            _sft(2, "sampled", valid=False, reason="says yes in 96% of its sampled answers",
                 extra=True, trained_under="aaaaaaaaaaaa resumed under bbbbbbbbbbbb")]
    text = "\n".join(_validity_lines(rows))
    assert ("- run 1 (rationale-free, size 400, seed 1), scored generate: says yes 97% of "
            "the time") in text
    assert ("- run 2 (rationale-free, size 400, seed 2), scored sampled: says yes in 96% of "
            "its sampled answers") in text
    assert "left out of every comparison" not in text
    assert "(per run): rationale-free: 0, 0." in text  # two runs, not four rows
    assert ("Code the 2 trained runs were trained under (`trained_under` in results.csv): "
            "1 commit began them; 1 run resumed under other code.") in text
    kept = "\n".join(_validity_lines([_sft(3, "generate"), _sft(3, "sampled", extra=True)]))
    assert "none was left out" in kept
    # a run whose first commit is unknown is not counted among the commits that began runs
    unknown = _sft(4, "generate", trained_under="dddddddddddd (resumed from checkpoint-25; "
                   "the commit that began it is unknown)")
    assert ("Code the 3 trained runs were trained under (`trained_under` in results.csv): "
            "1 commit began the 2 whose first commit is known; 1 run resumed under other "
            "code; 1 run resumed before a run kept the commit that began it.") in "\n".join(
                _validity_lines([*rows, unknown]))
