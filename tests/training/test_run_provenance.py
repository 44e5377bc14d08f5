"""The record written beside a training run, and what it keeps when the run is resumed."""

import json

from annotation_db.provenance import code_version, code_versions, echo_config
from training.grid.results import trained_under
from training.sft_config import SFTRunConfig


def _config(**changes) -> SFTRunConfig:
    return SFTRunConfig(dataset="t", target="label", **changes)


def _record(folder) -> dict:
    return json.loads((folder / "provenance.json").read_text())


def _began_under(folder, version: str) -> None:
    """Rewrite the folder's record as if code ``version`` had written it."""
    record = _record(folder)
    (folder / "provenance.json").write_text(json.dumps({**record, "code_version": version}))


def test_a_resumed_command_keeps_the_sessions_that_began_its_work(tmp_path):
    echo_config(_config(), tmp_path, "train sft")
    _began_under(tmp_path, "a" * 40)
    echo_config(_config(), tmp_path, "train sft", resumed=True)
    _began_under(tmp_path, "b" * 40 + "+dirty")
    echo_config(_config(), tmp_path, "train sft", resumed=True)

    record = _record(tmp_path)
    assert [s["code_version"] for s in record["earlier"]] == ["a" * 40, "b" * 40 + "+dirty"]
    assert all("earlier" not in s for s in record["earlier"])  # kept flat, oldest first
    assert code_versions(tmp_path) == ["a" * 40, "b" * 40 + "+dirty", code_version()]


def test_a_fresh_start_or_another_config_keeps_no_earlier_session(tmp_path):
    echo_config(_config(), tmp_path, "train sft")
    _began_under(tmp_path, "a" * 40)
    echo_config(_config(), tmp_path, "train sft")  # not resumed: the old work is gone
    assert "earlier" not in _record(tmp_path)

    _began_under(tmp_path, "a" * 40)
    echo_config(_config(seed=7), tmp_path, "train sft", resumed=True)  # not this run's work
    assert "earlier" not in _record(tmp_path)
    assert code_versions(tmp_path / "nothing-here") == []


def test_a_runs_row_names_the_code_that_began_it_and_each_that_resumed_it(tmp_path):
    echo_config(_config(), tmp_path, "train sft", resumed=False)
    _began_under(tmp_path, "a" * 40)
    assert _record(tmp_path)["resumed"] is False
    assert trained_under(tmp_path) == "a" * 12

    echo_config(_config(), tmp_path, "train sft", resumed=True)
    _began_under(tmp_path, "a" * 40)  # resumed under the same code: one commit
    assert trained_under(tmp_path) == "a" * 12
    echo_config(_config(), tmp_path, "train sft", resumed=True)
    _began_under(tmp_path, "c" * 40 + "+dirty")
    assert trained_under(tmp_path) == "aaaaaaaaaaaa resumed under cccccccccccc+dirty"


def test_a_run_resumed_before_records_were_kept_says_its_first_commit_is_unknown(tmp_path):
    echo_config(_config(), tmp_path, "train sft")
    _began_under(tmp_path, "d" * 40)
    (tmp_path / "train_summary.json").write_text(json.dumps({"resumed_from": "checkpoint-25"}))
    assert trained_under(tmp_path) == ("dddddddddddd (resumed from checkpoint-25; the commit "
                                       "that began it is unknown)")
    assert trained_under(tmp_path / "no-run") is None


def test_a_run_begun_before_records_were_kept_and_resumed_since_says_so(tmp_path):
    """A record without ``resumed`` was written by code that kept no history: resumed
    now, the run cannot say which commit began it, and the report does not count that
    record's commit as the one that did."""
    echo_config(_config(), tmp_path, "train sft")  # the old code: no ``resumed`` key
    _began_under(tmp_path, "e" * 40)
    assert "resumed" not in _record(tmp_path)
    assert trained_under(tmp_path) == "e" * 12  # never resumed: it began the run
    echo_config(_config(), tmp_path, "train sft", resumed=True)
    _began_under(tmp_path, "f" * 40)
    assert trained_under(tmp_path) == ("eeeeeeeeeeee resumed under ffffffffffff (the commit "
                                       "that began it is unknown)")
