"""Options and error handling shared by every `rationale-audit` command."""

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from annotation_db.command_config import (
    CommandConfig,
    ConfigError,
    _option_kind,
    option_declaration,
)
from annotation_db.errors import UserError

# Errors that are the user's to fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (UserError, ConnectionError, FileNotFoundError)

err_console = Console(stderr=True)


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


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _help(field, choices: tuple) -> str:
    """An option's help from its field: the description, the choices, the bounds, and
    whether it is required (here or in --config) or its default."""
    text = (field.description or "").rstrip(".")
    if choices:
        text += ("; " if text else "") + "one of " + ", ".join(map(str, choices))
    bounds = [f"{sign} {getattr(m, name)}" for m in field.metadata
              for name, sign in _BOUNDS.items() if hasattr(m, name)]
    if bounds:
        text += ("; " if text else "") + ", ".join(bounds)
    if field.is_required():
        text += " (required, here or in the --config file)"
    elif field.default not in (None, [], ()):
        text += f" (default {field.default})"
    return text


def _option(name: str, field, kind, choices: tuple, default: Any = None) -> inspect.Parameter:
    """The keyword parameter typer reads as field ``name``'s option."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    repeated = get_args(kind)[0] if get_origin(kind) is list else None
    option = typer.Option(default, option_declaration(name, field, kind is bool),
                          help=_help(field, choices),
                          envvar=extra.get("envvar"), show_default=False,
                          show_envvar=False,
                          metavar=f"<{repeated.__name__}>" if repeated else None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind | None,
                             default=option)


def _group_fields(groups: tuple[type[BaseModel], ...] = ()) -> dict[str, Any]:
    from app.options import GROUPS

    return {name: field for group in (*GROUPS, *groups)
            for name, field in group.model_fields.items()}


def _group_option(name: str, field) -> inspect.Parameter:
    """The keyword parameter typer reads as group field ``name``'s option."""
    kind, choices = _option_kind(field.annotation) or (str, ())
    return _option(name, field, kind, choices, field.default)


def config_options(config_cls: type[CommandConfig] | None,
                   *groups: type[BaseModel]) -> Callable:
    """Give a command its options from its config class and the shared option groups.

    With a config class the command gets ``--config FILE`` plus one option per
    :meth:`~annotation_db.command_config.CommandConfig.option_fields` field (name, type,
    default, help and choices all from the class; a field's
    ``json_schema_extra={"flag": "--on/--off"}`` names a boolean's two flags), and takes
    the loaded config as its first argument, ``cfg``. Values from the command line
    override the file; unknown YAML keys are refused.

    A parameter named after a field of a shared group in :mod:`app.options` (``db``,
    ``verbose``, ``cache_dir``, ``api_key``, ``force``, …) and given a plain default gets that
    group's option; ``groups`` adds a command's own groups, for options that must stay
    out of a hashed config (``cohort generate --workers``, say). Other parameters
    (arguments, say) are kept as written.

    A command that declares a parameter named ``config`` receives the ``--config`` path
    too, and that parameter's plain default becomes the option's default (for a command
    whose config file has a usual place, such as ``experiment reproduce``).
    """
    shared = _group_fields(groups)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command).parameters.values())[
            1 if config_cls is not None else 0:]
        wants_path = any(p.name == "config" for p in own)
        default_file = _config_default(own)
        own = [p for p in own if p.name != "config"]
        taken = {p.name for p in own}
        fields = ({name: kind for name, kind in config_cls.option_fields().items()
                   if name not in taken} if config_cls is not None else {})
        params = []
        if config_cls is not None:
            params.append(inspect.Parameter(
                "config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                default=typer.Option(default_file, "--config", help="YAML of the config's "
                                     "fields; options given here override it" + (
                                         f" (default {default_file})" if default_file
                                         else "") + ".", show_default=False)))
            params += [_option(name, config_cls.model_fields[name], kind, choices)
                       for name, (kind, choices) in fields.items()]
        presets = getattr(config_cls, "PRESETS", None)
        if presets:
            params.insert(1, inspect.Parameter(
                "preset", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                default=typer.Option(None, "--preset", help="start from a named recipe "
                                     "(the file and options given here override it): "
                                     + "; ".join(f"{name}: {p.summary}"
                                                 for name, p in presets.items()),
                                     show_default=False)))
        for p in own:
            if p.name in shared and not isinstance(p.default, typer.models.ParameterInfo):
                p = _group_option(p.name, shared[p.name])
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            if config_cls is None:
                return command(**kwargs)
            overrides = {name: kwargs.pop(name) or None
                         if get_origin(fields[name][0]) is list else kwargs.pop(name)
                         for name in fields}  # an unrepeated list option is "not given"
            preset = kwargs.pop("preset", None)
            if preset is not None and preset not in presets:
                raise ConfigError(f"no preset {preset!r}; known: {', '.join(presets)}")
            base = dict(presets[preset].settings) if preset else None
            path = kwargs.pop("config")
            cfg = config_cls.load(path, base=base, **overrides)
            return command(cfg, **({"config": path} if wants_path else {}), **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # what typer reads
        wrapper.config_class = config_cls  # tests/app/test_command_configs.py reads them
        wrapper.option_groups = groups
        return wrapper

    return decorate


def _config_default(params: list[inspect.Parameter]) -> Any:
    """The plain default of a command's own ``config`` parameter (else None)."""
    for p in params:
        if p.name == "config" and p.default is not inspect.Parameter.empty \
                and not isinstance(p.default, typer.models.ParameterInfo):
            return p.default
    return None


def cli_actor() -> str:
    """Who acts on the command line, for the audit trail: the operating-system user."""
    import getpass

    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):
        return "unknown"
