"""The project's LoRA dropout (training/lora_dropout.py) is peft's dropout: each element
kept independently with probability 1 − p and scaled by nn.Dropout's factor, a fresh
mask each call, the identity in eval mode, nn.Dropout's gradients; the project's trainer
uses it and its adapters load in plain peft."""

import math

import pytest
import torch
from torch import nn

from training.lora_dropout import LoraDropout, dropped_positions, use_lora_dropout

ROWS, COLS = 1000, 2000  # 2 M elements


def _factor(p: float) -> torch.Tensor:
    """What nn.Dropout multiplies a kept element by (1 / (1 − p) in float32)."""
    return nn.functional.dropout(torch.ones(64), p, training=True).max()


def _within(observed: float, expected: float, n: int, p: float, sigmas: float = 5) -> bool:
    """``observed`` is a share of ``n`` Bernoulli(p) draws within ``sigmas`` standard
    errors of ``expected``."""
    return abs(observed - expected) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])  # 0.5: above MAX_GAP_P, torch's mask
def test_each_element_is_kept_independently_with_probability_1_minus_p(p):
    torch.manual_seed(1)
    kept = LoraDropout(p)(torch.randn(ROWS, COLS) + 10) != 0  # no input element is 0
    n = ROWS * COLS
    assert _within(kept.float().mean().item(), 1 - p, n, p)
    # independent of position: every row's and every column's share, and their spread
    for axis, size, count in ((1, COLS, ROWS), (0, ROWS, COLS)):
        shares = kept.double().mean(dim=axis)
        z = (shares - (1 - p)) / math.sqrt(p * (1 - p) / size)
        assert z.abs().max() < 6
        # their variance is the binomial one: (count − 1)·var/var₀ ~ χ²(count − 1)
        assert abs(float((z ** 2).sum()) - (count - 1)) < 5 * math.sqrt(2 * (count - 1))
    # independent of its neighbour: both of two adjacent elements dropped at rate p²
    flat = ~kept.flatten()
    assert _within((flat[1:] & flat[:-1]).float().mean().item(), p * p, n - 1, p * p)


def test_kept_elements_are_scaled_as_nn_dropout_scales_them_and_dropped_ones_are_zero():
    torch.manual_seed(2)
    x = torch.randn(ROWS, COLS) + 10
    out = LoraDropout(0.05)(x)
    kept = out != 0
    assert out.dtype == x.dtype and 0 < kept.float().mean() < 1
    # x has no 0, so each element is exactly x times the factor or exactly 0
    assert torch.equal(out[kept], x[kept] * _factor(0.05))


def test_each_call_draws_a_fresh_independent_mask_and_a_seed_repeats_it():
    p, x = 0.05, torch.randn(ROWS, COLS) + 10
    dropout = LoraDropout(p)
    torch.manual_seed(3)
    first, second = (dropout(x) == 0 for _ in range(2))
    assert not torch.equal(first, second)
    # independent draws: both drop an element at rate p²
    assert _within((first & second).float().mean().item(), p * p, ROWS * COLS, p * p)
    torch.manual_seed(3)
    assert torch.equal(dropout(x) == 0, first)  # a resumed run draws the same masks


def test_eval_mode_and_rate_zero_are_the_identity():
    x = torch.randn(8, 16)
    assert LoraDropout(0.05).eval()(x) is x
    assert LoraDropout(0.0)(x) is x


def test_gradients_flow_as_through_nn_dropout():
    torch.manual_seed(4)
    x = torch.randn(300, 400, requires_grad=True)
    out = LoraDropout(0.05)(x)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    kept = out != 0
    # nn.Dropout's backward: the upstream gradient times its mask of 0 and the factor
    assert torch.equal(x.grad, upstream * kept * _factor(0.05))


def test_under_cpu_autocast_the_lora_branch_gets_peft_s_values_and_gradients():
    """Under bf16 autocast the output is already bf16: the values the LoRA A linear
    multiplies, and the float32 gradient of the input, are those of nn.Dropout's mask."""
    torch.manual_seed(5)
    x = torch.randn(300, 400, requires_grad=True)
    lora_a = nn.Linear(400, 16, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LoraDropout(0.05)(x)
        mine = lora_a(out)
    assert out.dtype == torch.bfloat16
    kept = (out != 0).detach()
    noise = kept * _factor(0.05)  # nn.Dropout's float32 noise with the same mask
    reference_x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        peft = lora_a(reference_x * noise)
    assert torch.equal(mine, peft)
    upstream = torch.randn_like(mine)
    mine.backward(upstream)
    peft.backward(upstream)
    assert x.grad.dtype == torch.float32 and torch.equal(x.grad, reference_x.grad)


def test_positions_drawn_in_several_chunks_are_the_same_process():
    torch.manual_seed(6)
    n, p = 200_000, 0.1
    positions = dropped_positions(n, p, chunk=1000)  # about 20 chunks
    assert positions.dtype == torch.int64
    assert bool((positions[1:] > positions[:-1]).all())  # sorted, each once
    assert 0 <= int(positions[0]) and int(positions[-1]) < n
    assert _within(len(positions) / n, p, n, p)
    assert len(dropped_positions(0, p)) == 0


def _peft_model(tiny_model: str, dropout: float = 0.05):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                          LoraConfig(r=4, lora_dropout=dropout, target_modules="all-linear",
                                     init_lora_weights=False, task_type="CAUSAL_LM"))


def _lora_dropouts(model) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [d for m in model.modules() if isinstance(m, LoraLayer)
            for d in m.lora_dropout.values()]


def test_a_peft_model_s_lora_layers_use_it_after_the_swap_and_eval_output_is_unchanged(
        tiny_model):
    model = _peft_model(tiny_model).eval()
    ids = torch.arange(1, 25).view(2, 12)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    assert use_lora_dropout(model) == 2 * 7  # 2 layers × q, k, v, o, gate, up, down
    dropouts = _lora_dropouts(model)
    assert len(dropouts) == 14
    assert all(type(d) is LoraDropout and d.p == 0.05 for d in dropouts)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)
        model.train()
        calls = []
        hooks = [d.register_forward_hook(lambda *_: calls.append(1)) for d in dropouts]
        trained = model(input_ids=ids).logits
        for hook in hooks:
            hook.remove()
    assert len(calls) == 14 and not torch.equal(trained, before)
    assert use_lora_dropout(_peft_model(tiny_model, dropout=0.0)) == 0  # nn.Identity stays


def test_the_project_s_trainer_trains_with_it(tiny_model, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from training.sft import load_tokenizer, logits_loss_trainer

    args = SFTConfig(output_dir=str(tmp_path), max_length=None, completion_only_loss=True,
                     report_to="none", use_cpu=True, disable_tqdm=True)
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}]
    trainer = logits_loss_trainer()(
        model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args,
        processing_class=load_tokenizer(tiny_model), train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear",
                               task_type="CAUSAL_LM"))
    dropouts = _lora_dropouts(trainer.model)
    assert len(dropouts) == 14 and all(type(d) is LoraDropout for d in dropouts)


def test_an_adapter_saved_with_it_loads_in_plain_peft(tiny_model, tmp_path):
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = _peft_model(tiny_model)
    use_lora_dropout(model)
    model.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["lora_dropout"] == 0.05
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                       str(tmp_path)).eval()
    assert all(type(d) is nn.Dropout and d.p == 0.05 for d in _lora_dropouts(loaded))
    ids = torch.arange(1, 25).view(2, 12)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
