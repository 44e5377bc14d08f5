"""A grid's runs as Ray tasks: the same steps as :func:`training.grid.run_grid`, in parallel.

Every SFT candidate (train it, score it on validation when its cell is tuned), every
chosen candidate's test scoring and every few-shot run is one Ray task asking for the
grid's ``resources`` (CPUs, GPUs, memory). The tasks open their own database engine and
scorers and write the same run folders and rows as the local executor: a re-run reuses
finished runs either way, and the report is the same. The driver keeps the order the
choices need: a cell is scored on test once all its candidates are in; a later seed that
reuses the first seed's choice starts once that choice is known.

A task that fails is reported with its error and takes only its own cell down (a tuned
cell short of a candidate would not have had the same tuning budget); the others run on.
With no address, a local Ray instance lives for the duration of the call.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from training.grid import (
    ExperimentGrid,
    candidates_for,
    chosen,
    fewshot_entry,
    keep_archive,
    restore_archive,
    score_chosen,
    selection_entry,
    train_candidate,
    tuning_key,
    waits_for_first_seed,
)


class Executor(BaseModel):
    """Where a grid's runs execute (`experiment run --executor`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = Field("local", description="local: one run after another "
                                          "in this process; ray: each run a Ray task")
    address: str | None = Field(None, description="a running Ray cluster (ray://host:10001 "
                                "or auto); none: a local Ray instance for this command")
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


def test_task(place: tuple[str, str], grid_data: dict, run_id: int, target: str) -> int:
    engine, say = _worker_env(place)
    grid = ExperimentGrid.model_validate(grid_data)
    pool = _pool(grid)
    try:
        score_chosen(engine, grid, run_id, target, pool, say)
    finally:
        pool.close()
    return run_id


def fewshot_task(place: tuple[str, str], grid_data: dict, cfg_data: dict) -> int:
    from training.evaluate import scorer_kind
    from training.fewshot import run_fewshot
    from training.fewshot_config import FewShotConfig

    engine, say = _worker_env(place)
    grid = ExperimentGrid.model_validate(grid_data)
    cfg = FewShotConfig.model_validate(cfg_data)
    pool = _pool(grid, scorer_kind(cfg.engine), cfg.batch_size)
    try:
        return run_fewshot(engine, cfg, pool=pool, on_stage=say).training_run_id
    finally:
        pool.close()


def ray_runner(executor: Executor) -> Callable[..., dict]:
    """The ``runner`` for :func:`training.grid.run_experiment` that ``executor`` names."""
    if executor.kind == "local":
        from training.grid import run_grid

        return run_grid
    return lambda engine, grid, **kwargs: run_grid_ray(engine, grid, executor, **kwargs)


