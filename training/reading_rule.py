"""The mechanism section's reading rule, fixed before the runs: which contrasts are read,
which explanation predicts which, and where a model may be scored for them.

A mechanism grid states its rule in its config (``reading:``, a :class:`ReadingRule`).
The rule's hash goes into the identity of every SFT run the grid makes
(``SFTRunConfig.reading_rule``), so runs made under one rule are not silently reused
under another, and the report refuses to read runs under a rule whose hash is not the
one they were made under (:func:`check_runs`). The report prints the hash.

``trained_positions_only`` (on for a pre-registered rule): every side of a contrast is
scored where its model was trained to answer: its target's own scoring, sampled
rationales for a model that writes one before its answer, or, for a filler model, its
filler written in at the taught median length (``prefilled``). A rationale model scored
right after the prompt, or a filler model with its cue forced in after whatever it
wrote, is read at a position it never learned, and a rule that asks for it is refused.

:data:`POST_HOC` is the rule of the first mechanism report, set after its grid ran; a
grid without ``reading:`` is read with it, and its report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from annotation_db.command_config import stable_hash
from training.forced_reading import FORCED
from training.targets import TARGETS

SIDE_SCORINGS = ("direct", "generate", "sampled", "prefilled", FORCED)


class Contrast(BaseModel):
    """``AUROC(a) − AUROC(b)``; each side a (target, scoring)."""

    model_config = ConfigDict(extra="forbid")

    a: tuple[str, str]
    b: tuple[str, str]
    what: str = Field(description="what differs between the two sides, in words")


class ReadingRule(BaseModel):
    """Contrasts, the explanations that predict them (positive: ``a`` above ``b``), and
    the same contrasts read another way where a reading should say when that changes it."""

    model_config = ConfigDict(extra="forbid")

    contrasts: dict[str, Contrast]
    explanations: dict[str, list[str]] = Field(
        description="an explanation is supported when every contrast it predicts is shown "
                    "(95% CI above 0), contradicted when one is shown the other way")
    alternatives: dict[str, str] = Field(default_factory=dict)
    trained_positions_only: bool = True
    interval: Literal["patients", "seeds-then-patients"] = Field(
        default="patients", description="how a difference's 95% CI is drawn: patients (the "
        "test patients resampled, jointly over the cells both settings have; the first "
        "report's) or seeds-then-patients (each replicate draws the seeds, then the "
        "patients: training variance counted, as the main comparison's headline does)")

    @model_validator(mode="after")
    def _consistent(self):
        for name, contrast in self.contrasts.items():
            for target, scoring in (contrast.a, contrast.b):
                if target not in TARGETS:
                    raise ValueError(f"contrast {name!r}: unknown target {target!r}")
                if scoring not in SIDE_SCORINGS:
                    raise ValueError(f"contrast {name!r}: unknown scoring {scoring!r}")
                if self.trained_positions_only and not trained_position(target, scoring):
                    raise ValueError(
                        f"contrast {name!r}: {target} scored {scoring} is read at a position "
                        f"its model was not trained to answer (it answers by "
                        f"{TARGETS[target].scoring}); read it there or drop the contrast")
        for explanation, predicted in self.explanations.items():
            unknown = [p for p in predicted if p not in self.contrasts]
            if unknown:
                raise ValueError(f"explanation {explanation!r} predicts unknown contrast(s) "
                                 f"{', '.join(unknown)}")
        for name, other in self.alternatives.items():
            if name not in self.contrasts or other not in self.contrasts:
                raise ValueError(f"alternative {name!r} -> {other!r}: both must be contrasts")
        return self

    def digest(self) -> str:
        """The rule's identity (what runs and reports are checked against); a rule that
        leaves ``interval`` at its first value keeps the hash it had before the field."""
        return stable_hash(self.model_dump(
            mode="json", exclude={"interval"} if self.interval == "patients" else None))


def trained_position(target: str, scoring: str) -> bool:
    """Whether a model trained on ``target`` was trained to answer where ``scoring``
    reads it."""
    own = TARGETS[target].scoring
    if TARGETS[target].loss_on == "answer":  # never trained to write what precedes it
        return False
    # a filler model read after its filler written in: the answer position it was taught
    return scoring == own or (own == "generate" and scoring == "sampled") or (
        TARGETS[target].filler and scoring == "prefilled")


def check_runs(rows: list[dict], rule: ReadingRule | None) -> None:
    """Refuse to read ``rows`` (report rows with a ``run_dir``) unless every SFT run was
    made under ``rule``: the hash in its echoed config is the rule's. ``None`` (a grid
    without ``reading:``, read with the post-hoc rule): every run was made under no rule,
    so runs of a pre-registered grid are not read under the post-hoc rule once its
    ``reading:`` is deleted."""
    from training.runs import RunError

    wanted = rule.digest() if rule is not None else None
    wrong = {}
    for row in rows:
        if row["kind"] != "sft":
            continue
        config = Path(row["run_dir"]) / "config.yaml"
        made = (yaml.safe_load(config.read_text()) or {}).get("reading_rule") \
            if config.exists() else None
        if made != wanted:
            wrong[row["run_id"]] = made
    if wrong:
        runs = ", ".join(f"run {run} ({(made or 'no rule')[:12]})"
                         for run, made in sorted(wrong.items(), key=str))
        said = f"config's rule is {wanted[:12]}" if wanted else \
            "config states no rule (`reading:`)"
        raise RunError(f"the reading rule changed since these runs were made: the {said}, "
                       f"but {runs}; put the rule back, or run the grid again under the "
                       "new rule (its runs are new runs)")


POST_HOC = ReadingRule(
    trained_positions_only=False,
    contrasts={
        "length": Contrast(a=("label", "direct"), b=("label-padded", FORCED),
                           what="label-only vs the same answer after length-matched filler "
                                "(forced)"),
        "length, direct": Contrast(a=("label", "direct"), b=("label-padded", "direct"),
                                   what="the same, the filler model scored right after the "
                                        "prompt"),
        "weighting": Contrast(a=("rationale-weighted", "generate"),
                              b=("rationale-free", "generate"),
                              what="answer token up-weighted to label-only's share vs plain "
                                   "rationale SFT"),
        "answer-only loss": Contrast(a=("rationale-answer-only", "generate"),
                                     b=("rationale-free", "generate"),
                                     what="loss on the answer only vs on rationale and "
                                          "answer"),
        "answer-only loss, direct": Contrast(
            a=("rationale-answer-only", "direct"), b=("rationale-free", "direct"),
            what="the same, both scored right after the prompt (the answer-only model never "
                 "learns to write a rationale)"),
        "narrative": Contrast(a=("rationale-shuffled", FORCED), b=("rationale-free", FORCED),
                              what="rationale words shuffled vs in order (both forced)"),
        "narrative, direct": Contrast(a=("rationale-shuffled", "direct"),
                                      b=("rationale-free", "direct"),
                                      what="the same, both scored right after the prompt"),
        "answer first": Contrast(a=("answer-first", "direct"), b=("rationale-free", "generate"),
                                 what="answer then rationale vs rationale then answer"),
        "direct scoring": Contrast(a=("rationale-free", "direct"),
                                   b=("rationale-free", "generate"),
                                   what="the same rationale model scored directly vs after "
                                        "its rationale"),
        "sampled scoring": Contrast(a=("rationale-free", "sampled"),
                                    b=("rationale-free", "generate"),
                                    what="mean over sampled rationales vs the greedy one"),
        "multitask": Contrast(a=("multitask", "direct"), b=("label", "direct"),
                              what="predict/explain multitask vs label-only"),
    },
    alternatives={"length": "length, direct", "narrative": "narrative, direct",
                  "answer-only loss": "answer-only loss, direct"},
    explanations={
        "dilution of the answer's gradient by length": ["length", "weighting"],
        "next-token loss shifted onto rationale tokens": ["answer-only loss", "weighting"],
        "narrative plausibility vs discrimination (the study's)": ["narrative"],
        "output format biases the answer": ["answer first", "direct scoring"],
    })
