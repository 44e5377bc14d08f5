"""Options and error handling shared by every `rationale-audit` command."""

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from annotation_db.errors import UserError
from annotation_db.provenance import CommandConfig, ConfigError

# Errors that are the user's to fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, ConnectionError, FileNotFoundError)

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
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        help="Leave vLLM's, transformers' and torch's own output on the terminal instead of "
        "the log file the command names.",
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
            # escaped: a path or a value in brackets is the user's text, not console markup
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper


def _help(field, choices: tuple) -> str:
    text = (field.description or "").rstrip(".")
    if choices:
        text += ("; " if text else "") + "one of " + ", ".join(map(str, choices))
    if not field.is_required() and field.default is not None:
        text += f" (default {field.default})"
    return text


def config_options(config_cls: type[CommandConfig]) -> Callable:
    """Give a command ``--config FILE`` plus one option per :meth:`option_fields` field.

    Name, type, default and help all come from the config class (a field's
    ``json_schema_extra={"flag": "--on/--off"}`` names a boolean's two flags). The
    decorated function takes the loaded config as its first argument, ``cfg``, and
    keeps its own parameters (``--db``, ``--force``, …) after the generated ones.
    Values from the command line override the file; unknown YAML keys are refused.
    """
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command).parameters.values())[1:]
        taken = {p.name for p in own}
        fields = {name: kind for name, kind in config_cls.option_fields().items()
                  if name not in taken}
        params = [inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
            default=typer.Option(None, "--config", help="YAML of the config's fields; "
                                 "options given here override it.", show_default=False))]
        for name, (kind, choices) in fields.items():
            field = config_cls.model_fields[name]
            flag = (field.json_schema_extra or {}).get("flag") if isinstance(
                field.json_schema_extra, dict) else None
            dashed = "--" + name.replace("_", "-")
            if kind is bool:
                flag = flag or f"{dashed}/--no-{name.replace('_', '-')}"
            option = typer.Option(None, flag or dashed, help=_help(field, choices),
                                  show_default=False)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=kind | None, default=option))
        presets = getattr(config_cls, "PRESETS", None)
        if presets:
            params.insert(1, inspect.Parameter(
                "preset", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                default=typer.Option(None, "--preset", help="start from a named recipe "
                                     "(the file and options given here override it): "
                                     + "; ".join(f"{name}: {p.summary}"
                                                 for name, p in presets.items()),
                                     show_default=False)))
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            overrides = {name: kwargs.pop(name) for name in fields}
            preset = kwargs.pop("preset", None)
            if preset is not None and preset not in presets:
                raise ConfigError(f"no preset {preset!r}; known: {', '.join(presets)}")
            base = dict(presets[preset].settings) if preset else None
            cfg = config_cls.load(kwargs.pop("config"), base=base, **overrides)
            return command(cfg, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # what typer reads
        return wrapper

    return decorate


def cli_actor() -> str:
    """Who acts on the command line, for the audit trail: the operating-system user."""
    import getpass

    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):
        return "unknown"
