"""A grid's configuration: the YAML of ``rationale-audit experiment run GRID.yaml``.

Kept to pydantic, the standard library and the light configuration modules it is typed
with, so a grid validates (the app's forms, ``--dry-run``, the budget) without loading
torch or the database: the run configurations it expands into
(:class:`training.sft.SFTRunConfig`, :class:`training.fewshot.FewShotConfig`) are
imported when a grid is expanded, not when it is read.
"""

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from annotation_db.command_config import CommandConfig
from generation.models_config import DEFAULT_MODEL
from training.evaluate_config import EvaluateConfig, lead_scoring
from training.fewshot_config import FewShotConfig
from training.reading_rule import ReadingRule
from training.sft_config import SFTRunConfig
from training.targets import TARGETS, Target


def validation_rank(metrics: dict | None, auroc: float | None) -> tuple[bool, float]:
    """How a tuned cell ranks a candidate by its validation result: valid first (its
    rationales reach their answer, and it is not degenerate: the report would leave it
    out), then AUROC (a missing AUROC last). The grid chooses by it
    (:mod:`training.grid.steps`) and the budget predicts that choice with it
    (:mod:`training.budget`). A result scored before 2026-12-07 records no degeneracy
    and ranks as it did; one scored on 2026-12-07 before the rule became the mean P(yes)
    (00:29-03:55 UTC) holds the earlier verdict, which agrees with the mean's on every
    stored validation result of the cpu scale."""
    metrics = metrics or {}
    valid = bool(metrics.get("valid", True)) and not metrics.get("degenerate")
    return valid, auroc if auroc is not None else -1.0


def tuning_key(factors: dict) -> tuple:
    """Cells that share a tuning choice: the same everything but the seed."""
    return (factors["base_model"], factors["target"], factors["train_size"], factors["lora_r"])


def candidates_for(grid: "ExperimentGrid", factors: dict, candidates: list[SFTRunConfig],
                   first_choice: dict[tuple, tuple[float, float]]
                   ) -> tuple[list[SFTRunConfig], str | None]:
    """The candidates a cell trains and how its choice is made: on validation, or
    (``tune_with_first_seed``) the first seed's choice reused."""
    variant = grid.selection_scoring(factors["target"])
    tuned_on = ("validation" + (f" ({variant})" if variant else "")
                if len(candidates) > 1 else None)
    key = tuning_key(factors)
    if tuned_on and grid.sft.tune_with_first_seed and key in first_choice:
        candidates = [c for c in candidates
                      if (c.learning_rate, c.num_train_epochs) == first_choice[key]]
        tuned_on = f"{tuned_on}, seed {grid.sft.seeds[0]}"
    return candidates, tuned_on


def waits_for_first_seed(grid: "ExperimentGrid", factors: dict, candidates: list) -> bool:
    """Whether a later seed's cell waits for the first seed's tuning choice."""
    return (len(candidates) > 1 and grid.sft.tune_with_first_seed
            and factors["seed"] != grid.sft.seeds[0])


class SFTFactors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[Target] = ["label", "rationale-free", "rationale-stepwise"]
    train_sizes: list[int | None] = [None]
    seeds: list[int] = [0]
    lora_ranks: list[int] = [16]
    learning_rates: list[float] = [2e-4]
    epochs: list[float] = [2.0]
    pair_targets: bool = Field(True, description="every target of a (size, seed) cell trains "
                                                 "on the same patients")
    pair_with: list[Target] | None = Field(
        None, description="the targets whose patients form that common pool (default: "
        "`targets`); a mechanism grid names the main grid's targets here to train on the "
        "main comparison's patients and reuse its runs")
    tune_with_first_seed: bool = Field(
        True, description="choose learning rate × epochs on validation with the first seed "
                          "and reuse that choice for the other seeds")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="any other SFTRunConfig field, for every run")


class FewShotFactors(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = [0, 4, 8]
    with_rationales: list[bool] = [True, False]
    seeds: list[int] = Field([0], description="demonstration draws (random selection); the "
                             "report gives mean ± SD over them")
    selections: list[Literal["random", "nearest"]] = Field(
        ["random"], description="random: one seeded set per draw; nearest: each query's most "
        "similar training records (TF-IDF), one run (it draws nothing)")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="any other FewShotConfig field")


