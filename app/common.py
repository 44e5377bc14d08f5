"""Options and error handling shared by every `rationale-audit` command."""

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from annotation_db.campaigns import CampaignError
from annotation_db.cohorts import CohortError
from annotation_db.export import ExportError
from annotation_db.provenance import ConfigError
from annotation_db.ratings import RatingsError
from annotation_db.session import DatabaseUnavailable
from annotation_db.users import UserError
from generation.importers import ImportRejected
from generation.models import ModelSpecError
from generation.prompts import PromptError
from training.data import DataError
from training.runs import RunError

# Errors that are the user's to fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError, DatabaseUnavailable, ModelSpecError, CohortError, ImportRejected, PromptError,
    ConnectionError, RatingsError, CampaignError, UserError, ExportError, DataError, RunError,
    FileNotFoundError,
)

err_console = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLite database file (default ./rationale_audit.sqlite or $RATIONALE_AUDIT_DB). "
        "Ignored when $DATABASE_URL is set, e.g. postgresql+psycopg://user:pw@host/db.",
        show_default=False,
    ),
]
CacheDirOption = Annotated[
    str | None,
    typer.Option(
        "--cache-dir",
        help="Where prepared models are kept (must exist). "
        "Default $RATIONALE_AUDIT_CACHE_DIR or ~/.cache/rationale-audit.",
        show_default=False,
    ),
]


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print expected errors as one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper
