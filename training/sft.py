"""LoRA supervised fine-tuning on one view of a verified dataset version.

``train`` resolves the base model, reads the target's view of the version (checked
against its manifest), tokenizes it with the prompt masked (loss on the assistant
turn only), and trains a peft LoRA adapter with TRL's ``SFTTrainer``. The run
folder ``<runs_dir>/sft-<target>-<hash12>/`` holds:

- ``config.yaml`` and ``provenance.json`` — the resolved config, library versions;
- ``dataset.json`` — the version's name and hash, the view, example and loss-token counts;
- ``metrics.jsonl`` — one line per logged step (loss, learning rate, tokens/s);
- ``progress.json`` — step of steps, tokens/s and the time left, rewritten as it trains
  (the Runs screen and the CLI's progress bar read it);
- ``checkpoints/checkpoint-*`` — resumable state (optimizer, scheduler, RNG);
- ``adapter/`` — the final LoRA adapter; ``train_summary.json``; ``DONE`` last.

The same configuration maps to the same folder and ``training_run`` row: a
finished run is returned as is, an interrupted one resumes from its last checkpoint.

TRL's trainer was chosen over a hand-written loop by measurement
(``benchmarks/sft.py``, same tokens, LoRA, batch and optimizer, 2-core CPU, fp32):
TRL 190.6 tokens/s, a lean PyTorch loop 160.8 tokens/s. The loop bought no speed,
and TRL brings checkpoint/resume, accumulation and mixed precision for free.
"""

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.export import get_version
from annotation_db.models import RunStatus, TrainingRun
from annotation_db.provenance import echo_config
from generation.models import load_tokenizer
from training import runs
from training.data import (
    TARGETS,
    DataError,
    loss_token_tallies,
    tokenize_rows,
    training_rows,
)
from training.decision_tokens import (
    DecisionRule,
    learn_decision_ngrams,
    reads_decisions,
    restrict_to_decisions,
)
from training.diagnostics import diagnostics_callbacks, label_only_answer_share
from training.loss import LossWeighting, answer_counts, weighted_loss
from training.precision import resolve_precision
from training.sft_config import SFTRunConfig


def process_group() -> tuple[int, int]:
    """(rank, number of processes) under ``accelerate launch`` or ``torchrun``, which set
    ``RANK`` and ``WORLD_SIZE``; (0, 1) in a plain process."""
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (a process killed mid-save leaves one without state)."""
    checkpoints = sorted((p for p in folder.glob("checkpoint-*")
                          if p.name.split("-")[-1].isdigit()
                          and (p / "trainer_state.json").is_file()),
                         key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def _clear_outputs(run_dir: Path) -> None:
    """Remove what a previous attempt left, so ``force`` trains from step 0."""
    import shutil

    for name in ("checkpoints", "adapter", "eval"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in ("metrics.jsonl", "progress.json", "train_summary.json", "error.log", runs.DONE):
        (run_dir / name).unlink(missing_ok=True)


def _checked_counts(weighting: LossWeighting, tokenized: list[dict], target: str) -> dict:
    """:func:`answer_counts`, refusing rows whose answer token was not found where the
    weighting needs it (a tokenizer that splits ``Final answer:`` differently in context
    would otherwise fall back to weight 1 without a word)."""
    counts = answer_counts(weighting, tokenized)
    expected = {"answer-share": 0, "align": 0,
                "multitask": len(tokenized) // 2}.get(weighting.kind)
    if expected is not None and counts["rows_without_answer"] != expected:
        raise DataError(f"target {target!r}: the answer token after 'Final answer:' was not "
                        f"found in {counts['rows_without_answer'] - expected} row(s) that "
                        "have one; this tokenizer encodes the answer line differently in "
                        "context")
    return counts


def _validation_rows(version, config: SFTRunConfig) -> list[dict] | None:
    """The validation prompts of the run's target (None when the version has none)."""
    from training.data import eval_rows

    try:
        rows = eval_rows(version, config.target, "validation")
    except DataError:
        return None
    return rows if len({int(r["label"]) for r in rows}) == 2 else None


