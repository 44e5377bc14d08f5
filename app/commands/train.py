"""`rationale-audit train`: LoRA SFT and few-shot runs from a verified dataset version."""

from pathlib import Path

import typer
from rich.console import Console

from app.commands.db import open_engine
from app.common import CacheDirOption, DbOption, user_errors

app = typer.Typer(help="Train from audited data: LoRA SFT (`sft`) or few-shot prompting "
                       "(`fewshot`). Every run gets a folder and a database row.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)
ConfigOption = typer.Option(None, "--config", help="YAML of the run's config fields; options "
                                                   "given on the command line override it.")


def say(message: str) -> None:
    console.print(f"[dim]•[/] {message}", highlight=False)


def print_result(result) -> None:
    m = result.metrics

    def fmt(name):
        v = m.get(name) or {}
        if v.get("value") is None:
            return "–"
        return (f"{v['value']:.3f}" + (f" [{v['low']:.3f}, {v['high']:.3f}]"
                                        if v.get("low") is not None else ""))

    console.print(f"{result.split}: n={result.n}  AUROC {fmt('auroc')}  AUPRC {fmt('auprc')}  "
                  f"Brier {fmt('brier')}  balanced accuracy {fmt('balanced_accuracy')}",
                  highlight=False)
    console.print(f"predictions: {result.predictions_path}", highlight=False)


@app.command()
@user_errors
def sft(
    config: Path | None = ConfigOption,
    dataset: str | None = typer.Option(None, help="Dataset version name (`export list`)."),
    target: str | None = typer.Option(None, help="label, rationale-free or rationale-stepwise."),
    base_model: str | None = typer.Option(None, help="Model spec (default: the bundled "
                                                     "SmolLM2), a local folder or hf:ORG/NAME."),
    train_size: int | None = typer.Option(None, help="Training patients (label mix kept; "
                                          "asking for more than there are is an error)."),
    seed: int | None = typer.Option(None),
    lora_r: int | None = typer.Option(None, help="LoRA rank (default 16)."),
    lora_alpha: int | None = typer.Option(None, help="LoRA alpha (default 2 × rank)."),
    learning_rate: float | None = typer.Option(None, help="Default 2e-4."),
    num_train_epochs: float | None = typer.Option(None, help="Default 2."),
    max_steps: int | None = typer.Option(None, help="Stop after N optimizer steps."),
    per_device_train_batch_size: int | None = typer.Option(None, help="Default 8."),
    gradient_accumulation_steps: int | None = typer.Option(None, help="Default 1."),
    max_length: int | None = typer.Option(None, help="Tokens per example (prompt truncated "
                                                     "from the left, never the answer)."),
    precision: str | None = typer.Option(None, help="auto (bf16 on GPU), fp32 or bf16."),
    runs_dir: str | None = typer.Option(None, help="Where run folders go (default ./runs)."),
    cache_dir: CacheDirOption = None,
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                  help="Score the test split when training ends."),
    force: bool = typer.Option(False, help="Re-train even if this exact run finished."),
    db: DbOption = None,
) -> None:
    """LoRA SFT on one target view of a dataset version; loss on the answer turn only.

    The same configuration always maps to the same run folder: a finished run is
    reused, an interrupted one resumes from its last checkpoint. On a cluster, run
    the printed command under `accelerate launch` or `torchrun` (see docs/training.md).

    Example:

        rationale-audit train sft --dataset study-v1 --target rationale-free --lora-r 16
        rationale-audit train sft --config sft.yaml --seed 2
    """
    from training.evaluate import EvaluateConfig, evaluate_run
    from training.sft import SFTRunConfig, train

    cfg = SFTRunConfig.load(
        config, dataset=dataset, target=target, base_model=base_model, train_size=train_size,
        seed=seed, lora_r=lora_r, lora_alpha=lora_alpha, learning_rate=learning_rate,
        num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, max_length=max_length,
        precision=precision, runs_dir=runs_dir, cache_dir=cache_dir)
    engine = open_engine(db)
    console.print(f"equivalent command: {cfg.cli()}", highlight=False)
    run = train(engine, cfg, on_stage=say, force=force)
    console.print(f"run {run.id} ({run.status}): {run.run_dir}", highlight=False)
    if evaluate:
        print_result(evaluate_run(engine, str(run.id), EvaluateConfig(), on_stage=say))


@app.command()
@user_errors
def fewshot(
    config: Path | None = ConfigOption,
    dataset: str | None = typer.Option(None, help="Dataset version name."),
    k: int | None = typer.Option(None, help="Demonstrations per prompt (default 4)."),
    with_rationales: bool | None = typer.Option(
        None, "--with-rationales/--without-rationales",
        help="Demonstrations show the audited rationale before the answer (default with)."),
    rationale_format: str | None = typer.Option(None, help="free or stepwise."),
    selection: str | None = typer.Option(None, help="random (one seeded set) or nearest "
                                                    "(most similar records per query)."),
    base_model: str | None = typer.Option(None, help="Model spec (default: bundled SmolLM2)."),
    seed: int | None = typer.Option(None),
    limit: int | None = typer.Option(None, help="Score only the first N test patients."),
    runs_dir: str | None = typer.Option(None),
    cache_dir: CacheDirOption = None,
    force: bool = typer.Option(False, help="Re-run even if this exact run finished."),
    db: DbOption = None,
) -> None:
    """Score the test split with k audited demonstrations (balanced by label).

    Example:

        rationale-audit train fewshot --dataset study-v1 --k 8 --without-rationales
        rationale-audit train fewshot --dataset study-v1 --k 4 --selection nearest
    """
    from training.fewshot import FewShotConfig, run_fewshot

    cfg = FewShotConfig.load(
        config, dataset=dataset, k=k, with_rationales=with_rationales,
        rationale_format=rationale_format, selection=selection, base_model=base_model,
        seed=seed, limit=limit, runs_dir=runs_dir, cache_dir=cache_dir)
    result = run_fewshot(open_engine(db), cfg, on_stage=say, force=force)
    print_result(result)
