"""`experiment reproduce --dry-run`: costs from token counts and throughputs, with what a
database already holds counted as reused."""

import pytest

from training.budget import Throughput, estimate
from training.grid.config import ExperimentGrid
from training.study_config import DataSettings

SPEED = Throughput(train_tokens_per_second=100, prefill_tokens_per_second=1000,
                   decode_tokens_per_second=10, engine_start_seconds=0,
                   data_seconds_per_patient=0.5, source="test")
TOKENS = {"targets": {
    "label": {"prompt_tokens": 100, "completion_tokens": 5, "example_tokens": 105},
    "rationale-free": {"prompt_tokens": 100, "completion_tokens": 50, "example_tokens": 150},
    "multitask": {"prompt_tokens": 100, "completion_tokens": 30, "example_tokens": 260,
                  "rows_per_patient": 2}}}


def _grid(**sft) -> ExperimentGrid:
    return ExperimentGrid(dataset="v", fewshot=None, extra_scorings=["sampled"],
                          evaluation={"n_samples": 3},
                          sft={"train_sizes": [10], "seeds": [0], "learning_rates": [1e-3],
                               "epochs": [1], "settings": {"per_device_train_batch_size": 5,
                                                           "validate_each_epoch": False},
                               **sft})


def _stage(rows, name):
    return next(r for r in rows if r["stage"].startswith(name))