def _metrics_callback(path: Path, tokens_per_step: float, stats: dict | None = None,
                      on_progress: Callable[[dict], None] | None = None):
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        """Append each logged step to ``metrics.jsonl`` (survives a crash mid-run)."""

        def __init__(self):
            self.started = time.perf_counter()
            self.first_step: int | None = None
            self.first_seen: tuple[int, float] | None = None  # (step, time) before step 1
            self.written = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_seen = (state.global_step, time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            """``progress.json`` beside the metrics: step of steps, tokens/s and the time
            left, as the Runs screen and the CLI's bar show them (at most once a second)."""
            now = time.perf_counter()
            if self.first_seen is None:  # no on_train_begin seen (a resumed trainer)
                self.first_seen = (state.global_step - 1, self.started)
            last = state.global_step >= state.max_steps
            if now - self.written < 1.0 and not last:
                return
            self.written = now
            done, since = state.global_step - self.first_seen[0], now - self.first_seen[1]
            per_step = since / done if done > 0 else None
            progress = {
                "step": state.global_step, "max_steps": state.max_steps,
                "epoch": round(state.epoch or 0, 3),
                "tokens_per_second": round(done * tokens_per_step / since, 1)
                if since > 0 else None,
                "eta_seconds": round(per_step * (state.max_steps - state.global_step))
                if per_step else None}
            (path.parent / "progress.json").write_text(json.dumps(progress) + "\n")
            if on_progress is not None:
                on_progress(progress)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            if self.first_step is None:
                self.first_step = max(state.global_step - args.logging_steps, 0)
            elapsed = time.perf_counter() - self.started
            steps = state.global_step - self.first_step
            row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                   **{k: v for k, v in logs.items() if isinstance(v, int | float)},
                   **_loss_split(stats),
                   "tokens_per_second": round(steps * tokens_per_step / elapsed, 1)
                   if elapsed > 0 else None}
            with path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")

    return JsonlMetrics()


def train(engine: Engine, config: SFTRunConfig, *, callbacks: list | None = None,
          on_stage: Callable[[str], None] | None = None, force: bool = False,
          on_run: Callable[[TrainingRun], None] | None = None,
          on_progress: Callable[[dict], None] | None = None) -> TrainingRun | None:
    """Train (or resume, or reuse) the run ``config`` describes; return its row.
    ``on_run(row)`` hears of the row as soon as it is running (a job links it then, so a
    process killed mid-run leaves a run the job can mark failed); ``on_progress(p)`` gets
    what ``progress.json`` says each time it is rewritten (the CLI's progress bar).

    Under ``accelerate launch --num_processes N`` (or ``torchrun``) every process trains
    its shard of each batch, data parallel; rank 0 alone keeps the books (the run's row,
    folder files, adapter) and returns the row. The other ranks only read the dataset
    version, never write, and return None.
    """
    say = on_stage or (lambda _: None)
    rank, processes = process_group()
    with Session(engine) as session:
        version = get_version(session, config.dataset)
        tokenizer = None
        if TARGETS[config.target].needs_tokenizer:
            from generation.models import resolve_model

            tokenizer = load_tokenizer(resolve_model(config.base_model,
                                                     cache_dir=config.cache_dir).path)
        rows = training_rows(version, config.target, config.train_size, config.seed,
                             config.paired_targets, tokenizer, config.filler_length)
        if not rows:
            raise DataError(f"dataset version {version.name!r} has no training rows for "
                             f"target {config.target!r}")
        config_hash = config.identity(version.content_hash, processes)
        run_dir = runs.run_folder(config.runs_dir, "sft", config.target, config_hash)
        if rank != 0:  # rank 0 decides from the database; DONE is what it wrote last
            if not (run_dir / runs.DONE).exists() or force:
                _train(None, config, version, rows, run_dir, callbacks or [], say,
                       rank=rank, processes=processes)
            return None
        existing = runs.get_run(session, config_hash)
        if existing is not None and existing.status == RunStatus.finished and not force:
            say(f"reusing finished run {existing.id} in {existing.run_dir}")
            return existing
        if force:
            say(f"--force: discarding earlier checkpoints and results in {run_dir}")
            _clear_outputs(run_dir)
        run = runs.begin(session, kind="sft", target=config.target, base_model=config.base_model,
                         config=config.model_dump(mode="json"), config_hash=config_hash,
                         run_dir=run_dir, dataset_version_id=version.id)
        if force:  # once the row says running: an archive saved meanwhile skips it
            runs.forget_evaluations(session, config_hash)
        if on_run is not None:
            on_run(run)
        try:
            _train(run, config, version, rows, run_dir, callbacks or [], say,
                   processes=processes, on_progress=on_progress)
        except BaseException as exc:
            runs.fail(session, run, exc)
            raise
        runs.finish(session, run)
        return run