class RunResources(BaseModel):
    """What each run asks a Ray cluster for (`experiment run --executor ray`)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0, description="1 on a GPU cluster: one run per GPU")
    memory_gb: float | None = Field(None, gt=0, description="RAM Ray reserves per run")


class ExperimentGrid(CommandConfig):
    """`rationale-audit experiment run GRID.yaml`."""

    ADDED_LATER = {"extra_scoring_targets": {}, "reading": None, "select_on": "own"}

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                      description="names the report folder <runs_dir>/experiments/<name>")
    dataset: str = Field(description="dataset version every run trains and tests on")
    base_models: list[str] = Field([DEFAULT_MODEL], description="model specs every cell is "
                                   "run on (bundled:…, a local folder or a hub id)")
    sft: SFTFactors | None = Field(SFTFactors(), description="the SFT factors crossed into "
                                   "cells (null: no SFT cells)")
    fewshot: FewShotFactors | None = Field(FewShotFactors(), description="the few-shot "
                                           "factors crossed into cells (null: none)")
    evaluation: EvaluateConfig = Field(
        default_factory=EvaluateConfig,
        description="how every run is scored (EvaluateConfig fields; the split is set per use)")
    extra_scorings: list[Literal["direct", "sampled", "prefilled"]] = Field(
        default_factory=list, description="scoring variants added on test for every selected "
        "model that writes a rationale before its answer (the cell's own scoring always "
        "runs and is the one compared in the main tables); prefilled goes to filler models "
        "(label-padded) only")
    extra_scoring_targets: dict[Literal["direct", "sampled", "prefilled"], list[Target]] = Field(
        default_factory=dict, description="a variant of extra_scorings given only to the "
        "models trained on these targets (e.g. the costly sampled variant for the one model "
        "a contrast reads); a variant not named here goes to every rationale-writing model")
    select_on: Literal["own", "primary"] = Field(
        "own", description="the validation score a tuned cell ranks its candidates by. own: "
        "each target's own scoring; primary: a rationale-writing model's sampled scoring "
        "where the grid adds it (extra_scorings), the score its test result is compared "
        "in, so every target is tuned on the score it is reported in")
    reading: ReadingRule | None = Field(
        None, description="the mechanism section's reading rule, stated before the runs: "
        "its hash, with the grid's scoring settings (evaluation, extra_scorings, "
        "extra_scoring_targets, select_on: the pre-registration), is in every SFT run's "
        "identity, the report refuses runs made under another, and the grid refuses to "
        "start over finished runs of its cells made under another unless the rule lists "
        "their digest under `amends` (training/reading_rule.py); unset: the first "
        "report's post-hoc rule")
    baseline: bool = Field(True, description="add the non-LLM reference models "
                                             "(structured features, TF-IDF, age alone), "
                                             "fitted on each cell's training patients")
    runs_dir: str = Field("runs", description="where run folders and the report folder go")
    resources: RunResources = Field(default_factory=RunResources,
                                    description="per run, when the runs are Ray tasks")
    archive: str | None = Field(
        None, description="a folder of finished runs carried between machines (small files "
        "that git can hold; see training/archive.py): restored into the database before the "
        "grid runs, and updated after every run and result")
    cache_dir: str | None = Field(None, description="where prepared models are kept "
                                  "(default $RATIONALE_AUDIT_CACHE_DIR or "
                                  "~/.cache/rationale-audit)")

    def sft_cells(self) -> list[tuple[dict, list["SFTRunConfig"]]]:
        """(cell factors, its tuning candidates) for every SFT cell of the grid."""
        if self.sft is None:
            return []
        cells = []
        for model, target, size, seed, rank in itertools.product(
                self.base_models, self.sft.targets, self.sft.train_sizes, self.sft.seeds,
                self.sft.lora_ranks):
            candidates = [SFTRunConfig(
                dataset=self.dataset, target=target, base_model=model, train_size=size,
                seed=seed, lora_r=rank, learning_rate=lr, num_train_epochs=epochs,
                paired_targets=self.paired_targets(),
                reading_rule=self.preregistration(),
                runs_dir=self.runs_dir, cache_dir=self.cache_dir, **self.sft.settings)
                for lr, epochs in itertools.product(self.sft.learning_rates, self.sft.epochs)]
            cells.append(({"kind": "sft", "base_model": model, "target": target,
                           "train_size": size, "seed": seed, "lora_r": rank}, candidates))
        return cells

    def paired_targets(self) -> list[str] | None:
        """The targets whose patients every run of a cell is drawn from (None: unpaired)."""
        if self.sft is None or not self.sft.pair_targets:
            return None
        pool = sorted(set(self.sft.pair_with or self.sft.targets))
        return pool if len(pool) > 1 or set(self.sft.targets) - set(pool) else None

    def fewshot_runs(self) -> list["FewShotConfig"]:

        if self.fewshot is None:
            return []
        # the grid's scoring settings, where few-shot has a field of the same meaning (its
        # seed draws the demonstrations and the split is its own)
        evaluation = {k: v for k, v in self.evaluation.model_dump().items()
                      if k in FewShotConfig.model_fields and k not in ("split", "seed")}
        out, seen = [], set()
        for model, k, with_r, seed, selection in itertools.product(
                self.base_models, self.fewshot.ks, self.fewshot.with_rationales,
                self.fewshot.seeds, self.fewshot.selections):
            if k == 0:  # no demonstrations: nothing to draw, select or show rationales of
                with_r, seed, selection = False, self.fewshot.seeds[0], "random"
            elif selection == "nearest":
                seed = self.fewshot.seeds[0]
            settings = {**evaluation, **self.fewshot.settings}
            if len(self.fewshot.selections) > 1 or selection != "random":
                settings["selection"] = selection
            key = (model, k, with_r, seed, settings.get("selection"))
            if key in seen:
                continue
            seen.add(key)
            out.append(FewShotConfig(dataset=self.dataset, base_model=model, k=k,
                                     with_rationales=with_r, seed=seed, runs_dir=self.runs_dir,
                                     cache_dir=self.cache_dir, **settings))
        return out

    def evaluate_config(self, split: str, scoring: str | None = None) -> EvaluateConfig:
        update = {"split": split, **({"scoring": scoring} if scoring else {})}
        return self.evaluation.model_copy(update=update)

    def fewshot_scorings(self, cfg: "FewShotConfig") -> list[str]:
        """The scorings a few-shot run gets beside its own: sampled rationales for one whose
        base model writes rationales, where the grid samples (and does not keep sampling
        to named SFT targets, ``extra_scoring_targets``)."""
        return ["sampled"] if (cfg.with_rationales and "sampled" in self.extra_scorings
                               and "sampled" not in self.extra_scoring_targets) else []

    def fewshot_evaluate_config(self, cfg: "FewShotConfig", scoring: str) -> EvaluateConfig:
        """How a few-shot run is scored under ``scoring`` (one of
        :meth:`fewshot_scorings`): as its own scoring, sampling as the grid's SFT runs do."""
        return cfg.evaluate_config(scoring, n_samples=self.evaluation.n_samples,
                                   sample_temperature=self.evaluation.sample_temperature)

    def scoring_settings(self) -> dict:
        """How each side a reading rule reads is scored, pre-registered with the rule:
        every scoring the grid makes (its own and ``extra_scorings``) with the evaluation
        settings that change its numbers (:meth:`EvaluateConfig.identity_data` without the
        split: sample count and temperature, seed, rationale cap, validity and degeneracy
        gates, engine...), which models get which variant (``extra_scoring_targets``) and
        how a tuned cell chooses (``select_on``)."""
        scorings = dict.fromkeys([self.evaluation.scoring, *self.extra_scorings])
        return {"scorings": {v: {k: x for k, x in self.evaluate_config(
                    "test", v).identity_data().items() if k != "split"} for v in scorings},
                "extra_scoring_targets": {v: sorted(t) for v, t in
                                          sorted(self.extra_scoring_targets.items())},
                "select_on": self.select_on}

    def preregistration(self) -> str | None:
        """The grid's pre-registration digest (its rule and :meth:`scoring_settings`),
        in every SFT run's identity; None without a rule."""
        return self.reading.preregistration(self.scoring_settings()) if self.reading \
            else None

    def own_scoring(self, target: str) -> str:
        """How the cell's own result of ``target`` is scored, as the report names it."""
        own = self.evaluation.scoring
        return TARGETS[target].scoring if own == "auto" else own

    def scorings_for(self, target: str) -> list[str]:
        """The extra scoring variants that apply to a model trained on ``target``."""
        if TARGETS[target].scoring != "generate":
            return []
        own = {"auto": "generate"}.get(self.evaluation.scoring, self.evaluation.scoring)
        return [v for v in self.extra_scorings if v != own
                and (v != "prefilled" or TARGETS[target].filler)
                and target in self.extra_scoring_targets.get(v, [target])]

    def selection_scoring(self, target: str) -> str | None:
        """The scoring variant a tuned cell of ``target`` ranks its candidates by on
        validation (None: the target's own scoring); see ``select_on``."""
        return lead_scoring(self.scorings_for(target)) if self.select_on == "primary" \
            else None

    def scores_needed(self, target: str, *, tuned: bool, chosen: bool
                      ) -> list[tuple[str, str | None]]:
        """(split, scoring variant) of each score the grid asks of a reused run of
        ``target``: its validation score in a tuned cell (every candidate); for the run
        its cell chooses (``chosen``), its test score in its own scoring and in
        each variant. A run without its weights that lacks one of them is trained again
        (:mod:`training.grid.steps`; costed so by :mod:`training.budget`)."""
        needed: list[tuple[str, str | None]] = (
            [("validation", self.selection_scoring(target))] if tuned else [])
        if chosen:
            needed += [("test", v) for v in [None, *self.scorings_for(target)]]
        return needed

    @field_validator("reading", mode="after")
    @classmethod
    def _own_copy_of_the_rule(cls, rule: ReadingRule | None) -> ReadingRule | None:
        """The grid binds its scoring settings to its own copy of the rule (a rule object
        given to several grids, or :data:`POST_HOC`, is never changed)."""
        return rule.with_scoring(None) if rule is not None else None

    @model_validator(mode="after")
    def _bind_scoring_to_the_rule(self):
        """What the report checks runs against (``reading.preregistration()``) is the
        grid's pre-registration; bound again whenever a field is assigned."""
        if self.reading is not None:
            self.reading._scoring = self.scoring_settings()
        return self

    @model_validator(mode="after")
    def _extra_scoring_targets(self):
        for variant, targets in self.extra_scoring_targets.items():
            if variant not in self.extra_scorings:
                raise ValueError(f"extra_scoring_targets names {variant!r}, which is not in "
                                 f"extra_scorings {self.extra_scorings}")
            if not targets:
                raise ValueError(f"extra_scoring_targets[{variant!r}] is empty; to run no "
                                 f"{variant} scoring, leave it out of extra_scorings")
            wrong = [t for t in targets if TARGETS[t].scoring != "generate"]
            if wrong:
                raise ValueError(f"extra_scoring_targets[{variant!r}]: {', '.join(wrong)} "
                                 "answer without writing a rationale first, so no scoring "
                                 "variant applies to them")
            unfilled = [t for t in targets if variant == "prefilled" and not TARGETS[t].filler]
            if unfilled:
                raise ValueError(f"extra_scoring_targets['prefilled']: {', '.join(unfilled)} "
                                 "write no filler (prefilled scoring writes in a filler "
                                 "model's filler; label-padded is one)")
            absent = [t for t in targets if self.sft is None or t not in self.sft.targets]
            if absent:
                raise ValueError(f"extra_scoring_targets[{variant!r}]: {', '.join(absent)} "
                                 "not among sft.targets")
        return self

    @model_validator(mode="after")
    def _contrasts_read_what_the_grid_makes(self):
        """Every side of the reading rule's contrasts is a (target, scoring) the grid
        produces: else the contrast would silently be neither read nor listed unread."""
        if not self.reading:
            return self
        made = set()
        for target in (self.sft.targets if self.sft else []):
            scorings = {self.own_scoring(target), *self.scorings_for(target)}
            made |= {(target, v) for v in scorings}
            if "generate" in scorings:
                made.add((target, "forced"))  # read from its generate result
        for name, contrast in self.reading.contrasts.items():
            for side in (contrast.a, contrast.b):
                if tuple(side) not in made:
                    raise ValueError(
                        f"reading.contrasts[{name!r}] reads {side[0]} scored {side[1]}, "
                        "which this grid does not make (add the target to sft.targets, or "
                        "the scoring to extra_scorings and extra_scoring_targets)")
        return self

    @model_validator(mode="after")
    def _seed_intervals_have_one_design(self):
        if self.reading and self.reading.interval == "seeds-then-patients" and self.sft:
            levels = len(self.base_models) * len(self.sft.train_sizes) * len(
                self.sft.lora_ranks)
            if levels > 1:
                raise ValueError(
                    "reading.interval seeds-then-patients draws a contrast's cells as seeds, "
                    "so the grid must vary only the seed: give one base model, training size "
                    f"and LoRA rank (it has {len(self.base_models)}, "
                    f"{len(self.sft.train_sizes)} and {len(self.sft.lora_ranks)})")
            if len(set(self.sft.seeds)) < 2:
                raise ValueError(
                    "reading.interval seeds-then-patients draws the seeds: give sft.seeds at "
                    f"least two distinct seeds (it has {len(set(self.sft.seeds))}); one seed "
                    "is read over the "
                    "patients only (interval: patients)")
        return self

    def size(self) -> dict[str, int]:
        cells = self.sft_cells()
        return {"sft_cells": len(cells), "sft_runs": sum(len(c) for _, c in cells),
                "fewshot_runs": len(self.fewshot_runs())}