def test_costs_follow_tokens_targets_and_scoring_variants():
    data = DataSettings(n=100, dataset="v")  # 70 train / 10 validation / 20 test
    rows = estimate(data, _grid(targets=["label", "rationale-free", "multitask"]), SPEED,
                    TOKENS)
    training = _stage(rows, "SFT training")
    probes = (2 // 25 + 1) * 4  # one probe batch of 4 rows per run (steps < probe_steps)
    assert training["tokens"] == 10 * (105 + 150 + 260)
    assert training["examples"] == 10 + 10 + 20  # multitask: two rows per patient
    assert training["steps"] == 2 + 2 + 4
    assert training["seconds"] == pytest.approx(
        (10 * (105 + 150 + 260) + probes * (105 + 150 + 130)) / 100)
    scoring = _stage(rows, "SFT scoring")
    # label and multitask: prompts only; rationale-free: greedy, then 3 samples each
    assert scoring["runs"] == 4
    assert scoring["generations"] == 20 + 20 * 3
    # each sample's prompt and rationale are read again for its P(yes)
    assert scoring["seconds"] == pytest.approx(
        (4 * 20 * 100 + 20 * 3 * 150) / 1000 + (20 * 50 + 20 * 50 * 3) / 10)
    assert _stage(rows, "data")["seconds"] == 50
    # sampled rationales decode at their own measured rate where the block gives one
    faster = SPEED.model_copy(update={"sampled_decode_tokens_per_second": 20})
    sampled = _stage(estimate(data, _grid(targets=["label", "rationale-free", "multitask"]),
                              faster, TOKENS), "SFT scoring")
    assert scoring["seconds"] - sampled["seconds"] == pytest.approx(20 * 50 * 3 * (1 / 10 - 1 / 20))


def _scored_greedy_on_test(*, weightless: bool = False) -> tuple:
    """A label and a rationale-free run, each finished with its greedy test result (and
    with ``weightless``, restored without weights); (data, grid, finished)."""
    grid = _grid(targets=["label", "rationale-free"])
    (_, [label]), (_, [free]) = grid.sft_cells()
    test = grid.evaluate_config("test")
    hashes = [label.identity("h"), free.identity("h")]
    finished = {"version_hash": "h",
                "runs": {h: {("test", "auto", test.settings_hash())} for h in hashes},
                "weightless": set(hashes) if weightless else set()}
    return DataSettings(n=100, dataset="v"), grid, finished


def test_a_finished_run_and_its_stored_results_cost_nothing():
    data, grid, finished = _scored_greedy_on_test()
    rows = estimate(data, grid, SPEED, TOKENS, finished)
    training, scoring = _stage(rows, "SFT training"), _stage(rows, "SFT scoring")
    assert (training["runs"], training["reused"], training["seconds"]) == (2, 2, 0)
    # only the sampled variant of the rationale model is left to score
    assert (scoring["runs"], scoring["reused"]) == (3, 2)
    assert scoring["seconds"] == pytest.approx((20 * 100 + 20 * 3 * 150) / 1000
                                               + 20 * 50 * 3 / 10)
    assert _stage(rows, "data")["seconds"] == 0


def test_shared_demonstrations_are_read_once_and_a_finished_fewshot_run_costs_nothing():
    data = DataSettings(n=100, dataset="v")  # 20 test patients
    grid = ExperimentGrid(dataset="v", sft=None, fewshot={
        "ks": [4], "with_rationales": [False], "settings": {"engine": "vllm"}})
    nearest = grid.model_copy(update={"fewshot": grid.fewshot.model_copy(update={
        "settings": {"engine": "vllm", "selection": "nearest"}})})
    shared, own = (_stage(estimate(data, g, SPEED, TOKENS), "few-shot")
                   for g in (grid, nearest))
    # nearest: each query reads its own 4 demonstrations; random: the prefix cache reads
    # the one shared set once
    assert own["seconds"] == pytest.approx(20 * (100 + 4 * 105) / 1000)
    assert shared["seconds"] == pytest.approx((20 * 100 + 4 * 105) / 1000)
    [cfg] = grid.fewshot_runs()
    finished = {"version_hash": "h", "runs": {cfg.identity("h"): {("test", "auto", None)}}}
    reused = _stage(estimate(data, grid, SPEED, TOKENS, finished), "few-shot")
    assert (reused["runs"], reused["reused"], reused["seconds"]) == (1, 1, 0)


def test_a_variant_restricted_to_some_targets_is_scored_and_costed_only_for_them():
    grid = ExperimentGrid(dataset="v", fewshot=None, extra_scorings=["direct", "sampled"],
                          extra_scoring_targets={"sampled": ["rationale-free"]},
                          sft={"targets": ["label", "rationale-free", "rationale-shuffled"]})
    assert grid.scorings_for("rationale-free") == ["direct", "sampled"]
    assert grid.scorings_for("rationale-shuffled") == ["direct"]
    assert grid.scorings_for("label") == []
    data = DataSettings(n=100, dataset="v")
    tokens = {"targets": {**TOKENS["targets"],
                          "rationale-shuffled": TOKENS["targets"]["rationale-free"]}}
    restricted = _stage(estimate(data, grid, SPEED, tokens), "SFT scoring")
    everywhere = _stage(estimate(data, grid.model_copy(update={"extra_scoring_targets": {}}),
                                 SPEED, tokens), "SFT scoring")
    assert everywhere["runs"] - restricted["runs"] == 1
    assert everywhere["generations"] - restricted["generations"] == 20 * 5


@pytest.mark.parametrize("restriction, message", [
    ({"sampled": ["rationale-free"]}, "not in extra_scorings"),
    ({"direct": ["label"]}, "label answer without writing a rationale"),
    ({"direct": []}, "is empty"),
    ({"direct": ["rationale-shuffled"]}, "rationale-shuffled not among sft.targets"),
])
def test_a_restriction_that_cannot_apply_is_refused(restriction, message):
    with pytest.raises(ValueError, match=message):
        ExperimentGrid(dataset="v", extra_scorings=["direct"],
                       sft={"targets": ["label", "rationale-free"]},
                       extra_scoring_targets=restriction)


def test_the_per_epoch_validation_pass_is_costed_as_forward_only_training_work():
    data = DataSettings(n=100, dataset="v")  # 10 validation patients
    with_validation = _grid(targets=["label"])
    with_validation.sft.settings["validate_each_epoch"] = True
    without = _stage(estimate(data, _grid(targets=["label"]), SPEED, TOKENS), "SFT training")
    added = _stage(estimate(data, with_validation, SPEED, TOKENS), "SFT training")
    # one epoch, 10 validation prompts of 100 tokens, at 3 × the 100 training tokens/s
    assert added["seconds"] - without["seconds"] == pytest.approx(1 * 10 * 100 / 300)


def test_a_run_without_weights_that_must_be_scored_anew_is_costed_as_trained_again():
    """As the grid does (training/grid/steps.py): the rationale run, its cell's choice and
    lacking the sampled scoring, is trained again and scored again in both ways; the
    label run, which needs nothing new, stays free although its weights are gone too."""
    data, grid, finished = _scored_greedy_on_test(weightless=True)
    rows = estimate(data, grid, SPEED, TOKENS, finished)
    training, scoring = _stage(rows, "SFT training"), _stage(rows, "SFT scoring")
    assert (training["runs"], training["reused"], training["tokens"]) == (2, 1, 10 * 150)
    assert (scoring["runs"], scoring["reused"]) == (3, 1)  # greedy and sampled again
    assert scoring["generations"] == 20 + 20 * 3


def test_a_later_seed_reusing_the_first_seeds_choice_needs_no_validation_score():
    """Seed 1 trains only seed 0's chosen configuration and is not scored on validation:
    its weightless run, scored on test in every way the grid asks, stays free."""
    data = DataSettings(n=100, dataset="v")
    grid = _grid(targets=["label"], seeds=[0, 1], learning_rates=[1e-3, 2e-3])
    assert grid.sft.tune_with_first_seed
    (_, first), (_, later) = grid.sft_cells()
    test = grid.evaluate_config("test")
    finished = {"version_hash": "h", "runs": {
        later[0].identity("h"): {("test", "auto", test.settings_hash())}},
        "weightless": {later[0].identity("h")}}
    training = _stage(estimate(data, grid, SPEED, TOKENS, finished), "SFT training")
    assert (training["runs"], training["reused"]) == (len(first) + 1, 1)


def _tuned_cell_validated(*, best_weightless: bool, best_tested: bool,
                          worse_tested: bool = False) -> tuple:
    """A tuned rationale-free cell of two candidates, both finished and scored on
    validation (the second better), each tested in every way the grid asks only if
    ``best_tested`` / ``worse_tested``; the better one restored without weights when
    ``best_weightless``; (data, grid, finished, best)."""
    grid = _grid(targets=["rationale-free"], learning_rates=[1e-3, 2e-3])
    [(_, [worse, best])] = grid.sft_cells()
    validation = grid.evaluate_config("validation")
    val_key = ("validation", validation.scoring, validation.settings_hash())
    tests = {("test", grid.evaluate_config("test", v).scoring,
              grid.evaluate_config("test", v).settings_hash()) for v in (None, "sampled")}
    runs = {worse.identity("h"): {val_key} | (tests if worse_tested else set()),
            best.identity("h"): {val_key} | (tests if best_tested else set())}
    ranks = {(worse.identity("h"), *val_key[1:]): (True, 0.55),
             (best.identity("h"), *val_key[1:]): (True, 0.61)}
    finished = {"version_hash": "h", "runs": runs, "ranks": ranks,
                "weightless": {best.identity("h")} if best_weightless else set()}
    return DataSettings(n=100, dataset="v"), grid, finished, best


@pytest.mark.parametrize("best_weightless, best_tested, worse_tested, trained, tested", [
    # the choice lost its weights before its test scores: trained, validated and tested
    (True, False, False, 1, 2),
    # the same although the other candidate holds test scores from an earlier choice
    (True, False, True, 1, 2),
    (False, False, False, 0, 2),  # its weights are here: scored on test as it is
    (True, True, False, 0, 0),    # tested already in every way the grid asks
])
def test_a_tuned_cells_choice_without_weights_or_test_scores_is_costed_as_trained_again(
        best_weightless, best_tested, worse_tested, trained, tested):
    """As the grid does (training/grid/steps.score_chosen): the cell chooses the better
    stored validation score; a choice restored without weights that lacks a test score is
    trained and validated again before it is tested."""
    data, grid, finished, _ = _tuned_cell_validated(
        best_weightless=best_weightless, best_tested=best_tested, worse_tested=worse_tested)
    rows = estimate(data, grid, SPEED, TOKENS, finished)
    training, scoring = _stage(rows, "SFT training"), _stage(rows, "SFT scoring")
    assert (training["runs"], training["reused"]) == (2, 2 - trained)
    assert training["tokens"] == trained * 10 * 150
    # two validation scorings, greedy and sampled test; the retrained one's validation too
    assert (scoring["runs"], scoring["runs"] - scoring["reused"]) == (4, trained + tested)


def test_a_candidate_the_cell_chose_before_is_not_costed_as_trained_again():
    """As the grid does (training/grid/steps.train_candidate): the worse candidate holds
    a test score from an earlier choice, made under older settings, and has no weights
    here; the cell chooses the better one, tested in every way, so nothing is trained
    again and every test scoring is reused."""
    data, grid, finished, best = _tuned_cell_validated(best_weightless=False,
                                                       best_tested=True)
    [(_, [worse, _])] = grid.sft_cells()
    stale = ("test", grid.evaluate_config("test").scoring, "settings of an earlier pass")
    finished["runs"][worse.identity("h")].add(stale)
    finished["weightless"] = {worse.identity("h")}
    rows = estimate(data, grid, SPEED, TOKENS, finished)
    training, scoring = _stage(rows, "SFT training"), _stage(rows, "SFT scoring")
    assert (training["runs"], training["reused"]) == (2, 2)
    assert scoring["runs"] == scoring["reused"] == 4


@pytest.mark.parametrize("ranks, trained", [
    ({"worse": (True, 0.55), "best": (False, 0.9)}, 0),  # valid first, as the grid ranks
    ({"worse": (True, 0.61), "best": (True, 0.61)}, 0),  # a tie goes to the first
    ({"worse": (True, 0.55), "best": (True, 0.61)}, 1),
])
def test_the_expected_choice_follows_the_grids_ranking(ranks, trained):
    """Only the weightless second candidate, if chosen, is trained again."""
    data, grid, finished, best = _tuned_cell_validated(best_weightless=True,
                                                       best_tested=False)
    for key in finished["ranks"]:
        finished["ranks"][key] = ranks["best" if key[0] == best.identity("h") else "worse"]
    training = _stage(estimate(data, grid, SPEED, TOKENS, finished), "SFT training")
    assert (training["runs"], training["reused"]) == (2, 2 - trained)


def test_a_later_seed_is_costed_with_the_first_seeds_expected_choice():
    """Seed 0 chose the second candidate (better on validation, weights here); seed 1 ran
    that configuration only, and it is reused, not the first candidate costed instead."""
    data, grid, finished, best = _tuned_cell_validated(best_weightless=False,
                                                       best_tested=True)
    grid = grid.model_copy(update={"sft": grid.sft.model_copy(update={"seeds": [0, 1]})})
    (_, _), (_, later) = grid.sft_cells()
    [seed1] = [c for c in later if (c.learning_rate, c.num_train_epochs)
               == (best.learning_rate, best.num_train_epochs)]
    finished["runs"][seed1.identity("h")] = set(finished["runs"][best.identity("h")]) - {
        k for k in finished["runs"][best.identity("h")] if k[0] == "validation"}
    rows = estimate(data, grid, SPEED, TOKENS, finished)
    training, scoring = _stage(rows, "SFT training"), _stage(rows, "SFT scoring")
    assert (training["runs"], training["reused"]) == (3, 3)
    assert scoring["reused"] == scoring["runs"] == 2 + 2 + 2


def test_an_untuned_run_without_weights_or_test_scores_is_costed_as_trained_again():
    """One candidate, restored without weights before its test scores: the grid trains it
    again to score it on test (training/grid/steps.retrain_due)."""
    grid = _grid(targets=["label"])
    [(_, [run])] = grid.sft_cells()
    finished = {"version_hash": "h", "runs": {run.identity("h"): set()},
                "weightless": {run.identity("h")}}
    training = _stage(estimate(DataSettings(n=100, dataset="v"), grid, SPEED, TOKENS,
                               finished), "SFT training")
    assert (training["runs"], training["reused"]) == (1, 0)


def test_a_run_the_database_holds_is_costed_from_the_database_alone():
    """As a restore skips an archived run the database already holds: its validation
    score from the archive (lost weights; the database discarded it at the retrain) and
    the archive's results for a run still training here do not count."""
    from training.reproduce import _union

    database = {"version_hash": "h", "runs": {"c": {("test", "auto", "t")}},
                "ranks": {}, "held": {"c", "training"}, "weightless": set()}
    archived = {"version_hash": "h", "data_done": False, "weightless": {"c", "training"},
                "runs": {"c": {("validation", "auto", "s")},
                         "training": {("test", "auto", "t")}, "d": set()},
                "ranks": {("c", "auto", "s"): (True, 0.53), ("d", "auto", "s"): (True, 0.5)}}
    merged = _union(database, archived)
    assert merged["runs"] == {"c": {("test", "auto", "t")}, "d": set()}
    assert merged["ranks"] == {("d", "auto", "s"): (True, 0.5)}
    assert merged["weightless"] == set()


def test_selecting_on_the_primary_score_costs_sampled_validation_and_follows_its_ranks():
    """``select_on: primary``: a rationale cell whose candidates hold greedy validation
    scores only is costed two sampled validation scorings (a weightless candidate trained
    again for its own); once the sampled scores are stored, the expected choice follows
    them, not the greedy ones. A label cell is not touched."""
    data, grid, finished, best = _tuned_cell_validated(best_weightless=True,
                                                       best_tested=False)
    grid = grid.model_copy(update={"select_on": "primary"})
    assert grid.selection_scoring("rationale-free") == "sampled"
    assert grid.selection_scoring("label") is None
    assert grid.scores_needed("rationale-free", tuned=True, chosen=False) == [
        ("validation", "sampled")]
    rows = estimate(data, grid, SPEED, TOKENS, finished)
    training, scoring = _stage(rows, "SFT training"), _stage(rows, "SFT scoring")
    assert (training["runs"], training["reused"]) == (2, 1)  # the weightless one again
    # sampled validation for both, then greedy and sampled test: none of it stored
    assert (scoring["runs"], scoring["reused"]) == (4, 0)
    assert scoring["generations"] == 2 * 10 * 3 + 20 + 20 * 3

    sampled = grid.evaluate_config("validation", "sampled")
    key = ("validation", sampled.scoring, sampled.settings_hash())
    [(_, [worse, _])] = grid.sft_cells()
    finished["weightless"] = set()
    for cfg, rank in ((worse, (True, 0.70)), (best, (True, 0.52))):  # greedy said best
        finished["runs"][cfg.identity("h")].add(key)
        finished["ranks"][(cfg.identity("h"), *key[1:])] = rank
    tests = {("test", grid.evaluate_config("test", v).scoring,
              grid.evaluate_config("test", v).settings_hash()) for v in (None, "sampled")}
    finished["runs"][worse.identity("h")] |= tests  # the sampled choice, tested
    scoring = _stage(estimate(data, grid, SPEED, TOKENS, finished), "SFT scoring")
    assert (scoring["runs"], scoring["reused"]) == (4, 4)


def test_a_prefilled_pass_reads_prompt_and_filler_and_generates_nothing():
    """The filler model read after its filler: one pass over the prompt and the filler
    (about a completion's length) per test patient, on top of its own greedy pass."""
    data = DataSettings(n=100, dataset="v")  # 20 test patients
    tokens = {"targets": {**TOKENS["targets"],
                          "label-padded": TOKENS["targets"]["rationale-free"]}}
    plain = ExperimentGrid(dataset="v", fewshot=None, sft={"targets": ["label-padded"]})
    prefilled = plain.model_copy(update={"extra_scorings": ["prefilled"]})
    before = _stage(estimate(data, plain, SPEED, tokens), "SFT scoring")
    after = _stage(estimate(data, prefilled, SPEED, tokens), "SFT scoring")
    assert after["runs"] - before["runs"] == 1
    assert after["generations"] == before["generations"]
    assert after["tokens"] - before["tokens"] == 20 * (100 + 50)
    assert after["seconds"] - before["seconds"] == pytest.approx(20 * (100 + 50) / 1000)


def test_a_fewshot_run_with_rationales_is_costed_again_for_its_sampled_rationales():
    """Where the grid samples, a few-shot run whose base model writes rationales is scored
    by sampled rationales too (n per patient); a run without rationales is not, and each
    stored scoring is reused on its own."""
    data = DataSettings(n=100, dataset="v")  # 20 test patients
    grid = ExperimentGrid(dataset="v", sft=None, extra_scorings=["sampled"],
                          evaluation={"n_samples": 3}, fewshot={
                              "ks": [4], "with_rationales": [True, False],
                              "settings": {"engine": "vllm", "selection": "nearest"}})
    with_r, without = grid.fewshot_runs()
    assert grid.fewshot_scorings(with_r) == ["sampled"] and not grid.fewshot_scorings(without)
    scoring = grid.fewshot_evaluate_config(with_r, "sampled")
    assert (scoring.scoring, scoring.n_samples, scoring.seed) == ("sampled", 3, with_r.seed)
    prompt = 100 + 4 * 150  # nearest: each query reads its own demonstrations
    greedy = 20 * prompt / 1000 + 20 * 50 / 10  # read the prompt, write one rationale
    direct = 20 * (100 + 4 * 105) / 1000  # demonstrations without rationales; no writing
    # three rationales each, then each read again for its P(yes)
    sampled = (20 * prompt + 20 * 3 * (prompt + 50)) / 1000 + 20 * 50 * 3 / 10
    rows = _stage(estimate(data, grid, SPEED, TOKENS), "few-shot")
    assert rows["runs"] == 3  # both runs' own scorings and one sampled pass
    assert rows["seconds"] == pytest.approx(greedy + direct + sampled)
    done = {"version_hash": "h", "runs": {
        with_r.identity("h"): {("test", "auto", None)},
        without.identity("h"): {("test", "auto", None)}}}
    left = _stage(estimate(data, grid, SPEED, TOKENS, done), "few-shot")
    assert (left["runs"], left["reused"]) == (3, 2)
    done["runs"][with_r.identity("h")].add(("test", "sampled", scoring.settings_hash()))
    assert _stage(estimate(data, grid, SPEED, TOKENS, done), "few-shot")["seconds"] == 0
    # sampled kept to named SFT targets: few-shot keeps its own scoring only
    named = grid.model_copy(update={"extra_scoring_targets": {"sampled": ["rationale-free"]}})
    assert named.fewshot_scorings(with_r) == []
    with pytest.raises(ValueError, match="without rationales is not scored 'sampled'"):
        without.evaluate_config("sampled")
