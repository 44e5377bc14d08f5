"""Prompt templates and the structured-output contract."""

import json

import pytest

from generation.cohort import generate
from generation.cohort_config import CohortConfig
from generation.prompts import PromptError, load_template, template_for
from generation.rationale_schema import json_schema, parse_output


@pytest.fixture(scope="module")
def record():
    records, _ = generate(CohortConfig(n=10, seed=2))
    return next(r for r in records if r["label"])


@pytest.mark.parametrize("mode", ["label-conditioned", "label-blind"])
@pytest.mark.parametrize("format", ["free", "stepwise"])
def test_every_template_loads_and_asks_for_cited_evidence(mode, format, record):
    template = template_for(mode, format)
    assert template.id == f"{mode}-{format}@1" and len(template.content_hash) == 64
    system, user = template.messages(record)
    assert "[E7]" in system["content"]
    assert all(f"{item['id']} " in user["content"] for item in record["items"])
    told = "Known outcome: diagnosed with ADRD" in user["content"]
    assert told == (mode == "label-conditioned")
    assert str(record["outcome"]["adrd_date"]) not in user["content"]


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(PromptError, match="unknown prompt template 'nope@3'; known: .*label-blind"):
        load_template("nope@3")


def test_schema_restricts_evidence_to_the_patients_ids():
    schema = json_schema(["E1", "E2"], "stepwise")
    assert schema["properties"]["evidence"]["items"]["enum"] == ["E1", "E2"]
    steps = schema["properties"]["rationale"]["items"]["properties"]["evidence"]
    assert steps["items"]["enum"] == ["E1", "E2"]


@pytest.mark.parametrize("raw, reason", [
    ('{"prediction": "yes", "evidence": ["E1"], "rationale": "Hypertens', "invalid JSON"),
    ("no json here", "no JSON object"),
    ('{"prediction": "maybe", "evidence": ["E1"], "rationale": "x"}', "schema: prediction"),
    ('{"prediction": "yes", "evidence": ["E9"], "rationale": "Because [E9]"}',
     "not in the record"),
    ('{"prediction": "yes", "evidence": ["E1"], "rationale": [{"step": "a", "evidence": []}]}',
     "must be text"),
])
def test_invalid_outputs_are_refused_with_a_reason(raw, reason):
    output, error = parse_output(raw, ["E1", "E2"], "free")
    assert output is None and reason in error


def test_valid_stepwise_output_collects_every_cited_id():
    raw = json.dumps({"prediction": "no", "evidence": ["E1"], "rationale": [
        {"step": "Young [E2].", "evidence": ["E2"]}, {"step": "No APOE ε4.", "evidence": []}]})
    output, error = parse_output(raw, ["E1", "E2"], "stepwise")
    assert error is None
    assert output.cited_ids() == ["E1", "E2"]
    assert output.text == "1. Young [E2].\n2. No APOE ε4."


@pytest.mark.parametrize("url, public", [
    ("http://someone:secret@gpu-1:8000/v1?token=abc", "http://gpu-1:8000/v1"),
    ("https://[::1]:8443/v1/", "https://[::1]:8443/v1"),
    ("http://127.0.0.1/v1", "http://127.0.0.1/v1"),
])
def test_a_server_url_is_stored_without_its_credentials(url, public):
    from generation.backends import public_url

    assert public_url(url) == public
