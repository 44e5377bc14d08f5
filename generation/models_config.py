"""The model spec every step defaults to, and the settings of `rationale-audit model
prepare` (pydantic and the standard library).

Kept apart from :mod:`generation.models` so that configs naming the default model load
without the model-resolution code (and its torch and transformers paths)."""

from pydantic import Field

from annotation_db.command_config import CommandConfig

DEFAULT_MODEL = "bundled:smollm2-135m-instruct"


class ModelPrepareConfig(CommandConfig):
    """`rationale-audit model prepare`: resolve a model spec to a loadable folder."""

    COMMAND = "rationale-audit model prepare"

    model: str = Field(DEFAULT_MODEL, description="bundled:smollm2-135m-instruct, a local "
                       "Hugging Face folder, or hf:ORG/NAME.")
    verify: bool = Field(False, description="Re-hash a prepared bundled model.")


__all__ = ["DEFAULT_MODEL", "ModelPrepareConfig"]
