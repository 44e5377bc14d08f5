"""The Ray runner: a grid's runs as Ray tasks, the same steps as :func:`.local.run_grid`.

Every SFT candidate (train it, score it on validation when its cell is tuned), every
chosen candidate's test scoring and every few-shot run is one Ray task asking for the
grid's ``resources`` (CPUs, GPUs, memory). The tasks open their own database engine and
scorers and write the same run folders and rows as the local executor: a re-run reuses
finished runs either way, and the report is the same. The driver keeps the order the
choices need: a cell is scored on test once all its candidates are in; a later seed that
reuses the first seed's choice starts once that choice is known (settled, when the chosen
run must be retrained for its test scores: :func:`.steps.score_chosen`).

The bookkeeping and the failure policy are the local runner's (:mod:`.cells`): a task
that fails takes only its own cell down (a tuned cell short of a candidate would not have
had the same tuning budget); the others run on. With no address, a local Ray instance
lives for the duration of the call. (Inside this module ``import ray`` is the Ray
package: imports are absolute.)
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from training.grid.cells import (
    CellBook,
    FailedCell,
    GridResult,
    fewshot_failure,
    fewshot_name,
)
from training.grid.config import ExperimentGrid
from training.grid.steps import (
    error_text,
    fewshot_entry,
    keep_archive,
    restore_archive,
    retrain_due,
    run_fewshot_scorings,
    score_chosen,
    train_candidate,
)


class Executor(BaseModel):
    """Where a grid's runs execute (`experiment run --executor`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = Field("local", description="local: one run after another "
                                          "in this process; ray: each run a Ray task")
    address: str | None = Field(None, description="a running Ray cluster (ray://host:10001, "
                                "or auto: $RAY_ADDRESS or this machine's latest ray start); "
                                "none: a new local Ray instance for this command")
    max_concurrent: int | None = Field(None, ge=1, description="at most this many tasks at "
                                       "once (default: as many as the resources allow)")


def _worker_env(place: tuple[str, str]) -> tuple[Engine, Callable[[str], None]]:
    """(workdir, database URL) of the driver: the grid's relative paths (runs/, exports/)
    mean the same in the task, which opens its own engine on the same database."""
    from annotation_db.session import make_engine

    workdir, url = place
    os.chdir(workdir)
    return make_engine(url), (lambda _: None)


def _pool(grid: ExperimentGrid, kind: str | None = None, batch_size: int | None = None):
    from training.evaluate import ScorerPool

    return ScorerPool(kind or grid.evaluation.engine, batch_size or grid.evaluation.batch_size,
                      max_lora_rank=max(grid.sft.lora_ranks) if grid.sft else 16,
                      server_url=None if kind else grid.evaluation.server_url)


def candidate_task(place: tuple[str, str], grid_data: dict, cfg_data: dict, tuned: bool):
    from training.sft_config import SFTRunConfig

    engine, say = _worker_env(place)
    grid = ExperimentGrid.model_validate(grid_data)
    pool = _pool(grid)
    try:
        return train_candidate(engine, grid, SFTRunConfig.model_validate(cfg_data), tuned,
                               pool, say)
    finally:
        pool.close()


def test_task(place: tuple[str, str], grid_data: dict, run_id: int, target: str,
              tuned: bool) -> tuple | None:
    """None once the run is scored on test; its new validation rank if it was retrained
    instead (see :func:`.steps.score_chosen`)."""
    engine, say = _worker_env(place)
    grid = ExperimentGrid.model_validate(grid_data)
    pool = _pool(grid)
    try:
        return score_chosen(engine, grid, run_id, target, tuned, pool, say)
    finally:
        pool.close()


def fewshot_task(place: tuple[str, str], grid_data: dict, cfg_data: dict
                 ) -> tuple[int, list[str], list[tuple[str, str]]]:
    from training.evaluate import scorer_kind
    from training.fewshot_config import FewShotConfig

    engine, say = _worker_env(place)
    grid = ExperimentGrid.model_validate(grid_data)
    cfg = FewShotConfig.model_validate(cfg_data)
    pool = _pool(grid, scorer_kind(cfg.engine), cfg.batch_size)
    try:
        return run_fewshot_scorings(engine, grid, cfg, pool, say)
    finally:
        pool.close()


def ray_runner(executor: Executor) -> Callable[..., GridResult]:
    """The ``runner`` for :func:`training.grid.experiment.run_experiment` that ``executor``
    names."""
    if executor.kind == "local":
        from training.grid.local import run_grid

        return run_grid
    return lambda engine, grid, **kwargs: run_grid_ray(engine, grid, executor, **kwargs)


def run_grid_ray(engine: Engine, grid: ExperimentGrid, executor: Executor, *,
                 on_stage: Callable[[str], None] | None = None,
                 on_run: Callable[[], None] | None = None) -> GridResult:
    """:func:`training.grid.local.run_grid` on Ray."""
    import ray

    say = on_stage or (lambda _: None)
    tick = on_run or (lambda: None)
    restore_archive(engine, grid, say)
    url = engine.url.render_as_string(hide_password=False)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address(executor), include_dashboard=False, log_to_driver=False)
    try:
        return _Driver(ray, engine, (os.getcwd(), url), grid, executor, say, tick).run()
    finally:
        if started_here:
            ray.shutdown()


