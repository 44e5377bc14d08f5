"""Benchmark: LoRA SFT throughput by precision, padding by batching, and TRL vs a lean loop.

    .venv/bin/python benchmarks/sft.py                 # CPU here; a GPU when there is one
    .venv/bin/python benchmarks/sft.py --steps 6 --batch 4 --bf16 always

In one run, on the same tokenized, loss-masked rows (a small audited dataset built in
a temporary database: template-teacher rationales, simulated ratings), the same LoRA
(all linear layers), batch size, optimizer (AdamW) and learning rate:

- TRL's SFTTrainer in fp32, and under bf16 autocast where the CPU computes bf16
  natively (AVX512-BF16 or AMX; ``--bf16 always`` measures the emulated case too);
- on CPU, the project's trainer (``training.sft.logits_loss_trainer``: TRL with the
  loss from the model's own cross-entropy instead of TRL's fused LM-head kernel, which
  runs as Python tiles without Triton), against TRL's in the same run;
- the share of padding tokens in one epoch's batches, grouped by length (the
  project's default) against random order, as the trainer builds them;
- the project's trainer at ``SFTRunConfig``'s default ``lora_dropout`` against
  ``--lora-dropout`` (default 0, which every other figure uses): the project's trainer
  draws its dropout masks as gaps between drops (``training.lora_dropout``); with
  ``--peft-dropout`` also at the default rate with peft's own ``nn.Dropout``, whose
  Bernoulli masks made a CPU step 1.5–3.3× slower (docs/training.md);
- with ``--interleave N``, the dropout's cost as steps of one model that alternate
  between no dropout, the project's and peft's, N rounds (on a busy machine the load
  changes between the trainer runs above, not within a round);
- a lean hand-written PyTorch loop (``--lean``), the reference TRL was chosen against.

Tokens/s counts real (non-padding) tokens over the timed optimizer steps, after one
warm-up step each. Writes benchmarks/results/sft.json.
"""

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import platform
import tempfile
import time

import torch


def data(tmp: Path, n: int, max_length: int, view: str):
    from sqlmodel import Session

    from annotation_db import migrate
    from annotation_db.export import get_version
    from annotation_db.session import make_engine
    from generation.models import resolve_model
    from training.data import read_view, tokenize_rows
    from training.sft import load_tokenizer
    from training.study import prepare_dataset
    from training.study_config import DataSettings

    engine = make_engine(f"sqlite:///{tmp / 'bench.sqlite'}")
    migrate.upgrade(engine)
    prepare_dataset(engine, DataSettings(n=max(4 * n, 60), history_budget=200, dataset="b"),
                    exports_dir=tmp / "exports")
    with Session(engine) as session:
        rows = read_view(get_version(session, "b"), view, "train")[:n]
    model = resolve_model("bundled:smollm2-135m-instruct")
    tokenizer = load_tokenizer(model.path)
    tokenized, _ = tokenize_rows(tokenizer, rows, max_length)
    return model, tokenizer, tokenized


def lora_config(rank: int, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def collate(batch: list[dict], pad_id: int) -> dict:
    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def real_tokens(rows: list[dict], steps: int, batch: int) -> int:
    order = [rows[(s * batch + i) % len(rows)] for s in range(steps) for i in range(batch)]
    return sum(len(r["input_ids"]) for r in order)


def lean(model_path, tokenizer, rows, steps, batch, rank, lr, dtype, device) -> float:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype),
                           lora_config(rank)).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches = [collate([rows[(s * batch + i) % len(rows)] for i in range(batch)],
                       tokenizer.pad_token_id) for s in range(steps + 1)]
    started = None
    for step, b in enumerate(batches):
        if step == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        out = model(**{k: v.to(device) for k, v in b.items()})
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return real_tokens(rows[batch % len(rows):] + rows[:batch % len(rows)], steps, batch) / (
        time.perf_counter() - started)


def trl(model_path, tokenizer, rows, steps, batch, rank, lr, dtype, device, out,
        autocast: bool = False, logits_loss: bool = False, dropout: float = 0.0,
        peft_dropout: bool = False) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            marks[state.global_step] = time.perf_counter()

    args = SFTConfig(output_dir=str(out), max_steps=steps + 1, per_device_train_batch_size=batch,
                     learning_rate=lr, lr_scheduler_type="constant", max_length=None,
                     completion_only_loss=True, loss_type="nll", report_to="none",
                     save_strategy="no", logging_steps=1000,
                     bf16=dtype == torch.bfloat16 or autocast,
                     use_cpu=device == "cpu", gradient_checkpointing=False, seed=0,
                     dataloader_num_workers=0, disable_tqdm=True, warmup_steps=0)
    from training.sft import logits_loss_trainer

    trainer_cls = logits_loss_trainer() if logits_loss else SFTTrainer
    trainer = trainer_cls(model=AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype),
                          args=args, processing_class=tokenizer,
                          peft_config=lora_config(rank, dropout),
                          train_dataset=Dataset.from_list(rows), callbacks=[Clock()])
    if peft_dropout:
        restore_peft_dropout(trainer.model)
    trainer.train()
    # The trainer shuffles; on equal-length-ish rows the mean tokens per step is the same.
    mean_tokens = sum(len(r["input_ids"]) for r in rows) / len(rows) * batch
    return mean_tokens * steps / (marks[steps + 1] - marks[1])


