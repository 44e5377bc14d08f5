"""`rationale-audit serve`: the annotation app (Gradio) on this machine."""

import typer
from rich.console import Console

from app.commands.db import open_engine
from app.common import DbOption, config_options, user_errors
from app.login_guard_config import LoginPolicy

console = Console(soft_wrap=True)


@user_errors
@config_options(LoginPolicy)
def serve(
    cfg: LoginPolicy,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (behind a reverse "
                             "proxy, keep 127.0.0.1; see docs/annotation.md)."),
    port: int = typer.Option(7860, help="Port."),
    root_path: str = typer.Option(None, "--root-path", help="The path a reverse proxy "
                                  "serves the app under, e.g. /audit."),
    db: DbOption = None,
) -> None:
    """Serve the annotation app; log in with an account made by `rationale-audit users add`.

    Failed sign-ins are throttled and sessions end when idle (the options below);
    every sign-in is in `rationale-audit audit list`.

    Example:

        rationale-audit serve --port 7860 --idle-minutes 240
    """
    from app.ui import launch

    engine = open_engine(db)
    console.print(f"Rationale Audit on http://{host}:{port}/ (Ctrl+C to stop)", highlight=False)
    launch(engine, host=host, port=port, block=True, policy=cfg, root_path=root_path)
