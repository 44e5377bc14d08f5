"""The settings of `rationale-audit export` commands (pydantic only): the approval policy
a version is made under, its name and folder, and who deletes one."""

from pydantic import Field

from annotation_db.command_config import CommandConfig


class ExportPreviewConfig(CommandConfig):
    """`rationale-audit export preview`: what would pass a policy."""

    COMMAND = "rationale-audit export preview"

    policy: str = Field(description="Approval policy YAML (see docs/export.md).")


class ExportCreateConfig(ExportPreviewConfig):
    """`rationale-audit export create`: an immutable, content-addressed dataset version."""

    COMMAND = "rationale-audit export create"

    name: str = Field(description="Version name (never reused).")
    root: str = Field("exports", description="Folder that holds versions.")


class ExportDeleteConfig(CommandConfig):
    """`rationale-audit export delete NAME`: a version's data files, by an admin."""

    COMMAND = "rationale-audit export delete"

    admin: str = Field(description="Username of the admin deleting it.")


__all__ = ["ExportCreateConfig", "ExportDeleteConfig", "ExportPreviewConfig"]
