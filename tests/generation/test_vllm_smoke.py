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


def test_the_shared_engine_still_generates_after_another_engine_shuts_down(
        current_vllm_engine, tiny_model):
    """An engine of a test's own, started and dropped in this process, tears down vLLM's
    process-wide parallel groups; the session's shared engine comes back in working order
    for the next test that asks for it."""
    import gc

    from vllm.distributed.parallel_state import model_parallel_is_initialized

    from generation.engine import EngineOptions, load_vllm
    from generation.models import resolve_model

    current_vllm_engine()  # the shared engine is up
    own = load_vllm(resolve_model(tiny_model), EngineOptions(max_model_len=2048,
                                                             dtype="float32"))
    del own
    gc.collect()
    assert not model_parallel_is_initialized()  # what left the shared engine unable to step
    result = vllm_chat(current_vllm_engine(),
                       [[{"role": "user", "content": "Name a risk factor for dementia."}]],
                       max_tokens=8)
    assert result.texts[0].strip()
