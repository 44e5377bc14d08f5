"""How much memory an SFT run will need, before it starts, and what fits when it will not.

The Runs screen's **Check** shows the estimate; **Launch** refuses a run whose estimate
exceeds the memory the machine has free (``MemAvailable``, or the container's limit when
that is lower) and names settings that fit: a smaller per-step batch with gradient
accumulation making up the same effective batch (the optimizer sees the same batches), and
if even one row per step does not fit, a shorter ``max_length``.

The estimate is a sum of parts, each from the model's own configuration (``config.json``):

- **weights** — every parameter, fp32 (bf16 on a GPU run in bf16);
- **autocast copies** — under bf16 autocast on a CPU each weight is also cast to bf16 once
  per step;
- **LoRA and optimizer** — the adapter's parameters with their gradients and AdamW's two
  moments (16 bytes each);
- **activations** — what the forward pass keeps for the backward, per token and layer:
  the residual stream and norms in fp32 (``ACTIVATION_HIDDEN`` hidden-size vectors) and the
  attention and MLP products in the compute dtype (``ACTIVATION_INTERMEDIATE``
  intermediate-size ones), times the rows × tokens of the largest batch (rows are padded to
  the batch's longest, at most ``max_length``);
- **logits** — the LM head only where the loss is (the completion), in fp32, with the
  log-softmax and its gradient;
- **runtime** — Python, PyTorch, the libraries, the data and the allocator's slack
  (``RUNTIME_GIB``, measured once: the one part set from a measurement).

``benchmarks/memory.py`` measures the peak resident set of real runs against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3
# An SFT process's own: Python, torch, transformers, TRL, peft, the data, the allocator's
# slack. Measured, not derived: the peak of one run (batch 1 × 384 tokens, bundled model,
# 2-core CPU) less the parts below; benchmarks/memory.py checks it on other settings.
RUNTIME_GIB = 2.4
ACTIVATION_HIDDEN = 34  # bytes per token, layer and hidden unit (fp32 residual, norms, q/k/v/o)
ACTIVATION_INTERMEDIATE = 10  # bytes per token, layer and MLP unit (gate, up, act, product)
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class MemoryEstimate:
    parts: dict[str, float]  # GiB by part
    available: float | None  # GiB free for it (None: unknown)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= self.available

    def describe(self) -> str:
        parts = ", ".join(f"{name} {gib:.2f}" for name, gib in self.parts.items())
        free = (f" of {self.available:.1f} GiB free" if self.available is not None else "")
        return f"about {self.total:.1f} GiB peak{free} ({parts} GiB)"


def model_shape(model_path: str | Path) -> dict:
    """The sizes the estimate needs, from a Hugging Face ``config.json``."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    inter, vocab = config["intermediate_size"], config["vocab_size"]
    per_layer = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv),
                 "v_proj": (hidden, kv), "o_proj": (heads * head_dim, hidden),
                 "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
                 "down_proj": (inter, hidden)}
    params = (layers * (sum(i * o for i, o in per_layer.values()) + 2 * hidden)
              + vocab * hidden * (1 if config.get("tie_word_embeddings") else 2) + hidden)
    return {"hidden": hidden, "layers": layers, "intermediate": inter, "vocab": vocab,
            "params": params, "linear": per_layer}


def available_gib() -> float | None:
    """Memory free for a new process: ``MemAvailable``, capped by the container's limit
    less what it already uses (cgroup v2 or v1)."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            used = int(Path(usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:
            room = (int(cap) - used) / GIB
            free = room if free is None else min(free, room)
        break
    return free


def estimate(shape: dict, *, batch: int, tokens: int, completion_tokens: int,
             lora_r: int, lora_modules: str | list[str], bf16_autocast: bool,
             gpu_bf16: bool = False, gradient_checkpointing: bool = False,
             available: float | None = None) -> MemoryEstimate:
    """The peak of one training process: ``batch`` rows of ``tokens`` (padded length)
    each, the loss on ``completion_tokens`` of them."""
    weight_bytes = 2 if gpu_bf16 else 4
    modules = (set(shape["linear"]) if lora_modules == "all-linear"
               else {m for m in lora_modules if m in shape["linear"]})
    lora = shape["layers"] * sum(lora_r * (i + o) for name, (i, o) in shape["linear"].items()
                                 if name in modules)
    per_token_layer = (ACTIVATION_HIDDEN * shape["hidden"]
                       + ACTIVATION_INTERMEDIATE * shape["intermediate"])
    kept_layers = 1 if gradient_checkpointing else shape["layers"]
    activations = batch * tokens * (kept_layers * per_token_layer
                                    + (shape["layers"] * 4 * shape["hidden"]
                                       if gradient_checkpointing else 0))
    parts = {
        "runtime": RUNTIME_GIB,
        "weights": shape["params"] * weight_bytes / GIB,
        "autocast copies": shape["params"] * 2 / GIB if bf16_autocast else 0.0,
        "LoRA and optimizer": lora * 16 / GIB,
        "activations": activations / GIB,
        "logits": batch * completion_tokens * shape["vocab"] * 4 * 3 / GIB,
    }
    return MemoryEstimate({k: v for k, v in parts.items() if v > 0}, available)


def for_config(config, model_path: str | Path, precision: str, *,
               completion_tokens: int | None = None,
               available: float | None = None) -> MemoryEstimate:
    """The estimate of an :class:`training.sft.SFTRunConfig` on the model at
    ``model_path``, trained in ``precision`` (:func:`training.sft.resolve_precision`:
    bf16, bf16-autocast or fp32): rows padded to ``max_length`` (the worst batch), the
    completion a sixth of it unless given (a label-only answer is a few tokens)."""
    completion = (completion_tokens if completion_tokens is not None
                  else 8 if config.target == "label" else config.max_length // 6)
    return estimate(model_shape(model_path), batch=config.per_device_train_batch_size,
                    tokens=config.max_length, completion_tokens=completion,
                    lora_r=config.lora_r, lora_modules=config.lora_target_modules,
                    bf16_autocast=precision == "bf16-autocast", gpu_bf16=precision == "bf16",
                    gradient_checkpointing=config.gradient_checkpointing,
                    available=available)


def fitting(config, model_path: str | Path, precision: str, available: float,
            **options) -> dict | None:
    """Settings that fit ``available`` GiB with the same effective batch (rows per
    optimizer step): the largest per-step batch that divides it and fits, gradient
    accumulation making up the rest; at one row per step, ``max_length`` halved until it
    fits (down to 128). None when nothing fits."""
    effective = config.per_device_train_batch_size * config.gradient_accumulation_steps
    batches = [b for b in range(config.per_device_train_batch_size, 0, -1)
               if effective % b == 0]
    length = config.max_length
    while True:
        for batch in batches:
            trial = config.model_copy(update={
                "per_device_train_batch_size": batch,
                "gradient_accumulation_steps": effective // batch, "max_length": length})
            if for_config(trial, model_path, precision, available=available, **options).fits:
                return {"per_device_train_batch_size": batch,
                        "gradient_accumulation_steps": effective // batch,
                        "max_length": length}
        if length <= 128:
            return None
        batches, length = [1], max(128, length // 2)


__all__ = ["MemoryEstimate", "available_gib", "estimate", "fitting", "for_config",
           "model_shape"]
