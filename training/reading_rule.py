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

``sides_must_learn`` (on for a pre-registered rule): a contrast is read only when each
of its sides has learned something: its seed-mean test AUROC, over the cells the contrast
reads, has a 95% interval above 0.5 (drawn as ``interval`` says; see
:func:`training.mechanism.side_auroc`). Otherwise it is listed unread, naming the side,
its AUROC and interval: a difference between a below-chance side and a chance-level one
says nothing about what either target does to a model that predicts (the first report
read "narrative, direct", 0.496 against 0.336, as support).

*Pre-registration.* What a grid fixes before its runs is the rule *and* how each side is
scored (the evaluation settings of every scoring it makes, which models get which extra
scoring, how a tuned cell chooses): :meth:`ReadingRule.preregistration`, the digest that
goes into every run's identity and that the report checks. A grid binds its scoring
settings to its rule (:class:`training.grid.config.ExperimentGrid`); a rule on its own
has no scoring settings, and its pre-registration digest is its :meth:`~ReadingRule.digest`.
A grid refuses to start when finished runs of its cells were made under another digest
(:func:`training.grid.experiment.check_preregistration`) unless the rule records the
earlier digest under ``amends``, which the report prints.

:data:`POST_HOC` is the rule of the first mechanism report, set after its grid ran; a
grid without ``reading:`` is read with it, and its report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

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
    sides_must_learn: bool = Field(
        default=True, description="read a contrast only when each side's seed-mean test "
        "AUROC (over the cells the contrast reads) has a 95% interval above 0.5, drawn as "
        "`interval` says; otherwise list it unread with the side, its AUROC and interval "
        "(off: the first report's rule, which read a difference whatever the sides scored)")
    amends: list[str] = Field(
        default_factory=list, description="earlier pre-registration digests (each its first "
        "12 or more hex digits) under which runs of this grid's cells were finished before "
        "this rule or its scoring settings changed: the grid then starts, its runs are made "
        "anew under the new digest, and the report says the rule was amended after runs "
        "existed")
    # how the grid that states the rule scores each side (ExperimentGrid binds it)
    _scoring: dict | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _amends_are_digests(self):
        import re

        wrong = [a for a in self.amends if not re.fullmatch(r"[0-9a-f]{12,64}", a)]
        if wrong:
            raise ValueError(f"reading.amends: {', '.join(map(repr, wrong))} is not a digest "
                             "(12 to 64 lower-case hex digits, as the refusal names it)")
        return self

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
        """The rule's own identity. A field added after rules were first hashed is left
        out at the value that reads as the rule did before it (``interval`` at patients,
        ``sides_must_learn`` off, no ``amends``), so such a rule keeps its hash."""
        exclude = {name for name, before in (("interval", "patients"),
                                             ("sides_must_learn", False), ("amends", []))
                   if getattr(self, name) == before}
        return stable_hash(self.model_dump(mode="json", exclude=exclude or None))

    def with_scoring(self, scoring: dict | None) -> ReadingRule:
        """A copy of the rule bound to how its grid scores each side
        (:meth:`training.grid.config.ExperimentGrid.scoring_settings`)."""
        bound = self.model_copy(deep=True)
        bound._scoring = scoring
        return bound

    def preregistration(self, scoring: dict | None = None) -> str:
        """The pre-registration digest: the rule and how each side is scored (``scoring``,
        else what the grid bound, :meth:`with_scoring`); what every run of the grid is
        made under and the report checks. Without scoring settings, the rule's digest."""
        scoring = self._scoring if scoring is None else scoring
        if scoring is None:
            return self.digest()
        return stable_hash({"reading_rule": self.digest(), "scoring": scoring})

    def amended(self, digest: str | None) -> bool:
        """Whether ``digest`` is one this rule records it amends."""
        return bool(digest) and any(digest.startswith(a) for a in self.amends)


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
    made under ``rule``'s pre-registration: the hash in its echoed config is the rule's
    and its grid's scoring settings' (:meth:`ReadingRule.preregistration`), so runs
    scored otherwise since are not read under the same rule. ``None`` (a grid without
    ``reading:``, read with the post-hoc rule): every run was made under no rule, so runs
    of a pre-registered grid are not read under the post-hoc rule once its ``reading:``
    is deleted."""
    from training.runs import RunError

    wanted = rule.preregistration() if rule is not None else None
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
        said = (f"config's pre-registration (rule and scoring settings) is {wanted[:12]}"
                if wanted else "config states no rule (`reading:`)")
        raise RunError(f"the reading rule or its scoring settings changed since these runs "
                       f"were made: the {said}, but {runs}; put the rule and settings back, "
                       "or run the grid again under the new rule (its runs are new runs)")


POST_HOC = ReadingRule(
    trained_positions_only=False,
    sides_must_learn=False,  # as the first report read it (its hash unchanged)
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