def _train(run: TrainingRun | None, config: SFTRunConfig, version, rows: list[dict],
           run_dir: Path, callbacks: list, say: Callable[[str], None], *, rank: int = 0,
           processes: int = 1, on_progress: Callable[[dict], None] | None = None) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed

    from generation.models import resolve_model

    writer = rank == 0  # the other data-parallel ranks write nothing
    run_dir.mkdir(parents=True, exist_ok=True)
    if writer:  # a resumed run keeps the records of the sessions that began it
        echo_config(config, run_dir, "train sft",
                    resumed=latest_checkpoint(run_dir / "checkpoints") is not None)
    say("resolving the base model")
    model = resolve_model(config.base_model, cache_dir=config.cache_dir)
    tokenizer = load_tokenizer(model.path)
    tokenized, weighting, tallies = _loss_rows(tokenizer, config, version, rows)
    if writer:
        _write_dataset_record(run_dir, run, config, version, weighting, rows, tallies, model)
    precision = resolve_precision(config.precision)
    bf16 = precision != "fp32"
    set_seed(config.seed)
    # On CPU, bf16 runs as autocast over fp32 weights; on a GPU the weights are bf16.
    base = AutoModelForCausalLM.from_pretrained(
        model.path, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    args = _sft_args(config, run_dir, bf16)
    peft_config = _lora_config(config)
    effective_batch = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                       * processes)
    tokens_per_step = tallies["tokens"] / max(len(tokenized), 1) * effective_batch
    stats: dict = {}
    metrics_path = run_dir / "metrics.jsonl"
    books = []  # rank 0's: metrics.jsonl and the diagnostics (its shard's loss split)
    if writer:
        books = [_metrics_callback(metrics_path, tokens_per_step, stats, on_progress),
                 *diagnostics_callbacks(metrics_path, tokenizer, weighting, stats, tokenized,
                                        config, validation=_validation_rows(version, config)
                                        if config.validate_each_epoch else None)]
    trainer = logits_loss_trainer(weighting, stats)(
        model=base, args=args, processing_class=tokenizer, peft_config=peft_config,
        train_dataset=Dataset.from_list(tokenized), callbacks=[*books, *callbacks],
    )
    padding = padding_share(trainer)
    result, seconds, resume = _run_trainer(trainer, run_dir, say, len(tokenized), processes)
    if not writer:
        return
    trainer.model.save_pretrained(str(run_dir / "adapter"))
    _write_train_summary(run_dir, trainer, result, seconds, resume, config, {
        "processes": processes, "effective_batch": effective_batch, "bf16": bf16,
        "precision": precision, "padding_share": padding}, tokens_per_step)


def _write_train_summary(run_dir: Path, trainer, result, seconds: float, resume: Path | None,
                         config: SFTRunConfig, setup: dict, tokens_per_step: float) -> None:
    """``train_summary.json``: steps, loss, time and speed of this session of training
    (``setup``: processes, effective batch, precision, padding share)."""
    import torch

    steps_done = trainer.state.global_step - (int(resume.name.split("-")[-1]) if resume else 0)
    (run_dir / "train_summary.json").write_text(json.dumps({
        "processes": setup["processes"], "effective_batch": setup["effective_batch"],
        "global_step": trainer.state.global_step, "train_loss": result.training_loss,
        "seconds": round(seconds, 2), "resumed_from": resume.name if resume else None,
        "tokens_per_second": round(steps_done * tokens_per_step / seconds, 1) if seconds else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "bf16": setup["bf16"],
        "precision": setup["precision"], "padding_share": setup["padding_share"],
        "train_sampling": "group_by_length" if config.group_by_length else "random",
    }, indent=2) + "\n")


def _loss_weighting(tokenizer, config: SFTRunConfig, version, rows: list[dict]
                    ) -> LossWeighting:
    """The target's loss weighting; ``answer-share`` without a share set measures the
    label-only answer tokens' share of these rows."""
    spec = TARGETS[config.target]
    return LossWeighting.for_target(
        tokenizer, spec.weighting,
        alpha=config.align_alpha if spec.weighting == "align" else config.multitask_alpha,
        answer_share=config.answer_loss_share if spec.weighting != "answer-share"
        or config.answer_loss_share is not None else label_only_answer_share(
            tokenizer, version, config, rows))


