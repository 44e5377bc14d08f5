"""`rationale-audit evaluate`: score a trained run; compare two runs with DeLong's test."""


from pathlib import Path

import typer
from rich.console import Console

from app.commands.db import open_engine
from app.commands.train import print_result, say
from app.common import config_options, user_errors
from app.quiet import command_log, quiet_libraries
from training.evaluate_config import EvaluateCompareConfig, EvaluateConfig

app = typer.Typer(help="Score runs by P(yes) at the label position and compare them.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("run")
@user_errors
@config_options(EvaluateConfig)
def run_(
    cfg: EvaluateConfig,
    run: str = typer.Argument(..., help="Run id, config-hash prefix or run folder."),
    api_key: str | None = None,
    verbose: bool = False,
    db: str | None = None,
) -> None:
    """Score every patient of the split and store AUROC/AUPRC/Brier with bootstrap CIs.

    Label-only runs are scored at "Final answer:" right after the prompt; rationale
    runs first write their rationale, then the label is scored at that line.
    With --server-url the run's adapter is scored on a served base model (see
    `rationale-audit evaluate serve-command`).

    Example:

        rationale-audit evaluate run 3
        rationale-audit evaluate run runs/sft-label-1a2b3c4d5e6f --engine transformers
        rationale-audit evaluate run 3 --server-url http://127.0.0.1:8000/v1
    """
    from training.evaluate import evaluate_run

    engine = open_engine(db)
    with quiet_libraries(console, command_log("runs", "evaluate"), verbose):
        print_result(evaluate_run(engine, run, cfg, on_stage=say, api_key=api_key))


@app.command("serve-command")
@user_errors
@config_options(None)
def serve_command_(
    runs_: list[str] = typer.Argument(..., metavar="RUN...",
                                      help="Runs (ids, hash prefixes or folders) to serve."),
    db: str | None = None,
) -> None:
    """Print the `vllm serve` line that serves these runs' adapters on their base model.

    Every run must share one base model; the LoRA rank is the largest of theirs,
    rounded up to one vLLM accepts. Start the server where the run folders are
    readable under the same paths, then score with `evaluate run RUN --server-url`.

    Example:

        rationale-audit evaluate serve-command 3 4 5
    """
    import shlex

    from sqlmodel import Session

    from training import runs as run_store
    from training.served import serve_command

    with Session(open_engine(db)) as session:
        found = [run_store.find_run(session, ref) for ref in runs_]
    for run in found:
        if run.kind != "sft":
            raise run_store.RunError(f"run {run.id} is a {run.kind} run; only SFT runs have "
                                     "an adapter to serve")
    bases = sorted({r.base_model for r in found})
    if len(bases) != 1:
        raise run_store.RunError(f"the runs have {len(bases)} base models ({', '.join(bases)}); "
                                 "one server serves adapters of one base model")
    from generation.models import resolve_model

    model = resolve_model(bases[0], cache_dir=found[0].config.get("cache_dir"))
    rank = max(int(r.config.get("lora_r", 16)) for r in found)
    argv = serve_command(model.path, [Path(r.run_dir) / "adapter" for r in found], rank)
    console.print(shlex.join(argv), highlight=False, soft_wrap=True)


@app.command()
@user_errors
@config_options(EvaluateCompareConfig)
def compare(
    cfg: EvaluateCompareConfig,
    run_a: str = typer.Argument(..., help="First run (id, hash prefix or folder)."),
    run_b: str = typer.Argument(..., help="Second run."),
    db: str | None = None,
) -> None:
    """Paired DeLong test of two runs' AUROCs on the same patients.

    Example:

        rationale-audit evaluate compare 3 4
    """
    from training.evaluate import compare as compare_runs

    result = compare_runs(open_engine(db), run_a, run_b, cfg.split)
    console.print(
        f"run {result['run_a']['id']} ({result['run_a']['target']}) AUROC {result['auc1']:.3f} "
        f"vs run {result['run_b']['id']} ({result['run_b']['target']}) AUROC "
        f"{result['auc2']:.3f} on {result['n']} patients", highlight=False)
    console.print(f"difference {result['difference']:+.3f} [{result['ci_low']:+.3f}, "
                  f"{result['ci_high']:+.3f}], z = {result['z']:.3f}, DeLong p = "
                  f"{result['p_value']:.4g}", highlight=False)
