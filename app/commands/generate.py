"""`rationale-audit generate`: write grounded rationales with vLLM, a server or transformers."""

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.commands.db import open_engine
from app.common import DbOption, user_errors
from generation.rationales import GenerateConfig, generate_rationales

console = Console(soft_wrap=True)


@user_errors
def generate(
    split: str | None = typer.Option(None, help="train (default), validation, test or all."),
    n: int | None = typer.Option(None, "--n", help="First n patients of the split (default 500)."),
    mode: str | None = typer.Option(None, help="label-conditioned (default) or label-blind."),
    format: str | None = typer.Option(None, "--format", help="free (default) or stepwise."),
    model: str | None = typer.Option(None, help="Model spec (default the bundled SmolLM2)."),
    cohort: str | None = typer.Option(None, help="Cohort name (default the newest)."),
    server_url: str | None = typer.Option(
        None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM)."),
    backend: str | None = typer.Option(
        None, help="vllm (default), transformers, or template (the deterministic "
        "label-conditioned template teacher; no model)."),
    seed: int | None = typer.Option(None, help="Sampling seed (default 0)."),
    batch_size: int | None = typer.Option(None, help="Patients per batch (default 16)."),
    gold_share: float | None = typer.Option(
        None, help="Share of rationales that get flawed gold copies (default 0)."),
    config: Path | None = typer.Option(None, "--config", help="YAML of GenerateConfig fields."),
    db: DbOption = None,
) -> None:
    """Generate grounded rationales that cite each patient's evidence ids.

    Re-running the same command resumes the same run: finished patients are skipped.

    Example:

        rationale-audit generate --split train --n 500 --mode label-conditioned --format free
        rationale-audit generate --n 64 --server-url http://127.0.0.1:8000/v1
    """
    cfg = GenerateConfig.load(
        config, split=split, n=n, mode=mode, format=format, model=model, cohort=cohort,
        server_url=server_url, backend=backend, seed=seed, batch_size=batch_size,
        gold_share=gold_share,
    )
    engine = open_engine(db)
    progress = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
                        transient=True)
    totals = {"tokens": 0, "seconds": 0.0}
    with progress:
        task = progress.add_task("generate", total=None, rate="")

        def advance(patients: int, tokens: int, seconds: float) -> None:
            totals["tokens"] += tokens
            totals["seconds"] += seconds
            rate = totals["tokens"] / totals["seconds"] if totals["seconds"] else 0
            progress.update(task, advance=patients, rate=f"{rate:.0f} tok/s")

        summary = generate_rationales(engine, cfg, on_progress=advance)
    console.print(
        f"run {summary.run_id}: {summary.generated} generated ({summary.failed} failed), "
        f"{summary.skipped} already done"
        + (f", {summary.gold} gold copies" if summary.gold else "")
        + (f" · {summary.tokens} tokens in {summary.seconds:.1f} s "
           f"({summary.tokens_per_second:.0f} tok/s)" if summary.tokens else ""),
        highlight=False,
    )
