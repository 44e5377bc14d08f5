"""The settings of `rationale-audit users` commands (pydantic only). The password is
not one of them: it is asked for at the prompt and never kept in a file."""

from typing import Literal

from pydantic import Field

from annotation_db.command_config import CommandConfig

# The values of annotation_db.models.Role (a test keeps the two equal).
RoleName = Literal["annotator", "adjudicator", "admin", "researcher"]


class UserAddConfig(CommandConfig):
    """`rationale-audit users add USERNAME`: a new account."""

    COMMAND = "rationale-audit users add"

    role: RoleName = Field("annotator", description="The account's role (a researcher sees "
                                                    "datasets, runs and results).")


__all__ = ["RoleName", "UserAddConfig"]
