"""The settings of `rationale-audit demo` (pydantic, the standard library and the
default model's name): kept apart from :mod:`app.commands.demo` so that reading the
flags imports none of the stages (vLLM, torch, the annotation app)."""

from pydantic import Field

from annotation_db.command_config import CommandConfig
from generation.models import DEFAULT_MODEL  # a constant; the module imports no model code


class DemoConfig(CommandConfig):
    """Settings of `rationale-audit demo` (YAML keys are the field names)."""

    COMMAND = "rationale-audit demo"

    model: str = Field(DEFAULT_MODEL, description="model spec: bundled:NAME, a local Hugging "
                                                  "Face folder or hf:ORG/NAME")
    cache_dir: str | None = Field(None, description="model cache directory (must exist)")
    db: str | None = Field(None, description="SQLite file (ignored when $DATABASE_URL is set)")
    output_dir: str = Field("demo_output", description="where the run's config and summary go")
    cohort_name: str = Field("demo", description="name of the demo cohort (kept and reused "
                                                 "on re-runs)")
    cohort_n: int = Field(40, ge=1, description="patients in the demo cohort")
    cohort_seed: int = Field(7, description="seed of the demo cohort")
    generate_n: int = Field(8, ge=0, description="rationales to write with vLLM for the demo "
                                                 "cohort (0 skips)")
    faithfulness: bool = Field(True, description="measure by evidence ablation whether the "
                               "template teacher's cited evidence moves the bundled model's "
                               "prediction (`faithfulness run`; shown on the Admin tab)")
    train: bool = Field(True, description="run a tiny LoRA SFT and evaluation on the demo "
                                          "export")
    serve: bool = Field(True, description="serve the annotation app when the stages are done")
    verbose: bool = Field(False, description="show the libraries' own output (vLLM, "
                                             "transformers, torch) instead of logging it")
    host: str = Field("127.0.0.1", description="address the annotation app listens on")
    port: int = Field(7860, description="port the annotation app listens on")


__all__ = ["DemoConfig"]