def restore_peft_dropout(model) -> None:
    """Put peft's own ``nn.Dropout`` back where the project's trainer swapped in
    ``training.lora_dropout.LoraDropout``."""
    from training.lora_dropout import LoraDropout

    for module in model.modules():
        for name, dropout in getattr(module, "lora_dropout", {}).items():
            if isinstance(dropout, LoraDropout):
                module.lora_dropout[name] = torch.nn.Dropout(dropout.p)


def dropout_figures(common: tuple, device: str, tmp: Path, autocast: bool, args,
                    timed: float | None = None) -> dict:
    """The project's trainer at ``--lora-dropout`` (``timed``: already timed) and at
    ``SFTRunConfig``'s default rate, with its own dropout and, with ``--peft-dropout``,
    with peft's ``nn.Dropout``; nothing where the two rates are the same (CPU only)."""
    from training.sft_config import SFTRunConfig

    default = SFTRunConfig.model_fields["lora_dropout"].default
    if device != "cpu" or default == args.lora_dropout:
        return {}
    own = "project_bf16_autocast" if autocast else "project_fp32"

    def tokens_per_second(name: str, dropout: float, peft_dropout: bool = False) -> float:
        return round(trl(*common, torch.float32, device, tmp / name, autocast=autocast,
                         logits_loss=True, dropout=dropout, peft_dropout=peft_dropout), 1)

    base = timed if timed is not None else tokens_per_second("own", args.lora_dropout)
    result = {"lora_dropout": args.lora_dropout, "default_lora_dropout": default,
              f"{own}_tokens_per_second": base}
    result[f"{own}_default_dropout_tokens_per_second"] = tokens_per_second("dropout", default)
    result[f"{own}_over_default_dropout"] = round(
        base / result[f"{own}_default_dropout_tokens_per_second"], 3)
    if args.peft_dropout:
        result[f"{own}_default_peft_dropout_tokens_per_second"] = tokens_per_second(
            "peft-dropout", default, peft_dropout=True)
        result[f"{own}_over_default_peft_dropout"] = round(
            base / result[f"{own}_default_peft_dropout_tokens_per_second"], 3)
    return result