def _loss_rows(tokenizer, config: SFTRunConfig, version, rows: list[dict]
               ) -> tuple[list[dict], LossWeighting, dict]:
    """The run's tokenized rows, its loss weighting and their tallies (tokens, answer
    accounting).

    With ``decision_tokens: branch`` on a target that reads it (``rationale-align``
    always reads them), the decision n-grams
    are learned from these training rows' completions (:mod:`training.decision_tokens`;
    nothing else is read) and join the answer in the weighting; ``rationale-answer-only``
    then puts its loss on the decision tokens and the answer line."""
    spec = TARGETS[config.target]
    branch = reads_decisions(config.target, config.decision_tokens)
    tokenized, summary = tokenize_rows(tokenizer, rows, config.max_length,
                                       "completion" if branch else spec.loss_on)
    weighting = _loss_weighting(tokenizer, config, version, rows)
    if branch:
        rule = DecisionRule()
        ngrams, found = learn_decision_ngrams(tokenized, [int(r["label"]) for r in rows],
                                              weighting.prefix_ids, rule, tokenizer.decode)
        if not ngrams:  # else the target would quietly weight the answer token alone
            raise DataError(
                f"target {config.target!r} reads decision tokens, but the {len(rows)} "
                f"training rows' rationales have no label-pure token n-gram (n in "
                f"{', '.join(map(str, rule.lengths))}; in at least "
                f"{rule.min_support:.0%} of the rows and {rule.min_rows} rows, "
                f"{rule.min_purity:.0%} of them one label; rows of one label, or too few "
                "rows, decide nothing); train on more "
                "patients, or use a target that does not read them")
        weighting = replace(weighting, decision_ngrams=ngrams, decision_rule=rule)
        summary["decision_ngrams"] = found
        if spec.loss_on == "answer":
            tokenized = restrict_to_decisions(tokenized, ngrams, weighting.prefix_ids)
            weighting = replace(weighting, decisions_labelled=True)
            summary.update(loss_token_tallies(tokenized))
    return tokenized, weighting, {**summary, **_checked_counts(weighting, tokenized,
                                                                config.target)}


def _write_dataset_record(run_dir: Path, run: TrainingRun, config: SFTRunConfig, version,
                          weighting: LossWeighting, rows: list[dict], tallies: dict,
                          model) -> None:
    """``dataset.json``: what the run trains on (version, view, rows, token tallies,
    loss weighting, base model) — the run's data provenance."""
    spec = TARGETS[config.target]
    (run_dir / "dataset.json").write_text(json.dumps({
        "version": version.name, "content_sha256": version.content_hash,
        "view": spec.view, "derived": spec.derived, "split": "train",
        "loss_on": spec.loss_on, "loss_weighting": weighting.describe(),
        "example_ids": [row["id"] for row in rows], **tallies,
        "base_model": {"spec": config.base_model, "path": model.path,
                       "checksum": model.checksum},
        "run_id": run.id, "config_hash": run.config_hash, "command": config.cli(),
    }, indent=2) + "\n")


