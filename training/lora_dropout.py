"""LoRA dropout that costs little on CPU: peft's dropout, drawn as the gaps between drops.

peft puts an ``nn.Dropout(p)`` on the input of every LoRA module (``lora_B(lora_A(
dropout(x)))``): all 7 linear layers of every block, a fresh mask each forward. On CPU
torch draws that mask with one Bernoulli sample per element, multiplies it into a float
mask and then into the input, and keeps the float mask for the backward. With the
bundled model at batch 8 × 410 tokens that is about 490 M elements per step. On the
2-core AMX Xeon (one thread, per 1.9 M elements): ``nn.Dropout`` 12 ms, of which the
Bernoulli draw is 9–10 ms, against 0.5 ms for the bf16 cast the LoRA branch needs
anyway; ``benchmarks/sft.py`` trained 3.3× slower at ``lora_dropout`` 0.05 than at 0.

:class:`LoraDropout` is the same dropout, drawn differently. The dropped elements of
the flattened input are a Bernoulli(p) process, and the gaps between successive drops of
such a process are independent Geometric(p) draws; so drawing the gaps (by inversion of
float64 uniforms) and summing them gives the dropped positions with exactly the
distribution of an element-wise Bernoulli mask (to float64 precision), with p·n random
draws instead of n: 0.6 ms instead of 9–10 ms per 1.9 M elements at p = 0.05 (one
thread), from the same seeded torch generator. The kept elements are ``x · (1 / (1 −
p))``, the dropped ones 0 (an ``index_fill_`` of the positions), and the backward scales
the gradient and zeroes the same positions; only the positions are saved (8·p bytes per
element instead of a 4-byte float mask). Eval mode is the identity. The project's trainer
at 0.05 ran 1.09–1.11× the time of dropout 0, peft's masks 1.53–1.59×
(``benchmarks/sft.py``, bf16 autocast, 2 cores; docs/training.md).

Under CPU autocast the output is produced in the autocast dtype (bf16): what follows the
dropout is the LoRA A linear, which autocast would cast it to anyway, so the values it
multiplies are the same as peft's and one cast is saved. The draw costs p·n samples, so
above ``MAX_GAP_P`` (where the gaps cost as much as the element-wise mask), and on other
devices than the CPU, it is torch's own dropout.

Only the module changes: ``lora_dropout`` keeps its meaning, the adapter's config still
says ``lora_dropout: p`` and a dropout holds no saved state, so adapters load in plain
peft. :func:`use_lora_dropout` swaps it into a peft model, after ``get_peft_model``.
"""

import math

import torch
from torch import nn

# Above this rate torch's element-wise Bernoulli mask (~5 ns per element, spread over the
# cores) is used: on one core the gaps (~6 ns per drop, drawn on one core) were the cheaper
# up to p = 0.5 and not at 0.7; 0.25 leaves room for the second core.
MAX_GAP_P = 0.25


def dropped_positions(n: int, p: float, chunk: int | None = None) -> torch.Tensor:
    """Sorted positions in ``range(n)``, each in it independently with probability ``p``:
    cumulative sums of Geometric(p) gaps ``⌊log(V) / log(1 − p)⌋ + 1`` for V uniform on
    (0, 1] (the first drop at gap − 1), drawn ``chunk`` at a time (by default enough for
    all of them but once in about 10^15 calls)."""
    expected = n * p
    chunk = chunk or int(expected + 8 * math.sqrt(expected * (1 - p)) + 16)
    parts, last = [torch.empty(0, dtype=torch.int64)], -1
    while last < n - 1:
        # V = 1 − U for U = torch.rand (float64, [0, 1)): log(V) = log1p(−U) is finite;
        # gaps past the end are capped there, so their sums cannot overflow
        gaps = (torch.rand(chunk, dtype=torch.float64).neg_().log1p_()
                .div_(math.log1p(-p)).floor_().add_(1).clamp_(max=n + 1))
        parts.append(gaps.to(torch.int64).cumsum_(0).add_(last))
        last = int(parts[-1][-1])
    positions = torch.cat(parts) if len(parts) > 2 else parts[-1]
    return positions[: int(torch.searchsorted(positions, n))]


class _GapDropout(torch.autograd.Function):
    """``x · scale`` in ``dtype`` with the elements at ``positions`` zeroed; the gradient
    likewise, in ``x``'s dtype."""

    @staticmethod
    def forward(ctx, x, positions, scale: float, dtype: torch.dtype):
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        torch.mul(x, scale, out=out)  # computed in x's dtype, then cast: peft's values
        out.view(-1).index_fill_(0, positions, 0)
        ctx.save_for_backward(positions)
        ctx.scale, ctx.in_dtype = scale, x.dtype
        return out

    @staticmethod
    def backward(ctx, grad):
        (positions,) = ctx.saved_tensors
        out = torch.empty(grad.shape, dtype=ctx.in_dtype, device=grad.device)
        out.copy_(grad).mul_(ctx.scale)  # upcast first, then scale: as peft's backward
        out.view(-1).index_fill_(0, positions, 0)
        return out, None, None, None


class LoraDropout(nn.Dropout):
    """``nn.Dropout(p)`` with the mask drawn as gaps between drops (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p > MAX_GAP_P or not x.is_floating_point():
            return super().forward(x)
        # the factor nn.Dropout multiplies by: 1 / (1 − p), rounded to x's dtype
        scale = float(torch.ones((), dtype=x.dtype).div_(1 - self.p))
        dtype = (torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                 else x.dtype)
        return _GapDropout.apply(x, dropped_positions(x.numel(), self.p), scale, dtype)


def use_lora_dropout(model: nn.Module) -> int:
    """Replace the ``nn.Dropout`` of every LoRA layer of a peft ``model`` with
    :class:`LoraDropout` of the same rate; return how many were replaced."""
    from peft.tuners.lora import LoraLayer

    swapped = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, dropout in module.lora_dropout.items():
            if type(dropout) is nn.Dropout:
                module.lora_dropout[name] = LoraDropout(dropout.p).train(dropout.training)
                swapped += 1
    return swapped
