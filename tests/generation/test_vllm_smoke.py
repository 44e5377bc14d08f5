"""Real vLLM generation on the bundled model (one engine for the whole session)."""

import json

import pytest

from generation.engine import vllm_chat

pytestmark = pytest.mark.vllm


def test_vllm_generates_tokens_from_the_bundled_model(vllm_engine):
    result = vllm_chat(
        vllm_engine,
        [[{"role": "user", "content": "Name a risk factor for dementia."}]] * 3,
        max_tokens=16,
    )
    assert len(result.texts) == 3
    assert all(text.strip() for text in result.texts)
    assert result.texts[0] == result.texts[1] == result.texts[2], "greedy decoding is deterministic"
    assert 3 <= result.completion_tokens <= 48
    assert result.tokens_per_second > 0


def test_vllm_structured_output_is_valid_json(vllm_engine):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    schema = {
        "type": "object",
        "properties": {"prediction": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["prediction"],
        "additionalProperties": False,
    }
    params = SamplingParams(
        max_tokens=32, temperature=0.0,
        structured_outputs=StructuredOutputsParams(json=schema),
    )
    outputs = vllm_engine.chat(
        [[{"role": "user", "content": "Will this 80-year-old develop dementia? JSON."}]],
        params, use_tqdm=False,
    )
    assert json.loads(outputs[0].outputs[0].text)["prediction"] in {"yes", "no"}
