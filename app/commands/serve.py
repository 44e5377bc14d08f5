"""`rationale-audit serve`: the annotation app (Gradio) on this machine."""

from rich.console import Console

from app.commands.db import open_engine
from app.common import config_options, user_errors
from app.ui_config import ServeConfig

console = Console(soft_wrap=True)


@user_errors
@config_options(ServeConfig)
def serve(cfg: ServeConfig, db: str | None = None) -> None:
    """Serve the annotation app; log in with an account made by `rationale-audit users add`.

    Failed sign-ins are throttled and sessions end when idle (the options below);
    every sign-in is in `rationale-audit audit list`.

    Example:

        rationale-audit serve --port 7860 --idle-minutes 240
    """
    from app.ui import launch

    engine = open_engine(db)
    console.print(f"Rationale Audit on http://{cfg.host}:{cfg.port}/ (Ctrl+C to stop)",
                  highlight=False)
    launch(engine, host=cfg.host, port=cfg.port, block=True, policy=cfg.login_policy(),
           root_path=cfg.root_path)