def run_grid_ray(engine: Engine, grid: ExperimentGrid, executor: Executor, *,
                 on_stage: Callable[[str], None] | None = None,
                 on_run: Callable[[], None] | None = None) -> dict:
    """:func:`training.grid.run_grid` on Ray; the selection also lists failed cells."""
    import ray

    say = on_stage or (lambda _: None)
    tick = on_run or (lambda: None)
    restore_archive(engine, grid, say)
    url = engine.url.render_as_string(hide_password=False)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=executor.address, include_dashboard=False, log_to_driver=False)
    try:
        return _drive(ray, engine, (os.getcwd(), url), grid, executor, say, tick)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray, engine: Engine, place: tuple[str, str], grid: ExperimentGrid,
           executor: Executor, say: Callable[[str], None], tick: Callable[[], None]) -> dict:
    r = grid.resources
    options = {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "max_retries": 0,
               **({"memory": int(r.memory_gb * 2**30)} if r.memory_gb else {})}
    remote = {name: ray.remote(**options)(fn) for name, fn in (
        ("candidate", candidate_task), ("test", test_task), ("fewshot", fewshot_task))}
    grid_data = grid.model_dump(mode="json")
    cells = list(grid.sft_cells())
    state = [{"factors": f, "all": c, "candidates": None, "tuned_on": None, "scores": [],
              "left": 0, "entry": None, "error": None} for f, c in cells]
    first_choice: dict[tuple, tuple[float, float]] = {}
    queue: list[tuple] = []  # (what, payload) not yet submitted
    running: dict = {}  # ObjectRef -> (what, payload)

    def start_cell(i: int) -> None:
        cell = state[i]
        cell["candidates"], cell["tuned_on"] = candidates_for(grid, cell["factors"],
                                                              cell["all"], first_choice)
        cell["left"] = len(cell["candidates"])
        tuned = len(cell["candidates"]) > 1
        queue.extend(("candidate", (i, cfg, tuned)) for cfg in cell["candidates"])

    def waiting_on(i: int) -> list[int]:
        """Later seeds of cell ``i``'s tuning key still waiting for its choice."""
        key = tuning_key(state[i]["factors"])
        return [j for j, other in enumerate(state)
                if j != i and other["candidates"] is None and other["error"] is None
                and tuning_key(other["factors"]) == key]

    def fail_cell(i: int, error: str) -> None:
        cell = state[i]
        if cell["error"] is None:
            cell["error"] = error
            say(f"cell {_describe_cell(cell['factors'])} failed: {error}")
        for j in waiting_on(i):
            fail_cell(j, f"the first seed's cell failed ({error})")

    for i, cell in enumerate(state):
        if not waits_for_first_seed(grid, cell["factors"], cell["all"]):
            start_cell(i)
    fewshots = grid.fewshot_runs()
    fewshot_ids: dict[int, int] = {}
    failed_fewshot: list[dict] = []
    queue.extend(("fewshot", (n, cfg)) for n, cfg in enumerate(fewshots))

    def submit() -> None:
        limit = executor.max_concurrent or len(queue) + len(running)
        while queue and len(running) < limit:
            what, payload = queue.pop(0)
            if what == "candidate":
                i, cfg, tuned = payload
                ref = remote["candidate"].remote(place, grid_data, cfg.model_dump(mode="json"),
                                                 tuned)
            elif what == "test":
                i, run_id = payload
                ref = remote["test"].remote(place, grid_data, run_id,
                                            state[i]["factors"]["target"])
            else:
                _, cfg = payload
                ref = remote["fewshot"].remote(place, grid_data, cfg.model_dump(mode="json"))
            running[ref] = (what, payload)

    submit()
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        what, payload = running.pop(ref)
        try:
            value = ray.get(ref)
            error = None
        except Exception as exc:  # noqa: BLE001 - a failed task fails its cell, not the grid
            value, error = None, _error_text(exc)
        keep_archive(engine, grid)
        if what == "fewshot":
            n, cfg = payload
            if error:
                failed_fewshot.append({"kind": "fewshot", "k": cfg.k,
                                       "with_rationales": cfg.with_rationales,
                                       "seed": cfg.seed, "error": error})
                say(f"few-shot k={cfg.k} failed: {error}")
            else:
                fewshot_ids[n] = value
            tick()
        elif what == "candidate":
            i, cfg, _ = payload
            cell = state[i]
            tick()
            if error:
                fail_cell(i, error)
            else:
                rank, run_id = value
                cell["scores"].append((rank, run_id, cfg))
            cell["left"] -= 1
            if cell["left"] == 0 and cell["error"] is None:
                # candidates in the grid's order, as the local executor lists them
                order = {id(c): k for k, c in enumerate(cell["candidates"])}
                cell["scores"].sort(key=lambda s: order[id(s[2])])
                best = chosen(cell["scores"])
                queue.append(("test", (i, best[1])))
                f = cell["factors"]
                if len(cell["scores"]) > 1 and f["seed"] == grid.sft.seeds[0]:
                    first_choice[tuning_key(f)] = (best[2].learning_rate,
                                                   best[2].num_train_epochs)
                    for j in waiting_on(i):
                        start_cell(j)
        else:  # test scoring of a cell's choice
            i, _ = payload
            if error:
                fail_cell(i, error)
            else:
                state[i]["entry"] = selection_entry(grid, state[i]["factors"],
                                                    state[i]["scores"], state[i]["tuned_on"])
        submit()
    for i, cell in enumerate(state):  # a first seed that never gave a choice (all failed)
        if cell["entry"] is None and cell["error"] is None:
            fail_cell(i, "never started: its first seed's cell gave no choice")
    selected = [c["entry"] for c in state if c["entry"] is not None]
    selected += [fewshot_entry(cfg, fewshot_ids[n]) for n, cfg in enumerate(fewshots)
                 if n in fewshot_ids]
    failed = [{**c["factors"], "error": c["error"]} for c in state if c["error"]]
    return {"name": grid.name, "cells": selected, "failed": failed + failed_fewshot}


def _describe_cell(f: dict) -> str:
    return (f"{f['target']} size {f['train_size']} seed {f['seed']} r {f['lora_r']}")


def _error_text(exc: Exception) -> str:
    """The task's own exception (Ray wraps it), as one line."""
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}"
    return text.strip().splitlines()[0][:500] if text.strip() else type(cause).__name__
