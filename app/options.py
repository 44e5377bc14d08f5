"""Option groups shared by many commands, each written once: the database, the log
verbosity, the model cache, a server's API key and run control (force, retry, evaluate).

A command decorated with :func:`app.common.config_options` gets a group's option by
naming a parameter after one of its fields (``db``, ``verbose``, ``cache_dir``,
``api_key``, ``force``, …) with a plain default; the flag, type, default, help and
environment variable all come from here. Group values are bookkeeping, never part of a config's
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


class RunControlOptions(OptionGroup):
    """Whether a run is redone, retried or scored when it ends: they change what the
    command does this time, never what the run is."""

    force: bool = Field(
        False, description="Run again even if this exact run finished (otherwise it is "
        "reused).")
    retry_failed: bool = Field(
        False, description="Give the patients stored as failed in this run another full set "
        "of attempts (same run; their failed rows are replaced).",
        json_schema_extra={"flag": "--retry-failed"})
    evaluate: bool = Field(True, description="Score the test split when training ends.")


GROUPS: tuple[type[OptionGroup], ...] = (DatabaseOptions, VerboseOptions, CacheOptions,
                                         ServerAuthOptions, RunControlOptions)

__all__ = ["GROUPS", "CacheOptions", "DatabaseOptions", "OptionGroup", "RunControlOptions",
           "ServerAuthOptions", "VerboseOptions"]
