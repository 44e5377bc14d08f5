"""The grid report's tables keep apart what differs: few-shot demonstrations drawn at
random and chosen as each query's nearest records, and every arm's operating point."""

import numpy as np
import pytest

from training.grid.report_files import _fewshot_lines, _reference_lines
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