def ray_address(executor: Executor) -> str:
    """What ``ray.init`` is given. No address means a new local instance, as documented:
    Ray's own default would join whatever cluster ``RAY_ADDRESS`` or the machine's last
    ``ray start`` names (even one long gone); ``auto`` asks for that explicitly."""
    return executor.address or "local"


def _remote_tasks(ray, grid: ExperimentGrid) -> dict:
    """The three task kinds, each asking for the grid's per-run resources."""
    r = grid.resources
    options = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "max_retries": 0,
               **({"memory": int(r.memory_gb * 2**30)} if r.memory_gb else {})}
    return {name: ray.remote(**options)(fn) for name, fn in (
        ("candidate", candidate_task), ("test", test_task), ("fewshot", fewshot_task))}


@dataclass
class _Driver:
    """Submits the grid's tasks as their inputs are known and folds each result into the
    shared :class:`CellBook`: candidates first, a cell's test scoring once its candidates
    are in, later seeds once their first seed's choice is made."""

    ray: object
    engine: Engine
    place: tuple[str, str]
    grid: ExperimentGrid
    executor: Executor
    say: Callable[[str], None]
    tick: Callable[[], None]
    queue: list[tuple] = field(default_factory=list)  # (what, payload) not yet submitted
    running: dict = field(default_factory=dict)  # ObjectRef -> (what, payload)
    fewshot_entries: dict[int, dict] = field(default_factory=dict)
    fewshot_failures: list[FailedCell] = field(default_factory=list)

    def run(self) -> GridResult:
        self.remote = _remote_tasks(self.ray, self.grid)
        self.grid_data = self.grid.model_dump(mode="json")
        self.book = CellBook(self.grid, self.say)
        for i in self.book.ready():
            self._start_cell(i)
        self.fewshots = self.grid.fewshot_runs()
        self.queue.extend(("fewshot", (n, cfg)) for n, cfg in enumerate(self.fewshots))
        self._submit()
        while self.running:
            [ref], _ = self.ray.wait(list(self.running), num_returns=1)
            what, payload = self.running.pop(ref)
            try:
                value, error = self.ray.get(ref), None
            except Exception as exc:  # noqa: BLE001 - a failed task fails its cell, not the grid
                value, error = None, error_text(exc)
            {"fewshot": self._fewshot_done, "candidate": self._candidate_done,
             "test": self._test_done}[what](payload, value, error)
            keep_archive(self.engine, self.grid, self.book.run_ids() | {
                entry["run_id"] for entry in self.fewshot_entries.values()})
            self._submit()
        entries = [self.fewshot_entries[n] for n in sorted(self.fewshot_entries)]
        return self.book.result(entries, self.fewshot_failures)

    def _start_cell(self, i: int) -> None:
        candidates = self.book.start(i)
        tuned = len(candidates) > 1
        self.queue.extend(("candidate", (i, cfg, tuned)) for cfg in candidates)

    def _submit(self) -> None:
        limit = self.executor.max_concurrent or len(self.queue) + len(self.running)
        while self.queue and len(self.running) < limit:
            what, payload = self.queue.pop(0)
            if what == "candidate":
                i, cfg, tuned = payload
                ref = self.remote["candidate"].remote(self.place, self.grid_data,
                                                      cfg.model_dump(mode="json"), tuned)
            elif what == "test":
                i, run_id = payload
                cell = self.book.cells[i]
                ref = self.remote["test"].remote(self.place, self.grid_data, run_id,
                                                 cell.factors["target"], cell.tuned)
            else:
                _, cfg = payload
                ref = self.remote["fewshot"].remote(self.place, self.grid_data,
                                                    cfg.model_dump(mode="json"))
            self.running[ref] = (what, payload)

    def _fewshot_done(self, payload: tuple, value: tuple | None, error: str | None) -> None:
        n, cfg = payload
        if error:
            self.fewshot_failures.append(fewshot_failure(cfg, error))
            self.say(f"{fewshot_name(cfg)} failed: {error}")
        else:
            run_id, scored, failed = value
            self.fewshot_entries[n] = fewshot_entry(cfg, run_id, scored)
            for variant, variant_error in failed:
                self.fewshot_failures.append(fewshot_failure(cfg, variant_error, variant))
                self.say(f"{fewshot_name(cfg)}, {variant} scoring failed: {variant_error}")
        self.tick()

    def _candidate_done(self, payload: tuple, value: tuple | None, error: str | None) -> None:
        i, cfg, _ = payload
        self.tick()
        if error:
            self.book.fail(i, error)
        rank, run_id = value if value is not None else (None, None)
        if self.book.trained(i, cfg, rank, run_id):
            best, unblocked = self.book.choose(i)
            self.queue.append(("test", (i, best)))
            # a choice that must be retrained for its test scores may change: the later
            # seeds wait for it to settle
            if not retrain_due(self.engine, self.grid, best, self.book.cells[i].factors[
                    "target"]):
                for j in unblocked:
                    self._start_cell(j)

    def _test_done(self, payload: tuple, rank: tuple | None, error: str | None) -> None:
        i, run_id = payload
        if error:
            self.book.fail(i, error)  # the choice stands for the later seeds
        elif rank is not None:  # retrained and ranked anew: score the cell's choice now
            self.queue.append(("test", (i, self.book.rerank(i, run_id, rank))))
            return
        else:
            self.book.scored(i)
        for j in self.book.choose(i)[1]:  # later seeds that waited for the choice to settle
            self._start_cell(j)
