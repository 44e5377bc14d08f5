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
    assert {c.reading_rule for c in runs} == {grid.reading.digest()}
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
    with pytest.raises(RunError, match=r"rule changed.*run 2 \(000000000000\)"):
        check_runs(rows, rule)
    check_runs(rows[:1], rule)  # made under this rule: read


def test_the_first_reports_rule_is_kept_as_it_was_for_its_grid():
    assert not POST_HOC.trained_positions_only
    assert POST_HOC.contrasts["direct scoring"].a == ("rationale-free", "direct")