def _sft_args(config: SFTRunConfig, run_dir: Path, bf16: bool):
    """TRL's trainer settings for the run (checkpoints under ``run_dir``)."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        seed=config.seed, data_seed=config.seed,
        learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_length=None,  # rows arrive tokenized and truncated (prompt side only)
        packing=False, completion_only_loss=True, loss_type="nll",
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, report_to="none",
        bf16=bf16, use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=config.gradient_checkpointing,
        dataloader_num_workers=0, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
    )


def _lora_config(config: SFTRunConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type="CAUSAL_LM")


def _run_trainer(trainer, run_dir: Path, say: Callable[[str], None], examples: int,
                 processes: int) -> tuple:
    """Train from the latest checkpoint, if any, to the end: (result, seconds, the
    checkpoint resumed from). A run stopped short raises :class:`InterruptedError`."""
    if processes > 1:  # rank 0 has cleared a --force run's outputs before any rank looks
        trainer.accelerator.wait_for_everyone()
    resume = latest_checkpoint(run_dir / "checkpoints")
    say(f"training {examples} examples"
        + (f", resuming from {resume.name}" if resume else ""))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    if trainer.state.global_step < trainer.state.max_steps:
        raise InterruptedError(f"training stopped at step {trainer.state.global_step} of "
                               f"{trainer.state.max_steps}; run the same command to resume")
    return result, seconds, resume


def _loss_split(stats: dict | None) -> dict:
    """The answer tokens' mean loss, the other tokens', and the answer tokens' share of
    the loss, over the steps since the last log (then reset)."""
    if not stats:
        return {}
    totals = {k: float(v) for k, v in stats.items()}  # one device sync per log, not per step
    stats.clear()
    if not totals.get("all_weighted"):
        return {}
    out = {"answer_loss": totals["answer_nll"] / totals["answer_n"] if totals["answer_n"]
           else None,
           "rest_loss": totals["rest_nll"] / totals["rest_n"] if totals["rest_n"] else None,
           "answer_loss_share": totals["answer_weighted"] / totals["all_weighted"]}
    return {k: round(v, 6) for k, v in out.items() if v is not None}


def logits_loss_trainer(weighting: LossWeighting | None = None, stats: dict | None = None):
    """TRL's ``SFTTrainer`` with the LM head applied only where the loss is.

    TRL 1.16 computes the loss with a fused, chunked LM-head kernel that also tracks
    entropy and top-1 statistics; without Triton (on CPU) it runs as Python tiles over
    the vocabulary. Prompt tokens carry label -100, so their logits are never used:
    this trainer asks the model for logits only at the positions that predict a
    completion token (``logits_to_keep``), which skips the 49,152-wide LM head and its
    softmax for the prompt. One run of ``benchmarks/sft.py`` (bundled model, batch 4 ×
    380 tokens, fp32, 2 cores): 149.5 tokens/s against TRL's 89.7. The loss is the same
    mean negative log-likelihood of the completion tokens; ``tests/training/test_sft.py``
    checks it against TRL's, and its gradients against the full-logits ones. The same
    trainer runs on a GPU: the mechanism targets' weighted losses and the per-step
    answer/rest loss split (``stats``) need the per-token losses TRL's kernel hides.

    Its LoRA dropout is :class:`training.lora_dropout.LoraDropout`: the same dropout as
    peft's, with the mask drawn as gaps between drops (on CPU peft's Bernoulli masks made
    a step at ``lora_dropout`` 0.05 about 3× slower than at 0).
    """
    from trl import SFTTrainer

    from training.lora_dropout import use_lora_dropout

    class LogitsLossTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)  # wraps the model with the peft config
            use_lora_dropout(self.model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = completion_loss(model, inputs, num_items_in_batch, weighting,
                                            stats if model.training else None)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # as Trainer.compute_loss does: the loss is this shard's sum over the
                # tokens of *all* shards, and data-parallel training averages gradients
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return LogitsLossTrainer


def completion_loss(model, inputs: dict, num_items_in_batch=None,
                    weighting: LossWeighting | None = None, stats: dict | None = None):
    """Mean (or, given ``num_items_in_batch``, summed then divided) token NLL of the
    labelled positions, with logits computed only at the positions that predict one.

    With a ``weighting`` (see :class:`training.loss.LossWeighting`) the tokens
    are weighted as it says; with ``stats``, the answer and other tokens' losses are
    added to it for the next logged step."""
    import torch
    from transformers.loss.loss_utils import fixed_cross_entropy

    if (weighting is not None and weighting.kind != "none") or stats is not None:
        loss, answer_part, (kept, nll, answer, effective), outputs = weighted_loss(
            model, inputs, num_items_in_batch, weighting)
        if stats is not None:
            with torch.no_grad():
                on = kept != -100
                for key, value in (("answer_nll", nll[answer].sum()), ("answer_n", answer.sum()),
                                   ("rest_nll", nll[on & ~answer].sum()),
                                   ("rest_n", (on & ~answer).sum()),
                                   ("answer_weighted", answer_part), ("all_weighted", loss)):
                    stats[key] = stats.get(key, 0.0) + value.detach()
        return loss, outputs
    labels = inputs["labels"]
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().flatten()
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.float()
    kept = targets[:, keep].to(logits.device)
    loss = fixed_cross_entropy(logits.reshape(-1, logits.shape[-1]), kept.reshape(-1),
                               num_items_in_batch, -100)
    return loss, outputs


def padding_share(trainer) -> float:
    """The share of padding among the tokens of one epoch's batches, as the trainer
    builds them (its sampler and collator; no model call)."""
    pad = total = 0
    for batch in trainer.get_train_dataloader():
        mask = batch["attention_mask"]
        pad += int((mask == 0).sum())
        total += int(mask.numel())
    return round(pad / total, 4) if total else 0.0
