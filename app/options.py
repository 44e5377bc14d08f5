"""Option groups shared by many commands, each written once: the database, the log
verbosity, the model cache and a server's API key.

A command asks for a group's option by naming a parameter after one of its fields
(``db``, ``verbose``, ``cache_dir``, ``api_key``) and listing the group in
:func:`app.common.config_options`; the flag, type, default, help and environment
variable all come from here. Group values are bookkeeping, never part of a config's
identity, so they are passed to the command beside its config rather than inside it.
"""

from pydantic import BaseModel, Field


class OptionGroup(BaseModel):
    """A set of options several commands share (see the module docstring)."""


class DatabaseOptions(OptionGroup):
    db: str | None = Field(
        None, description="SQLite database file (default ./rationale_audit.sqlite or "
        "$RATIONALE_AUDIT_DB). Ignored when $DATABASE_URL is set, e.g. "
        "postgresql+psycopg://user:pw@host/db.")


class VerboseOptions(OptionGroup):
    verbose: bool = Field(
        False, description="Leave vLLM's, transformers' and torch's own output on the "
        "terminal instead of the log file the command names.",
        json_schema_extra={"flag": "--verbose"})


class CacheOptions(OptionGroup):
    cache_dir: str | None = Field(
        None, description="Where prepared models are kept (must exist). Default "
        "$RATIONALE_AUDIT_CACHE_DIR or ~/.cache/rationale-audit.")


class ServerAuthOptions(OptionGroup):
    api_key: str | None = Field(
        None, description="Bearer token for a --server-url that needs one (or "
        "$OPENAI_API_KEY); sent to the server only, never stored or printed.",
        json_schema_extra={"envvar": "OPENAI_API_KEY"})


GROUPS: tuple[type[OptionGroup], ...] = (DatabaseOptions, VerboseOptions, CacheOptions,
                                         ServerAuthOptions)

__all__ = ["GROUPS", "CacheOptions", "DatabaseOptions", "OptionGroup", "ServerAuthOptions",
           "VerboseOptions"]
