"""What a study's training data are made from (pydantic and the standard library):
the settings :func:`training.study.prepare_dataset` takes, kept apart from it so that
reading a reproduction config imports no database or model code."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from annotation_db.campaigns_config import campaign_default


class AuditSettings(BaseModel):
    """How a study's rationales are audited: a named campaign, simulated if absent."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field("study-audit", description="an existing campaign with real ratings "
                                                     "is used as is; otherwise it is simulated")
    simulated_raters: int = Field(3, ge=2, description="simulated raters of a simulated "
                                  "campaign")
    k: int = Field(campaign_default("k"), ge=1, description="ratings per rationale")
    gold_share: float = Field(0.1, ge=0, le=1, description="gold (flawed) items per original "
                              "item (a study plants more than a campaign's default, none)")
    noise: float = Field(campaign_default("noise"), ge=0, description="SD of each simulated "
                         "rating's noise (scale points)")


TEMPLATE_TEACHERS = ("template", "template-balanced")


class DataSettings(BaseModel):
    """What the training data of a study are made from."""

    model_config = ConfigDict(extra="forbid")

    cohort: str = Field("study", description="cohort name (reused when it exists)")
    n: int = Field(600, ge=20, description="patients in the cohort")
    mode: Literal["population", "case-enriched"] = Field(
        "case-enriched", description="the cohort's sampling (see `cohort generate --mode`)")
    seed: int = Field(7, description="seed of the cohort and the rationales")
    teacher: str = Field("template", description="'template' (the template teacher), "
                         "'template-balanced' (its variant with the evidence first and the "
                         "conclusion last) or a model spec for vLLM")
    teacher_mode: Literal["label-conditioned", "label-blind"] = Field(
        "label-conditioned", description="label-conditioned: the teacher is told the "
        "five-year outcome and explains it (the study's design); label-blind: it is not, "
        "and reaches its own conclusion (for a model teacher, on a GPU)")
    formats: list[Literal["free", "stepwise"]] = Field(
        ["free", "stepwise"], description="rationale formats the teacher writes")
    history_budget: int = Field(600, ge=40, description="tokens of history in each prompt "
                                                        "(generation and exported views)")
    history_tokenizer: str | None = Field(
        None, description="model whose tokenizer counts history_budget (default: the "
                          "grid's first base model)")
    audit: AuditSettings = Field(AuditSettings(), description="the audit campaign")
    policy: dict = Field(description="the export's approval policy", default_factory=lambda: {
        "min_ratings": 2, "min_accuracy": 3.5, "min_faithfulness": 3.5, "aggregate": "mean",
        "blocking_flags": ["unsafe_or_misleading", "hallucinated_fact"],
        "min_gold_accuracy": None, "include_simulated": True})
    dataset: str = Field("study-v1", description="name of the dataset version")


__all__ = ["TEMPLATE_TEACHERS", "AuditSettings", "DataSettings"]
