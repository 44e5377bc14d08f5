"""`rationale-audit evaluate`: score a trained run; compare two runs with DeLong's test."""


import typer
from rich.console import Console

from app.commands.db import open_engine
from app.commands.train import print_result, say
from app.common import DbOption, VerboseOption, config_options, user_errors
from app.quiet import command_log, quiet_libraries
from training.evaluate import EvaluateConfig

app = typer.Typer(help="Score runs by P(yes) at the label position and compare them.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("run")
@user_errors
@config_options(EvaluateConfig)
def run_(
    cfg: EvaluateConfig,
    run: str = typer.Argument(..., help="Run id, config-hash prefix or run folder."),
    verbose: VerboseOption = False,
    db: DbOption = None,
) -> None:
    """Score every patient of the split and store AUROC/AUPRC/Brier with bootstrap CIs.

    Label-only runs are scored at "Final answer:" right after the prompt; rationale
    runs first write their rationale, then the label is scored at that line.

    Example:

        rationale-audit evaluate run 3
        rationale-audit evaluate run runs/sft-label-1a2b3c4d5e6f --engine transformers
    """
    from training.evaluate import evaluate_run

    engine = open_engine(db)
    with quiet_libraries(console, command_log("runs", "evaluate"), verbose):
        print_result(evaluate_run(engine, run, cfg, on_stage=say))


@app.command()
@user_errors
def compare(
    run_a: str = typer.Argument(..., help="First run (id, hash prefix or folder)."),
    run_b: str = typer.Argument(..., help="Second run."),
    split: str = typer.Option("test", help="The split both were scored on."),
    db: DbOption = None,
) -> None:
    """Paired DeLong test of two runs' AUROCs on the same patients.

    Example:

        rationale-audit evaluate compare 3 4
    """
    from training.evaluate import compare as compare_runs

    result = compare_runs(open_engine(db), run_a, run_b, split)
    console.print(
        f"run {result['run_a']['id']} ({result['run_a']['target']}) AUROC {result['auc1']:.3f} "
        f"vs run {result['run_b']['id']} ({result['run_b']['target']}) AUROC "
        f"{result['auc2']:.3f} on {result['n']} patients", highlight=False)
    console.print(f"difference {result['difference']:+.3f} [{result['ci_low']:+.3f}, "
                  f"{result['ci_high']:+.3f}], z = {result['z']:.3f}, DeLong p = "
                  f"{result['p_value']:.4g}", highlight=False)