def interleaved_dropout(model_path, tokenizer, rows, batch, rank, lr, rounds: int,
                        autocast: bool) -> dict:
    """Training steps (forward, backward, AdamW; the project's loss) of one LoRA model
    whose dropout modules are switched between steps: none, the project's at
    ``SFTRunConfig``'s default rate, peft's ``nn.Dropout`` at that rate. Every round
    takes one step of each (in rotated order), so a busy machine's load falls on the
    three alike; the figures are medians over the rounds, the ratios medians of each
    round's ratio."""
    import statistics

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from training.lora_dropout import LoraDropout
    from training.sft import completion_loss
    from training.sft_config import SFTRunConfig

    p = SFTRunConfig.model_fields["lora_dropout"].default
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path),
                           lora_config(rank, p))
    model.train()
    optimizer = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad], lr=lr)
    inputs = collate(rows[:batch], tokenizer.pad_token_id)
    dropouts = [m.lora_dropout for m in model.modules()
                if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)]
    kinds = {"none": torch.nn.Identity, "project": lambda: LoraDropout(p),
             "peft": lambda: torch.nn.Dropout(p)}

    def step(kind: str) -> float:
        for modules in dropouts:
            for name in modules:
                modules[name] = kinds[kind]()
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = completion_loss(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    step("none")  # warm-up
    seconds = {kind: [] for kind in kinds}
    for r in range(rounds):
        order = list(kinds)[r % 3:] + list(kinds)[:r % 3]
        for kind in order:
            seconds[kind].append(step(kind))
    tokens = int(inputs["attention_mask"].sum())
    return {"interleaved": {
        "rounds": rounds, "dropout": p, "tokens_per_step": tokens,
        **{f"{kind}_tokens_per_second": round(tokens / statistics.median(s), 1)
           for kind, s in seconds.items()},
        **{f"{kind}_over_none": round(statistics.median(
            a / b for a, b in zip(seconds[kind], seconds["none"], strict=True)), 3)
           for kind in ("project", "peft")}}}


def padding_shares(model_path, tokenizer, rows, batch, out) -> dict[str, float]:
    """Padding share of one epoch's batches, grouped by length vs random order."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from training.sft import padding_share

    shares = {}
    for strategy in ("group_by_length", "random"):
        args = SFTConfig(output_dir=str(out / strategy), per_device_train_batch_size=batch,
                         max_length=None, completion_only_loss=True, report_to="none",
                         use_cpu=not torch.cuda.is_available(), seed=0, disable_tqdm=True,
                         dataloader_num_workers=0, train_sampling_strategy=strategy)
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path),
                             args=args, processing_class=tokenizer,
                             peft_config=lora_config(4), train_dataset=Dataset.from_list(rows))
        shares[strategy] = padding_share(trainer)
    return shares


def cpu_model() -> str:
    """The CPU's name as the kernel reports it. Figures differ by machine: the same command
    gave 406.5 tokens/s on 2026-12-02 and 298.4 on 2026-12-06, on 2-core machines its
    output then could not tell apart."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    from generation.engine import cpu_has_native_bf16

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--view", default="rationale_free",
                        choices=["label_only", "rationale_free", "rationale_stepwise"])
    parser.add_argument("--bf16", choices=["native", "always", "never"], default="native",
                        help="when to time bf16 autocast on CPU (native: only if the CPU "
                             "computes bf16 natively)")
    parser.add_argument("--lora-dropout", type=float, default=0.0,
                        help="LoRA dropout of every timed run but the default-dropout one")
    parser.add_argument("--peft-dropout", action="store_true",
                        help="also time the project's trainer at the default dropout with "
                             "peft's nn.Dropout (the masks training.lora_dropout replaces)")
    parser.add_argument("--dropout-only", action="store_true",
                        help="time only the project's trainer at --lora-dropout and at the "
                             "default dropout (for a busy machine)")
    parser.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                        help="also time steps without dropout, with the project's and with "
                             "peft's, alternating, this many rounds (CPU; steadier on a busy "
                             "machine)")
    parser.add_argument("--lean", action="store_true", help="also time a lean PyTorch loop")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    native = device == "cuda" or cpu_has_native_bf16()
    result = {"device": device, "platform": platform.platform(), "cpu_model": cpu_model(),
              "amx": bool(torch.cpu._is_amx_tile_supported()),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "native_bf16": native, "threads": torch.get_num_threads(), "view": args.view,
              "steps_timed": args.steps, "batch": args.batch, "lora_r": args.rank}
    autocast_here = device == "cpu" and (args.bf16 == "always"
                                         or (args.bf16 == "native" and native))
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, rows = data(Path(tmp), args.examples, args.max_length, args.view)
        result["examples"] = len(rows)
        result["mean_tokens_per_example"] = sum(len(r["input_ids"]) for r in rows) / len(rows)
        common = (model.path, tokenizer, rows, args.steps, args.batch, args.rank, 2e-4)
        dropout = {"dropout": args.lora_dropout}
        if args.interleave and device == "cpu":
            result.update(interleaved_dropout(model.path, tokenizer, rows, args.batch,
                                              args.rank, 2e-4, args.interleave, autocast_here))
        if args.dropout_only:
            result.update(dropout_figures(common, device, Path(tmp), autocast_here, args))
            return write(result)
        result["padding_share"] = padding_shares(model.path, tokenizer, rows, args.batch,
                                                 Path(tmp) / "pad")
        if device == "cuda":
            result["trl_bf16_tokens_per_second"] = round(
                trl(*common, torch.bfloat16, device, Path(tmp) / "bf16", **dropout), 1)
        result["trl_fp32_tokens_per_second"] = round(
            trl(*common, torch.float32, device, Path(tmp) / "fp32", **dropout), 1)
        if device == "cpu":  # what training.sft trains with on CPU
            result["project_fp32_tokens_per_second"] = round(
                trl(*common, torch.float32, device, Path(tmp) / "logits", logits_loss=True,
                    **dropout), 1)
            result["project_over_trl_fp32"] = round(
                result["project_fp32_tokens_per_second"] / result["trl_fp32_tokens_per_second"],
                3)
        if autocast_here:
            result["trl_bf16_autocast_tokens_per_second"] = round(
                trl(*common, torch.float32, device, Path(tmp) / "bf16", autocast=True,
                    **dropout), 1)
            result["bf16_autocast_over_fp32"] = round(
                result["trl_bf16_autocast_tokens_per_second"]
                / result["trl_fp32_tokens_per_second"], 3)
            # what `precision: auto` trains with on this CPU
            result["project_bf16_autocast_tokens_per_second"] = round(
                trl(*common, torch.float32, device, Path(tmp) / "logits-bf16", autocast=True,
                    logits_loss=True, **dropout), 1)
            result["project_bf16_autocast_over_project_fp32"] = round(
                result["project_bf16_autocast_tokens_per_second"]
                / result["project_fp32_tokens_per_second"], 3)
        if device == "cpu":
            # the same trainer and precision at the product's default dropout
            autocast = "project_bf16_autocast_tokens_per_second" in result
            own = "project_bf16_autocast" if autocast else "project_fp32"
            result.update(dropout_figures(common, device, Path(tmp), autocast, args,
                                          result[f"{own}_tokens_per_second"]))
        if device == "cpu" and not autocast_here:
            result["trl_bf16_autocast_tokens_per_second"] = None
            result["bf16_note"] = ("not timed: this CPU has no native bf16 (AVX512-BF16/AMX); "
                                   "training keeps fp32 (--bf16 always times the emulation)")
        if args.lean:
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            result["lean_tokens_per_second"] = round(lean(*common, dtype, device), 1)
    write(result)


def write(result: dict) -> None:
    print(json.dumps(result, indent=2))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sft.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
