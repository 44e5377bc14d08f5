"""The judge's prompt, schema and reading of its answer (no model needed)."""

import json
import math

import jsonschema
import pytest

from annotation_db.rubric import CLAIM_VERDICTS
from generation.chat import Completion, TokenLogprobs
from generation.judge import (
    FIXED_TOKENS,
    answer_budget,
    expected_score,
    json_schema,
    parse_answer,
    score_distribution,
    system_prompt,
)
from generation.models import load_tokenizer

GUIDELINES = {
    "version": "1.0",
    "dimensions": {d: {"title": d.title(), "question": f"Is it {d}?",
                       "anchors": {s: f"{d} anchor {s}" for s in range(1, 6)}}
                   for d in ("accuracy", "faithfulness")},
    "flags": {f: f"{f} text" for f in ("hallucinated_fact", "missed_key_risk_factor",
                                       "unsafe_or_misleading", "label_contradicts_record")},
}


def tokens(text: str, pieces: list[str], tops: dict[int, dict[str, float]]) -> list:
    assert "".join(pieces) == text
    return [TokenLogprobs(p, tops.get(i, {p: 0.0})) for i, p in enumerate(pieces)]


def test_the_prompt_carries_every_anchor_and_flag_the_clinicians_see():
    prompt = system_prompt(GUIDELINES)
    for d in ("accuracy", "faithfulness"):
        assert all(f"{s}: {d} anchor {s}" in prompt for s in range(1, 6))
    assert all(f"{f}: {f} text" in prompt for f in GUIDELINES["flags"])


def test_the_expected_score_is_read_at_the_score_token_and_renormalised_over_1_to_5():
    text = '{"reason":"ok","accuracy":4,"faithfulness":2,"flags":[]}'
    pieces = ['{"', 'reason', '":"', 'ok', '","', 'accuracy', '":', '4', ',"', 'faithfulness',
              '":', '2', ',"', 'flags', '":[]}']
    tops = {7: {"4": math.log(0.6), "5": math.log(0.2), "x": math.log(0.1)},
            11: {"2": math.log(0.5), " 3": math.log(0.25), "1": math.log(0.25)}}
    completion = Completion(text, len(pieces), "stop", tokens(text, pieces, tops))
    answer = parse_answer(completion)
    assert answer.scores == {"accuracy": 4, "faithfulness": 2}
    accuracy = answer.distributions["accuracy"]
    assert accuracy == pytest.approx({"4": 0.75, "5": 0.25})  # "x" is no score
    assert expected_score(accuracy) == pytest.approx(4.25)
    assert expected_score(answer.distributions["faithfulness"]) == pytest.approx(
        2 * 0.5 + 3 * 0.25 + 1 * 0.25)


def test_without_logprobs_there_is_no_expected_score():
    text = '{"reason":"","accuracy":3,"faithfulness":3,"flags":["hallucinated_fact"]}'
    answer = parse_answer(Completion(text, 10, "stop"))
    assert answer.flags == ["hallucinated_fact"] and answer.distributions["accuracy"] is None
    assert score_distribution(None, text, "accuracy") is None


@pytest.mark.parametrize("text", ['{"reason":"x","accuracy":7,"faithfulness":3,"flags":[]}',
                                  '{"reason":"x","accuracy":3,"faithfulness":3,"flags":["nope"]}',
                                  '{"reason":"x","accuracy":3', "[]"])
def test_an_answer_outside_the_rubric_is_refused(text):
    assert parse_answer(Completion(text, 5, "stop")) is None


def test_the_largest_answer_the_schema_allows_fits_the_budget(bundled_model):
    """Every flag, the longest reason and the widest separators still close in time."""
    tokenizer = load_tokenizer(bundled_model.path)
    for max_tokens in (FIXED_TOKENS + 16, 128, 256, 512):
        schema = json_schema(max_tokens)
        largest = {"reason": "0" * schema["properties"]["reason"]["maxLength"],
                   "accuracy": 5, "faithfulness": 5,
                   "flags": schema["properties"]["flags"]["items"]["enum"]}
        jsonschema.validate(largest, schema)
        text = json.dumps(largest, separators=(", ", ": "))
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens


def test_a_character_split_across_tokens_does_not_shift_the_score_token():
    # "≥" comes back as two tokens decoded alone ("\ufffd" each): the tokens' text is one
    # character longer than the answer's, and the score must still be read at its own token
    text = '{"reason":"age≥80","accuracy":2,"faithfulness":5,"flags":[]}'
    pieces = ['{"', 'reason', '":"', 'age', '\ufffd', '\ufffd', '80', '","', 'accuracy', '":',
              '2', ',"', 'faithfulness', '":', '5', ',"', 'flags', '":[]}']
    tops = {10: {"2": math.log(0.9), "3": math.log(0.1)}, 14: {"5": 0.0}}
    logprobs = [TokenLogprobs(p, tops.get(i, {p: 0.0})) for i, p in enumerate(pieces)]
    answer = parse_answer(Completion(text, len(pieces), "stop", logprobs))
    assert answer.distributions["accuracy"] == pytest.approx({"2": 0.9, "3": 0.1})
    assert answer.distributions["faithfulness"] == {"5": 1.0}


def test_with_claim_review_the_judge_gives_exactly_one_known_verdict_per_claim():
    base = '{"reason":"x","accuracy":4,"faithfulness":3,"flags":[]'
    good = parse_answer(Completion(base + ',"claims":["supported","not_in_record"]}', 9,
                                   "stop"), claims=2)
    assert good.claims == ["supported", "not_in_record"]
    for claims in ('["supported"]', '["supported","nope"]', '"supported"'):
        assert parse_answer(Completion(base + f',"claims":{claims}}}', 9, "stop"),
                            claims=2) is None
    assert parse_answer(Completion(base + "}", 9, "stop"), claims=2) is None
    schema = json_schema(256, claims=2)
    assert schema["properties"]["claims"]["minItems"] == schema["properties"]["claims"][
        "maxItems"] == 2
    assert "claims" in schema["required"] and "claims" not in json_schema(256)["properties"]


def test_the_largest_answer_with_claim_verdicts_fits_the_budget(bundled_model):
    tokenizer = load_tokenizer(bundled_model.path)
    longest = max(CLAIM_VERDICTS, key=lambda v: len(tokenizer(f'"{v}", ')["input_ids"]))
    for max_tokens, claims in ((256, 6), (512, 12), (256, 1), (256, 40)):
        schema = json_schema(max_tokens, claims)
        largest = {"reason": "0" * schema["properties"]["reason"]["maxLength"],
                   "accuracy": 5, "faithfulness": 5,
                   "flags": schema["properties"]["flags"]["items"]["enum"],
                   "claims": [longest] * claims}
        jsonschema.validate(largest, schema)
        text = json.dumps(largest, separators=(", ", ": "))
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= answer_budget(
            max_tokens, claims)
    assert answer_budget(256, 6) == 256 and answer_budget(256, 40) > 256
