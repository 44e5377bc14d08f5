"""The SFT cells of a running grid and the one failure policy both runners follow.

:class:`CellBook` is the bookkeeping of a grid's SFT cells as their candidates come in,
in whatever order a runner finishes them: which candidates a cell trains (all of them,
or the first seed's choice), which one it keeps, which later seeds that choice unblocks,
and which cells failed. The local runner feeds it one step after another, the Ray
runner as tasks return; the selection and the failures are the same either way.

A failed step fails its own cell only, and every later seed waiting for that cell's
tuning choice with it (they would not have had the same tuning budget); the other cells
run on. :class:`GridResult` lists the kept runs and the failed cells with their error.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from training.fewshot_config import FewShotConfig
from training.grid.config import (
    ExperimentGrid,
    candidates_for,
    tuning_key,
    waits_for_first_seed,
)
from training.grid.steps import Score, chosen, selection_entry
from training.sft_config import SFTRunConfig


@dataclass(frozen=True)
class FailedCell:
    """A cell (or few-shot run) left out of the grid's results, and why."""

    factors: dict
    error: str

    def as_dict(self) -> dict:
        """Its entry in ``selection.json``'s ``failed`` list."""
        return {**self.factors, "error": self.error}


@dataclass(frozen=True)
class GridResult:
    """What a runner returns: every kept run's selection entry, then the failures."""

    name: str
    cells: list[dict]
    failed: list[FailedCell] = field(default_factory=list)

    def selection(self) -> dict:
        """The ``selection.json`` a report is made from (``failed`` only when some did)."""
        out: dict = {"name": self.name, "cells": self.cells}
        if self.failed:
            out["failed"] = [f.as_dict() for f in self.failed]
        return out


def fewshot_name(cfg: FewShotConfig) -> str:
    """A few-shot run as a progress line names it (k, rationales, selection, draw)."""
    return (f"few-shot k={cfg.k} {'with' if cfg.with_rationales else 'without'} rationales"
            + ("" if cfg.k == 0 else f", {cfg.selection}") + f", seed {cfg.seed}")


def fewshot_failure(cfg: FewShotConfig, error: str, scoring: str | None = None
                    ) -> FailedCell:
    """A few-shot run that failed, or (``scoring``) one of its other scorings."""
    return FailedCell({"kind": "fewshot", "target": cfg.target, "k": cfg.k,
                       "with_rationales": cfg.with_rationales, "seed": cfg.seed,
                       "selection": cfg.selection,
                       **({"scoring": scoring} if scoring else {})}, error)


def describe_cell(factors: dict) -> str:
    return (f"{factors['target']} size {factors['train_size']} seed {factors['seed']} "
            f"r {factors['lora_r']}")


@dataclass
class Cell:
    """One SFT cell as it runs: its candidates, their scores, its entry or its error."""

    factors: dict
    every_candidate: list[SFTRunConfig]
    candidates: list[SFTRunConfig] | None = None  # None: not started
    tuned_on: str | None = None
    scores: list[Score] = field(default_factory=list)
    left: int = 0
    entry: dict | None = None
    error: str | None = None

    @property
    def tuned(self) -> bool:
        return self.candidates is not None and len(self.candidates) > 1


class CellBook:
    """The SFT cells of ``grid``, in the grid's order; see the module docstring."""

    def __init__(self, grid: ExperimentGrid, say: Callable[[str], None]):
        self.grid, self.say = grid, say
        self.cells = [Cell(f, c) for f, c in grid.sft_cells()]
        self.first_choice: dict[tuple, tuple[float, float]] = {}

    def ready(self) -> list[int]:
        """The cells that can start now: all but later seeds waiting for a choice."""
        return [i for i, cell in enumerate(self.cells)
                if not waits_for_first_seed(self.grid, cell.factors, cell.every_candidate)]

    def start(self, i: int) -> list[SFTRunConfig]:
        """Cell ``i``'s candidates to train (the first seed's choice when there is one)."""
        cell = self.cells[i]
        cell.candidates, cell.tuned_on = candidates_for(self.grid, cell.factors,
                                                        cell.every_candidate,
                                                        self.first_choice)
        cell.left = len(cell.candidates)
        return cell.candidates

    def trained(self, i: int, cfg: SFTRunConfig, rank: tuple | None, run_id: int | None
                ) -> bool:
        """A candidate is in (``rank`` None: it failed); True when its cell is now
        complete and not failed, so its choice can be scored on test."""
        cell = self.cells[i]
        if rank is not None:
            cell.scores.append((rank, run_id, cfg))
        cell.left -= 1
        return cell.left == 0 and cell.error is None

    def run_ids(self) -> set[int]:
        """Every run a candidate of a cell came back with (trained or reused)."""
        return {run_id for cell in self.cells for _, run_id, _ in cell.scores
                if run_id is not None}

    def choose(self, i: int) -> tuple[int, list[int]]:
        """Cell ``i``'s chosen run, and the later seeds its choice lets start."""
        cell = self.cells[i]
        order = {id(c): k for k, c in enumerate(cell.candidates)}  # the grid's order
        cell.scores.sort(key=lambda s: order[id(s[2])])
        best = chosen(cell.scores)
        unblocked = []
        if len(cell.scores) > 1 and cell.factors["seed"] == self.grid.sft.seeds[0]:
            self.first_choice[tuning_key(cell.factors)] = (best[2].learning_rate,
                                                           best[2].num_train_epochs)
            unblocked = self._waiting_on(i)
        return best[1], unblocked

    def rerank(self, i: int, run_id: int, rank: tuple) -> int:
        """A candidate of cell ``i`` was scored on validation anew (retrained: its weights
        had not been archived); its rank is replaced, and the cell's choice returned."""
        cell = self.cells[i]
        cell.scores = [(rank if rid == run_id else r, rid, cfg) for r, rid, cfg in cell.scores]
        return self.choose(i)[0]

    def scored(self, i: int) -> None:
        """Cell ``i``'s choice is scored on test: the cell is done."""
        cell = self.cells[i]
        cell.entry = selection_entry(self.grid, cell.factors, cell.scores, cell.tuned_on)

    def fail(self, i: int, error: str) -> None:
        """Cell ``i`` failed, and with it every later seed waiting for its choice (none
        once the choice is made: a cell that fails on test leaves it to the others)."""
        cell = self.cells[i]
        if cell.error is None:
            cell.error = error
            self.say(f"cell {describe_cell(cell.factors)} failed: {error}")
        if tuning_key(cell.factors) in self.first_choice:
            return
        for j in self._waiting_on(i):
            self.fail(j, f"the first seed's cell failed ({error})")

    def failed(self, i: int) -> bool:
        return self.cells[i].error is not None

    def result(self, fewshot_entries: list[dict], fewshot_failures: list[FailedCell]
               ) -> GridResult:
        """The grid's result; a cell that never started (its first seed gave no choice)
        is failed here."""
        for i, cell in enumerate(self.cells):
            if cell.entry is None and cell.error is None:
                self.fail(i, "never started: its first seed's cell gave no choice")
        return GridResult(
            self.grid.name,
            [c.entry for c in self.cells if c.entry is not None] + fewshot_entries,
            [FailedCell(c.factors, c.error) for c in self.cells if c.error]
            + fewshot_failures)

    def _waiting_on(self, i: int) -> list[int]:
        """Later seeds of cell ``i``'s tuning key not started and not failed."""
        key = tuning_key(self.cells[i].factors)
        return [j for j, other in enumerate(self.cells)
                if j != i and other.candidates is None and other.error is None
                and tuning_key(other.factors) == key]
