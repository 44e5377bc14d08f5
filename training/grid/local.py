"""The local runner: a grid's runs one after another in this process.

The same steps (:mod:`.steps`) and the same bookkeeping and failure policy
(:mod:`.cells`) as the Ray runner (:mod:`.ray`): a step that raises fails its own cell
and the others run on.
"""

from collections.abc import Callable

from sqlalchemy.engine import Engine

from training import runs
from training.evaluate import ScorerPool, scorer_kind
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
    run_fewshot_scorings,
    score_chosen,
    train_candidate,
)


def run_grid(engine: Engine, grid: ExperimentGrid, *,
             on_stage: Callable[[str], None] | None = None,
             on_run: Callable[[], None] | None = None) -> GridResult:
    """Train and score every cell (skipping what is done), one run after another in this
    process; return the selected runs and the failed cells. (:mod:`training.grid.ray`
    runs the same steps as Ray tasks.)

    A cell with several learning-rate × epochs candidates scores each on the
    validation split and only the chosen one on test; with ``tune_with_first_seed``
    the other seeds train only the first seed's choice.
    """
    from training.sft import process_group

    if process_group()[1] > 1:
        raise runs.RunError("a grid runs in one process (it trains, then scores, each run in "
                            "turn); data-parallel training is for `train sft` under "
                            "`accelerate launch`")
    say = on_stage or (lambda _: None)
    tick = on_run or (lambda: None)
    pool = ScorerPool(grid.evaluation.engine, grid.evaluation.batch_size,
                      max_lora_rank=max(grid.sft.lora_ranks) if grid.sft else 16,
                      server_url=grid.evaluation.server_url)
    # few-shot scores the base model: the SFT engine serves it when the kind is the same
    # (on CPU it loads the base weights back in place)
    pools: dict[str, ScorerPool] = {pool.kind: pool}
    restore_archive(engine, grid, say)
    book = CellBook(grid, say)
    try:
        for i in range(len(book.cells)):
            if not book.failed(i):
                _run_cell(engine, grid, book, i, pool, say, tick)
        entries, failures = _run_fewshots(engine, grid, pools, say, tick)
    finally:
        for open_pool in pools.values():  # the SFT pool is one of them
            open_pool.close()
    return book.result(entries, failures)


def _run_cell(engine: Engine, grid: ExperimentGrid, book: CellBook, i: int,
              pool: ScorerPool, say: Callable[[str], None], tick: Callable[[], None]) -> None:
    """Cell ``i``'s candidates, then its choice on test; a step that raises fails the
    cell (its first seed's cell comes first in the grid's order, so a choice it waits
    for is known or its failure already recorded)."""
    candidates = book.start(i)
    complete = False
    for cfg in candidates:
        try:
            rank, run_id = train_candidate(engine, grid, cfg, len(candidates) > 1, pool, say)
        except Exception as exc:  # noqa: BLE001 - a failed run fails its cell, not the grid
            book.fail(i, error_text(exc))
            rank = run_id = None
        complete = book.trained(i, cfg, rank, run_id)
        keep_archive(engine, grid, book.run_ids())
        tick()
        if book.failed(i):  # a tuned cell short of a candidate is not kept
            return
    if not complete:
        return
    best, _ = book.choose(i)
    cell = book.cells[i]
    try:
        # a chosen run retrained for its test scores comes back ranked anew on validation
        while (rank := score_chosen(engine, grid, best, cell.factors["target"], cell.tuned,
                                    pool, say)) is not None:
            best = book.rerank(i, best, rank)
    except Exception as exc:  # noqa: BLE001 - as above
        book.fail(i, error_text(exc))
    else:
        book.scored(i)
    keep_archive(engine, grid, book.run_ids())


def _run_fewshots(engine: Engine, grid: ExperimentGrid, pools: dict[str, ScorerPool],
                  say: Callable[[str], None], tick: Callable[[], None]
                  ) -> tuple[list[dict], list[FailedCell]]:
    """Every few-shot run of the grid: the entries of those that finished, the failures."""
    entries, failures = [], []
    for cfg in grid.fewshot_runs():
        kind = scorer_kind(cfg.engine)
        if kind not in pools:
            pools[kind] = ScorerPool(kind, cfg.batch_size)
        try:
            run_id, scored, failed = run_fewshot_scorings(engine, grid, cfg, pools[kind],
                                                          say)
        except Exception as exc:  # noqa: BLE001 - as above
            failures.append(fewshot_failure(cfg, error_text(exc)))
            say(f"{fewshot_name(cfg)} failed: {failures[-1].error}")
        else:
            entries.append(fewshot_entry(cfg, run_id, scored))
            for variant, error in failed:
                failures.append(fewshot_failure(cfg, error, variant))
                say(f"{fewshot_name(cfg)}, {variant} scoring failed: {error}")
        keep_archive(engine, grid, [entry["run_id"] for entry in entries])
        tick()
    return entries, failures
