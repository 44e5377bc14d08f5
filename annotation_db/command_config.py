"""The base of every command's typed configuration (pydantic and the standard library).

Each command takes one :class:`CommandConfig` subclass, kept in a ``<step>_config.py``
beside the step that uses it: the single source of the command's flags, YAML keys and
help (and, where the Runs screen has a form, its fields). It loads from YAML
(``--config run.yaml``), command-line values override the file, unknown keys are refused.
:mod:`annotation_db.provenance` echoes a resolved config into the folder it wrote.
"""

import hashlib
import json
import shlex
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from annotation_db.errors import UserError


def stable_hash(data: Any) -> str:
    """The project's one identity hash: SHA-256 of ``data`` as JSON with sorted keys.

    Configs (:meth:`CommandConfig.content_hash`), training and few-shot runs and
    generation runs are all identified by it, so equal inputs give one identity.
    """
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class ConfigError(UserError):
    """A configuration file or value that cannot be used; the message is one line."""


class CommandConfig(BaseModel):
    """Base for per-command configuration: strict, hashable, YAML round-trippable."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Fields that never change a result (where files go, bookkeeping); a subclass lists
    # its own, and they are left out of its identity.
    NOT_IN_IDENTITY: ClassVar[frozenset[str]] = frozenset()
    # Fields added after configs were first hashed, with their defaults: in the identity
    # only when set, so what was identified before them keeps its hash.
    ADDED_LATER: ClassVar[dict[str, Any]] = {}
    # The command whose options the config's fields are (for :meth:`cli`).
    COMMAND: ClassVar[str] = ""

    @classmethod
    def load(cls, path: str | Path | None = None, *, base: dict | None = None,
             **overrides: Any) -> Self:
        """Defaults ← ``base`` (a preset) ← YAML file ← ``overrides`` (``None`` values
        mean "not given")."""
        data: dict[str, Any] = dict(base or {})
        if path is not None:
            path = Path(path)
            import yaml

            try:
                loaded = yaml.safe_load(path.read_text())
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"config file {path} must hold a mapping of settings")
            data.update(loaded or {})
        data.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = first["loc"][0] if first["loc"] else None
            if first["type"] == "missing" and name in cls.option_fields():
                raise ConfigError(f"missing option {cls.flag(name)} (or {name}: in the "
                                  "--config file)") from exc
            source = f" in {path}" if path else ""
            raise ConfigError(f"invalid {cls.__name__}{source}: {_first_error(exc)}") from exc

    @classmethod
    def option_fields(cls) -> dict[str, tuple[Any, tuple]]:
        """The fields that are one command-line option each: name → (type, choices).

        A scalar field (``bool``, ``int``, ``float``, ``str``, a ``Literal`` of one of
        them, or an optional one) is an option; so is a list of scalars marked
        ``json_schema_extra={"repeatable": True}`` (type ``list[X]``: the option is given
        once per value). Other lists and mappings are set in the YAML given with
        ``--config``. The CLI and :meth:`cli`-style echoes read this, so a field added to
        a config appears on the command line without being retyped.
        """
        out = {}
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            annotation = field.annotation
            if extra.get("repeatable"):
                inner = get_args(_without_none(annotation))
                kind = _option_kind(inner[0]) if inner else None
                if kind is not None:
                    out[name] = (list[kind[0]], kind[1])
                continue
            kind = _option_kind(annotation)
            if kind is not None:
                out[name] = kind
        return out

    @classmethod
    def flag(cls, name: str, value: Any = True) -> str:
        """The command-line flag of field ``name``; for a boolean, the one that sets
        ``value`` (``--x``/``--no-x``, or the pair a field's
        ``json_schema_extra={"flag": "--on/--off"}`` names)."""
        is_bool = cls.option_fields()[name][0] is bool
        declared = option_declaration(name, cls.model_fields[name], is_bool)
        if not is_bool:
            return declared
        on, _, off = declared.partition("/")
        return on if value else off  # "" for a single flag such as --json: off is its absence

    def implied(self, name: str) -> bool:
        """Whether field ``name`` holds what it would be derived as anyway (a subclass
        with derived defaults says so); :meth:`cli` leaves such fields out."""
        return False

    def cli(self) -> str:
        """The equivalent command line: :attr:`COMMAND`, the required fields, then
        every field that differs from its default.

        Fields without a command-line option are written as ``--config`` YAML instead;
        the returned text then says so.
        """
        options = self.option_fields()
        parts, in_yaml = [self.COMMAND], []
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if (not field.is_required() and value == field.get_default(
                    call_default_factory=True)) or self.implied(key):
                continue
            if key not in options:
                in_yaml.append(key)
            elif options[key][0] is bool:
                parts.append(self.flag(key, value))
            elif get_origin(options[key][0]) is list:
                parts.extend(f"{self.flag(key)} {shlex.quote(str(v))}" for v in value)
            else:
                parts.append(f"{self.flag(key)} {shlex.quote(str(value))}")
        if in_yaml:
            parts.append(f"--config run.yaml  # with {', '.join(in_yaml)}")
        return " ".join(parts)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Self:
        """A config as a run or job stored it (its full dump, perhaps by an earlier
        version): a field added since, absent there, takes its :attr:`ADDED_LATER` value,
        what that config meant, not today's default where the two differ."""
        return cls.model_validate({**cls.ADDED_LATER, **data})

    def identity_data(self) -> dict[str, Any]:
        """What identifies this config: its fields but :attr:`NOT_IN_IDENTITY`."""
        data = self.model_dump(mode="json", exclude=set(self.NOT_IN_IDENTITY))
        for name, default in self.ADDED_LATER.items():
            if data.get(name) == default:
                data.pop(name, None)
        return data

    def content_hash(self, **context: Any) -> str:
        """:func:`stable_hash` of :meth:`identity_data` plus ``context`` (say, the hash of
        the data the config is applied to)."""
        return stable_hash({**self.identity_data(), **context})

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_SCALARS = (bool, int, float, str)


def option_declaration(name: str, field: Any, is_bool: bool) -> str:
    """How field ``name`` is declared on the command line: the field's
    ``json_schema_extra["flag"]`` when it names one, else ``--name`` (``--name/--no-name``
    for a boolean). The one rule for a config's flags, its echo and the CLI's options."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    dashed = "--" + name.replace("_", "-")
    return extra.get("flag") or (f"{dashed}/--no-{name.replace('_', '-')}" if is_bool
                                 else dashed)


def _without_none(annotation: Any) -> Any:
    """``X`` of ``X | None`` (else the annotation itself)."""
    if get_origin(annotation) in (Union, UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _option_kind(annotation: Any) -> tuple[type, tuple] | None:
    """``(type, choices)`` of an annotation that fits one command-line option, else None."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        rest = [a for a in args if a is not type(None)]
        return _option_kind(rest[0]) if len(rest) == 1 else None
    if origin is Literal:
        kinds = {type(a) for a in args}
        kind = kinds.pop() if len(kinds) == 1 else None
        return (kind, args) if kind in _SCALARS else None
    return (annotation, ()) if annotation in _SCALARS else None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
