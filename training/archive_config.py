"""The options of `rationale-audit experiment archive save` and `restore` (pydantic and
the standard library), kept apart from :mod:`training.archive` so that reading them
imports no database code."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class ArchiveSaveConfig(CommandConfig):
    """`rationale-audit experiment archive save VERSION`: where the runs go, and whether
    their adapters go too."""

    COMMAND = "rationale-audit experiment archive save"

    to: str = Field(description="Archive folder (created; runs already in it and unchanged "
                    "are left as they are).")
    weights: bool = Field(False, description="Also carry each run's LoRA adapter (megabytes "
                          "per run), so it can be scored again.",
                          json_schema_extra={"flag": "--weights"})


class ArchiveRestoreConfig(CommandConfig):
    """`rationale-audit experiment archive restore FOLDER`: where restored runs go."""

    COMMAND = "rationale-audit experiment archive restore"

    runs_dir: str = Field("runs", description="Where the restored run folders go.")


__all__ = ["ArchiveRestoreConfig", "ArchiveSaveConfig"]
