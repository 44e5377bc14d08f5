"""`rationale-audit`: build, audit and train on synthetic clinical rationales.

Each pipeline step is a subcommand group; `rationale-audit STEP --help` explains it.
Expected failures (a bad model spec, an unreachable database, an invalid config)
are printed as one line on stderr with exit code 1, never as a traceback.
"""

import sys

import typer

from app.commands import (
    agreement,
    audit,
    campaign,
    cohort,
    db,
    demo,
    evaluate,
    experiment,
    export,
    faithfulness,
    generate,
    judge,
    model,
    serve,
    train,
    users,
)

app = typer.Typer(
    name="rationale-audit",
    help=__doc__,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(db.app, name="db")
app.add_typer(model.app, name="model")
app.add_typer(cohort.app, name="cohort")
app.add_typer(users.app, name="users")
app.add_typer(campaign.app, name="campaign")
app.add_typer(agreement.app, name="agreement")
app.add_typer(export.app, name="export")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(experiment.app, name="experiment")
app.add_typer(audit.app, name="audit")
app.add_typer(judge.app, name="judge")
app.add_typer(faithfulness.app, name="faithfulness")
app.command("serve")(serve.serve)
app.add_typer(generate.app, name="generate")
app.command("demo")(demo.demo)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
