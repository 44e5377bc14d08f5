"""The settings of one LoRA SFT run, `rationale-audit train sft` (pydantic and the
standard library, with the project's light target and preset tables).

Kept apart from :mod:`training.sft` so the CLI, the Runs screen and grids load without
torch and transformers; the fields feed a run's identity (its folder and database row),
so they are neither added, renamed nor re-defaulted."""

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from annotation_db.command_config import CommandConfig
from generation.models_config import DEFAULT_MODEL
from training.decision_tokens import (
    ALWAYS_DECISION_TARGETS,
    DECISION_TARGETS,
    DecisionRule,
    reads_decisions,
)
from training.presets import PRESETS, Preset
from training.targets import TARGETS, FillerLength, Target

LOCATION_FIELDS = frozenset({"runs_dir", "cache_dir"})
# Bookkeeping that does not change the trained weights: left out of a run's identity.
BOOKKEEPING_FIELDS = frozenset({"save_steps", "save_total_limit", "logging_steps",
                                "probe_steps", "probe_rows", "validate_each_epoch"})


class SFTRunConfig(CommandConfig):
    """One LoRA SFT run (HF ``TrainingArguments`` and TRL ``lora_*`` names where they exist)."""

    COMMAND = "rationale-audit train sft"

    dataset: str = Field(description="dataset version name (see `rationale-audit export list`)")
    target: Target = Field(default="label", description="what the student learns to write: "
                           "the label alone, a rationale before it, or an ablation")
    base_model: str = Field(default=DEFAULT_MODEL, description="model spec: bundled:NAME, a "
                            "local Hugging Face folder or hf:ORG/NAME")
    train_size: int | None = Field(default=None, ge=1,
                                   description="patients drawn (label mix kept); all if unset")
    paired_targets: list[Target] | None = Field(
        default=None, description="draw only patients with a training row in each of these "
                                  "targets, so they all train on the same patients")
    seed: int = Field(default=0, description="seed of the patient draw and of training")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank")
    lora_alpha: int | None = Field(default=None, description="defaults to 2 × lora_r")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="dropout on the LoRA "
                                "layers' input")
    lora_target_modules: str | list[str] = Field(
        default="all-linear", description="modules given LoRA adapters (PEFT's names)")
    learning_rate: float = Field(default=2e-4, gt=0, description="peak learning rate")
    num_train_epochs: float = Field(default=2.0, gt=0, description="passes over the rows")
    max_steps: int = Field(default=-1,
                           description="stop after this many optimizer steps (-1: epochs)")
    per_device_train_batch_size: int = Field(default=8, ge=1, description="rows per step "
                                             "and device")
    gradient_accumulation_steps: int = Field(default=1, ge=1, description="steps whose "
                                             "gradients are summed before an update")
    lr_scheduler_type: str = Field(default="linear", description="the learning-rate "
                                   "schedule (transformers' SchedulerType)")
    warmup_steps: float = Field(default=0, ge=0,
                                description="steps, or a fraction of all steps if < 1")
    weight_decay: float = Field(default=0.0, description="AdamW's weight decay")
    max_length: int = Field(default=1024, ge=16, description="tokens per row; a longer "
                            "prompt loses whole history lines, oldest dated items first, "
                            "never the answer")
    save_steps: int = Field(default=50, ge=1, description="steps between checkpoints")
    save_total_limit: int = Field(default=2, ge=1, description="checkpoints kept")
    logging_steps: int = Field(default=5, ge=1, description="steps between logged losses")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 on a GPU, bf16 autocast on a CPU with "
                                    "native bf16 (AVX512-BF16 or AMX), else fp32")
    group_by_length: bool = Field(default=True, description="batch rows of similar length "
                                                            "together (less padding)")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations "
                                         "in the backward pass (less memory, slower)")
    multitask_alpha: float = Field(default=0.5, gt=0, lt=1, description="multitask: weight "
                                   "of the predict task's loss (explain gets 1 − α)")
    reading_rule: str | None = Field(
        default=None, description="the mechanism grid's pre-registration digest: its "
        "reading rule with how each side is scored (ExperimentGrid.preregistration; set by "
        "the grid; part of the run's identity)")
    align_alpha: float = Field(default=0.5, gt=0, lt=1, description="rationale-align: "
                               "weight of the answer's length-normalised loss (the "
                               "rationale's gets 1 − α)")
    answer_loss_share: float | None = Field(
        default=None, gt=0, lt=1, description="rationale-weighted: the answer token's share "
        "of the loss weight; unset: label-only's share on the same patients")
    decision_tokens: Literal["answer", "branch"] = Field(
        default="answer", description="rationale-weighted and rationale-answer-only: the "
        "tokens they treat as the answer. answer: the yes/no after 'Final answer:'; branch: "
        "also the decision tokens, the rationale's branch points: the first token of each "
        "run of tokens that end a token 1-, 2- or 3-gram frequent and label-pure in the "
        "training rows (training/decision_tokens.py). rationale-align always treats them as "
        "its label part")
    filler_length: FillerLength = Field(
        default="median", description="label-padded: how long each row's filler is. median: "
        "the median free-form rationale of the training split, for every row (length "
        "without the label); own: the patient's own rationale length, which gives the "
        "label away where rationale length follows it (the first mechanism grid's)")
    probe_steps: int = Field(default=25, ge=1, description="diagnostics: every this many "
                             "steps, the answer tokens' share of the gradient norm on a "
                             "fixed probe batch")
    probe_rows: int = Field(default=4, ge=1, description="rows in that probe batch")
    validate_each_epoch: bool = Field(default=True, description="diagnostics: validation "
                                      "AUROC (direct scoring) after every epoch")
    runs_dir: str = Field(default="runs", description="where run folders go")
    cache_dir: str | None = Field(default=None, description="where prepared models are kept "
                                  "(default $RATIONALE_AUDIT_CACHE_DIR or "
                                  "~/.cache/rationale-audit)")

    NOT_IN_IDENTITY = LOCATION_FIELDS | BOOKKEEPING_FIELDS
    PRESETS: ClassVar[dict[str, Preset]] = PRESETS  # `train sft --preset NAME`, the Runs form
    ADDED_LATER = {"multitask_alpha": 0.5, "answer_loss_share": None, "align_alpha": 0.5,
                   "reading_rule": None, "decision_tokens": "answer", "filler_length": "own"}

    @model_validator(mode="after")
    def _alpha(self):
        if self.lora_alpha is None:
            self.lora_alpha = 2 * self.lora_r
        if (TARGETS[self.target].weighting in ("multitask", "align")
                and self.gradient_accumulation_steps > 1):
            raise ValueError(f"{self.target} weights rows, not tokens, and is exact only without "
                             "gradient accumulation; raise per_device_train_batch_size "
                             "instead of gradient_accumulation_steps")
        return self

    def identity_data(self) -> dict:
        data = super().identity_data()
        # "auto" means different weights on a GPU and on CPU: hash what it resolves to.
        from training.precision import resolve_precision

        data["precision"] = resolve_precision(self.precision, strict=False)
        # an option only its own target reads is in the identity of that target's runs
        # alone, so setting it for a grid (sft.settings) leaves the other runs as they were
        weighting = TARGETS[self.target].weighting
        if weighting != "multitask":
            data.pop("multitask_alpha", None)
        if weighting != "align":
            data.pop("align_alpha", None)
        if weighting != "answer-share":
            data.pop("answer_loss_share", None)
        if self.target not in DECISION_TARGETS:
            data.pop("decision_tokens", None)
        if not TARGETS[self.target].filler:
            data.pop("filler_length", None)
        if self.target in ALWAYS_DECISION_TARGETS:  # whatever the option says
            data["label_loss_tokens"] = "answer and decision tokens"
        if reads_decisions(self.target, self.decision_tokens):
            # the rule that marks them: a run under another rule is another run
            data["decision_rule"] = DecisionRule().identity()
        return data

    def identity(self, dataset_hash: str, processes: int = 1) -> str:
        """Hash of what determines the result: the config without locations, and the data;
        with ``processes`` > 1 data-parallel processes, their number too (it multiplies
        the effective batch)."""
        extra = {"data_parallel_processes": processes} if processes > 1 else {}
        return self.content_hash(dataset_sha256=dataset_hash, **extra)

    def implied(self, name: str) -> bool:
        return name == "lora_alpha" and self.lora_alpha == 2 * self.lora_r



__all__ = ["BOOKKEEPING_FIELDS", "LOCATION_FIELDS", "SFTRunConfig"]
