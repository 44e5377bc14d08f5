"""`rationale-audit serve`: the annotation app (Gradio) on this machine."""

import typer
from rich.console import Console

from app.commands.db import open_engine
from app.common import DbOption, user_errors

console = Console(soft_wrap=True)


@user_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(7860, help="Port."),
    db: DbOption = None,
) -> None:
    """Serve the annotation app; log in with an account made by `rationale-audit users add`.

    Example:

        rationale-audit serve --port 7860
    """
    from app.ui import launch

    engine = open_engine(db)
    console.print(f"Rationale Audit on http://{host}:{port}/ (Ctrl+C to stop)", highlight=False)
    launch(engine, host=host, port=port, block=True)
