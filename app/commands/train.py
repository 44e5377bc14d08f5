"""`rationale-audit train`: LoRA SFT and few-shot runs from a verified dataset version."""


from contextlib import contextmanager

import typer
from rich.console import Console

from app.commands.db import open_engine
from app.common import config_options, user_errors
from app.quiet import command_log, quiet_libraries
from training.fewshot_config import FewShotConfig
from training.sft_config import SFTRunConfig

app = typer.Typer(help="Train from audited data: LoRA SFT (`sft`) or few-shot prompting "
                       "(`fewshot`). Every run gets a folder and a database row.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


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


@contextmanager
def training_bar():
    """A rich progress bar fed by the trainer's progress (step of steps, tokens/s, the
    time left); it appears with the first step and stays when training ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[speed]}"), TextColumn("{task.fields[left]}"),
                  console=console) as bar:
        task = None

        def show(p: dict) -> None:
            nonlocal task
            speed = f"{p['tokens_per_second']:.0f} tok/s" if p.get("tokens_per_second") else ""
            eta = p.get("eta_seconds")
            left = "" if eta is None else f"about {eta // 60} min {eta % 60} s left"
            if task is None:
                task = bar.add_task("train", total=p["max_steps"], speed=speed, left=left)
            bar.update(task, completed=p["step"], total=p["max_steps"], speed=speed,
                       left=left)

        yield show


@app.command()
@user_errors
@config_options(SFTRunConfig)
def sft(
    cfg: SFTRunConfig,
    evaluate: bool = True,
    force: bool = False,
    verbose: bool = False,
    db: str | None = None,
) -> None:
    """LoRA SFT on one target view of a dataset version; loss on the answer turn only.

    The same configuration always maps to the same run folder: a finished run is
    reused, an interrupted one resumes from its last checkpoint. Data parallel: run it
    under `accelerate launch --num_processes N` (or `torchrun`); rank 0 alone writes the
    run's row and folder (see docs/scale.md).

    Example:

        rationale-audit train sft --dataset study-v1 --target rationale-free --lora-r 16
        rationale-audit train sft --config sft.yaml --seed 2
    """
    from training.evaluate import evaluate_run
    from training.evaluate_config import EvaluateConfig
    from training.sft import process_group, train

    engine = open_engine(db)
    rank, processes = process_group()
    if rank != 0:  # another data-parallel process: rank 0 prints and keeps the books
        train(engine, cfg, force=force)
        return
    console.print(f"equivalent command: {cfg.cli()}", highlight=False)
    with quiet_libraries(console, command_log(cfg.runs_dir, "train-sft"), verbose), \
            training_bar() as show:
        run = train(engine, cfg, on_stage=say, force=force, on_progress=show)
        console.print(f"run {run.id} ({run.status}): {run.run_dir}", highlight=False)
        if evaluate and processes > 1:
            console.print(f"trained by {processes} processes; score it in one: "
                          f"rationale-audit evaluate run {run.id}", highlight=False)
        elif evaluate:
            print_result(evaluate_run(engine, str(run.id), EvaluateConfig(), on_stage=say))


@app.command()
@user_errors
@config_options(FewShotConfig)
def fewshot(
    cfg: FewShotConfig,
    force: bool = False,
    verbose: bool = False,
    db: str | None = None,
) -> None:
    """Score the test split with k audited demonstrations (balanced by label).

    Example:

        rationale-audit train fewshot --dataset study-v1 --k 8 --without-rationales
        rationale-audit train fewshot --dataset study-v1 --k 4 --selection nearest
    """
    from training.fewshot import run_fewshot

    engine = open_engine(db)
    with quiet_libraries(console, command_log(cfg.runs_dir, "train-fewshot"), verbose):
        print_result(run_fewshot(engine, cfg, on_stage=say, force=force))
