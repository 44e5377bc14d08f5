"""The settings of `rationale-audit db backup` and `db restore` (pydantic only): what
may be overwritten, and whether a backup without a manifest is accepted."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class BackupConfig(CommandConfig):
    """`rationale-audit db backup FILE`: an online copy of the database."""

    COMMAND = "rationale-audit db backup"

    force: bool = Field(False, description="Replace an existing file.",
                        json_schema_extra={"flag": "--force"})


class RestoreConfig(CommandConfig):
    """`rationale-audit db restore FILE`: replace the database with a checked backup."""

    COMMAND = "rationale-audit db restore"

    force: bool = Field(False, description="Overwrite a database that already holds data.",
                        json_schema_extra={"flag": "--force"})
    no_manifest: bool = Field(
        False, description="Restore a backup that has no FILE.manifest.json beside it (its "
        "rows then cannot be checked; a manifest that is there is still checked).",
        json_schema_extra={"flag": "--no-manifest"})


__all__ = ["BackupConfig", "RestoreConfig"]
