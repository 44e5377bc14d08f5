"""`rationale-audit generate`: write grounded rationales with vLLM, a server or transformers;
`rationale-audit generate import FILE`: bring in rationales written elsewhere."""

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.commands.db import open_engine
from app.common import config_options, user_errors
from app.quiet import command_log, quiet_libraries
from generation.import_rationales import import_rationales
from generation.import_rationales_config import ImportConfig
from generation.rationales import generate_rationales
from generation.rationales_config import GenerateConfig

console = Console(soft_wrap=True)
app = typer.Typer(no_args_is_help=False, rich_markup_mode="rich")


@app.callback(invoke_without_command=True)
@user_errors
@config_options(GenerateConfig)
def generate(cfg: GenerateConfig, ctx: typer.Context, retry_failed: bool = False,
             api_key: str | None = None, verbose: bool = False,
             db: str | None = None) -> None:
    """Generate grounded rationales that cite each patient's evidence ids.

    Re-running the same command resumes the same run: finished patients are skipped,
    and so are failed ones unless --retry-failed is given.

    Example:

        rationale-audit generate --split train --n 500 --mode label-conditioned --format free
        rationale-audit generate --n 64 --server-url http://127.0.0.1:8000/v1 --model smol
        rationale-audit generate --split train --n 500 --retry-failed
        rationale-audit generate import outputs.jsonl --model org/model-7b

    Rationales written by another system: `rationale-audit generate import --help`.
    """
    if ctx.invoked_subcommand is not None:
        return
    engine = open_engine(db)
    progress = Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
                        transient=True)
    totals = {"tokens": 0, "seconds": 0.0}
    with quiet_libraries(console, command_log("runs", "generate"), verbose), progress:
        task = progress.add_task("generate", total=None, rate="")

        def advance(patients: int, tokens: int, seconds: float) -> None:
            totals["tokens"] += tokens
            totals["seconds"] += seconds
            rate = totals["tokens"] / totals["seconds"] if totals["seconds"] else 0
            progress.update(task, advance=patients, rate=f"{rate:.0f} tok/s")

        summary = generate_rationales(engine, cfg, on_progress=advance,
                                      retry_failed=retry_failed, api_key=api_key)
    if summary.bounds is not None:
        b = summary.bounds
        shape = (f"rationale ≤ {b.rationale_chars} characters" if b.format == "free" else
                 f"≤ {b.steps} steps of ≤ {b.step_chars} characters")
        console.print(f"schema sized to {b.max_tokens} tokens: {shape}, ≤ {b.evidence} evidence "
                      f"ids ({b.chars_per_token:.2f} characters per token, counted by "
                      f"{b.tokenizer})", highlight=False)
        if b.tokenizer == "estimate":
            console.print("the server offers neither its tokenizer nor /tokenize: the token "
                          "budget is an estimate", style="yellow")
    console.print(
        f"run {summary.run_id}: {summary.generated} generated ({summary.failed} failed, "
        f"{summary.retries} retries), {summary.skipped} already done"
        + (f", {summary.retried} failed ones retried" if summary.retried else "")
        + (f", {summary.gold} gold copies" if summary.gold else "")
        + (f" · {summary.tokens} tokens in {summary.seconds:.1f} s "
           f"({summary.tokens_per_second:.0f} tok/s)" if summary.tokens else ""),
        highlight=False,
    )


@app.command("import")
@user_errors
@config_options(ImportConfig)
def import_file(
    cfg: ImportConfig,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of rationales, "
                                "one per line (or an OpenAI Batch API output file)"),
    db: str | None = None,
) -> None:
    """Import rationales another system wrote, checked like generated ones.

    Each line: the output schema's JSON with the patient's id, e.g.
    {"patient_id": "P0000012", "prediction": "yes", "evidence": ["E3"], "rationale": "…"};
    or, with --file-format openai-batch, a Batch API output line whose custom_id is the
    patient id and whose message content is that JSON. A bad line (not JSON, wrong schema,
    unknown patient, a patient twice, an id the patient does not have) refuses the whole
    file, each bad line named, nothing written; --skip-invalid imports the rest and writes
    the refused lines to FILE.refused.jsonl. The run records the model name you give and
    the file's SHA-256; importing the same file again adds nothing.

    Example:

        rationale-audit generate import outputs.jsonl --model org/model-7b --format free
        rationale-audit generate import batch_output.jsonl --file-format openai-batch --model gpt
    """
    summary = import_rationales(open_engine(db), file, cfg)
    if summary.already:
        console.print(f"run {summary.run_id}: this file was imported before "
                      f"({summary.already} rationales); nothing added", highlight=False)
        return
    console.print(f"run {summary.run_id}: {summary.imported} rationales imported from "
                  f"{file.name} (sha256 {summary.file_sha256[:12]}), model {cfg.model}"
                  + (f"; {len(summary.refused)} line(s) refused, listed in "
                     f"{Path(summary.refused_file).name}" if summary.refused else ""),
                  highlight=False)
