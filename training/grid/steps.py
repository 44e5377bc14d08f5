"""The steps of a grid shared by both runners (:mod:`.local`, :mod:`.ray`).

Each step is one unit of work a runner schedules: train a candidate (and score it on
validation when its cell is tuned), score a cell's chosen candidate on test, keep the
archive. The bookkeeping that says which candidates a cell trains and which it keeps
lives here too, so that both runners choose alike and write the same selection.
"""

from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.models import DatasetVersion, EvaluationResult, TrainingRun
from training import archive, runs
from training.evaluate import ScorerPool, evaluate_run
from training.fewshot_config import FewShotConfig
from training.grid.config import ExperimentGrid, validation_rank
from training.sft import train
from training.sft_config import SFTRunConfig

_result = runs.result_for

Score = tuple[tuple, int, SFTRunConfig]  # (rank key, run id, candidate)


def restore_archive(engine: Engine, grid: ExperimentGrid, say: Callable[[str], None]) -> None:
    if grid.archive:
        restored = archive.restore(engine, grid.archive, grid.runs_dir)
        say(f"archive {grid.archive}: {len(restored['restored'])} runs restored, "
            f"{len(restored['present'])} already here"
            + "".join(f"; skipped {s}" for s in restored["skipped"]))


def keep_archive(engine: Engine, grid: ExperimentGrid, run_ids: Collection[int]) -> None:
    """What is finished survives this machine (commit the archive folder): the runs the
    executor got back (``run_ids``; grids that share a dataset version keep their archives
    apart). Called by the executor after each step, never inside one: Ray tasks run steps
    concurrently, and one process (the driver) writes the archive."""
    if grid.archive:
        archive.save(engine, grid.archive, grid.dataset, run_ids=run_ids)


def score(engine: Engine, grid: ExperimentGrid, run_id: int, split: str,
          scoring: str | None, pool: ScorerPool, say: Callable[[str], None]
          ) -> EvaluationResult:
    """The run's stored result under the grid's evaluation settings, scored if missing
    (a run restored without its weights is retrained first)."""
    evaluation = grid.evaluate_config(split, scoring)
    with Session(engine) as session:
        result = _result(session, run_id, split, evaluation.settings_hash(), evaluation.scoring)
    if result is not None:
        return result
    retrain_if_weightless(engine, run_id, f"to score it on {split}", say)
    return evaluate_run(engine, str(run_id), evaluation, pool=pool, on_stage=say)


def retrain_if_weightless(engine: Engine, run_id: int, why: str,
                          say: Callable[[str], None]) -> bool:
    """Retrain a finished run whose adapter is gone (an archive restored without weights)
    before it is scored anew. Its identity is unchanged (checked before training); its
    folder and model cache are this machine's; ``force`` discards its stored results,
    which belonged to the weights that are gone, so each is scored again from the new
    weights when the grid asks for it.

    Returns whether it retrained. The retrained weights are not those its stored
    validation score came from, so a tuned cell scores it on validation again and chooses
    again before any test score (:func:`score_chosen`)."""
    with Session(engine) as session:
        run = session.get(TrainingRun, run_id)
        if not _weightless(run):
            return False
        stored = {k: v for k, v in run.config.items() if k != "cache_dir"}
        config = SFTRunConfig.from_stored(
            {**stored, "runs_dir": str(Path(run.run_dir).parent)})
        version = session.get(DatasetVersion, run.dataset_version_id)
        if config.identity(version.content_hash) != run.config_hash:
            raise runs.RunError(
                f"run {run_id} has no adapter in {run.run_dir}, and its stored config no "
                "longer gives its identity (made by another version of the trainer or with "
                "several processes?): it cannot be retrained as itself; its stored results "
                "stay usable")
    say(f"run {run_id} was restored without its weights; retraining it {why}")
    train(engine, config, on_stage=say, force=True)
    return True


def train_candidate(engine: Engine, grid: ExperimentGrid, cfg: SFTRunConfig, tuned: bool,
                    pool: ScorerPool, say: Callable[[str], None]) -> tuple[tuple, int]:
    """Train one candidate (reused when finished) and, when the cell is tuned, score it
    on validation; returns (its rank key, run id).

    A reused run restored without its weights is retrained *before* its validation score
    only when it lacks the validation score its cell ranks it by. Test scores are the
    choice's business (:func:`score_chosen`): a candidate that holds test scores from an
    earlier choice, which the cell's ranking has since moved away from, is not trained
    again for a test scoring it will never be given (on a fresh machine that retrain
    discarded its validation score too and could reopen a settled choice)."""
    run = train(engine, cfg, on_stage=say)
    with Session(engine) as session:
        missing = []
        for split, variant in grid.scores_needed(cfg.target, tuned=tuned,
                                                 chosen=False):
            evaluation = grid.evaluate_config(split, variant)
            if _result(session, run.id, split, evaluation.settings_hash(),
                       evaluation.scoring) is None:
                missing.append(f"{split} ({evaluation.scoring})")
    if missing:
        retrain_if_weightless(engine, run.id, f"for its missing {', '.join(missing)}", say)
    if not tuned:
        return (True, 0.0), run.id
    return _validation_rank(engine, grid, run.id, cfg.target, pool, say), run.id


def _validation_rank(engine: Engine, grid: ExperimentGrid, run_id: int, target: str,
                     pool: ScorerPool, say: Callable[[str], None]) -> tuple:
    """How a tuned cell ranks a candidate: valid first, then validation AUROC, in the
    scoring the grid selects on (:meth:`ExperimentGrid.selection_scoring`)."""
    val = score(engine, grid, run_id, "validation", grid.selection_scoring(target), pool,
                say)
    return validation_rank(val.metrics, val.auroc)


def score_chosen(engine: Engine, grid: ExperimentGrid, run_id: int, target: str,
                 tuned: bool, pool: ScorerPool, say: Callable[[str], None]) -> tuple | None:
    """The chosen candidate on test, in its own scoring and the grid's variants; None
    once it is scored.

    A chosen run restored without its weights that lacks one of these test scores is
    trained again first. In a tuned cell the cell chose it on a validation score of the
    weights that are gone, so the retrained run is scored on validation again and its new
    rank is returned *instead of* any test score: the cell ranks it anew
    (:meth:`.cells.CellBook.rerank`) and asks again for its choice, this run or another.
    The run keeps its new weights for the rest of the pass, so each candidate is
    retrained at most once and the choice settles; every run's stored scores, validation
    and test, then come from one set of weights, and the choice from the stored
    validation scores."""
    if retrain_due(engine, grid, run_id, target):
        retrain_if_weightless(engine, run_id, "to score it on test", say)
        if retrain_due(engine, grid, run_id, target):  # else the cell would ask forever
            raise runs.RunError(f"run {run_id} was retrained but its folder has no adapter "
                                "yet: it cannot be scored on test")
        if tuned:
            return _validation_rank(engine, grid, run_id, target, pool, say)
    for variant in [None, *grid.scorings_for(target)]:
        score(engine, grid, run_id, "test", variant, pool, say)
    return None


def retrain_due(engine: Engine, grid: ExperimentGrid, run_id: int, target: str) -> bool:
    """Whether scoring a chosen run on test must train it again first: it lacks one of
    its test scores and its weights (restored from an archive); its cell's choice may
    then change (:func:`score_chosen`)."""
    with Session(engine) as session:
        if not _weightless(session.get(TrainingRun, run_id)):
            return False
        tests = [grid.evaluate_config(split, variant) for split, variant in
                 grid.scores_needed(target, tuned=False, chosen=True)]
        return any(_result(session, run_id, "test", e.settings_hash(), e.scoring) is None
                   for e in tests)


def _weightless(run: TrainingRun) -> bool:
    """An SFT run whose folder has no adapter (restored from an archive without weights)."""
    return run.kind == "sft" and not (Path(run.run_dir) / "adapter").is_dir()


def chosen(scores: list[Score]) -> Score:
    """The best-ranked candidate: valid first, then validation AUROC; ties to the first."""
    return max(scores, key=lambda s: s[0])


def selection_entry(grid: ExperimentGrid, factors: dict, scores: list[Score],
                    tuned_on: str | None) -> dict:
    best = chosen(scores)
    return {**factors, "run_id": best[1], "learning_rate": best[2].learning_rate,
            "epochs": best[2].num_train_epochs, "tuned_on": tuned_on,
            "candidates": [s[1] for s in scores],
            "candidate_scores": [{"run_id": s[1], "learning_rate": s[2].learning_rate,
                                  "epochs": s[2].num_train_epochs, "valid": bool(s[0][0]),
                                  "validation_auroc": s[0][1] if tuned_on and s[0][1] >= 0
                                  else None}
                                 for s in scores],
            "extra_scorings": grid.scorings_for(factors["target"])}


def error_text(exc: BaseException) -> str:
    """The step's own exception (Ray wraps it in its ``cause``), as one line."""
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}"
    return text.strip().splitlines()[0][:500] if text.strip() else type(cause).__name__


def run_fewshot_scorings(engine: Engine, grid: ExperimentGrid, cfg: FewShotConfig,
                         pool: ScorerPool, say: Callable[[str], None]
                         ) -> tuple[int, list[str], list[tuple[str, str]]]:
    """A few-shot run in its own scoring, then the grid's other scorings of it (each
    reused when stored): its run id, the other scorings it has, and (scoring, error) for
    each that failed. The run's own failure raises; a failed other scoring leaves the
    run and its own result in the report."""
    from training.fewshot import run_fewshot, score_sampled

    result = run_fewshot(engine, cfg, pool=pool, on_stage=say)
    scored, failed = [], []
    for variant in grid.fewshot_scorings(cfg):
        try:
            score_sampled(engine, cfg, grid.fewshot_evaluate_config(cfg, variant),
                          pool=pool, on_stage=say)
        except Exception as exc:  # noqa: BLE001 - the run stays, this scoring is failed
            failed.append((variant, error_text(exc)))
        else:
            scored.append(variant)
    return result.training_run_id, scored, failed


def fewshot_entry(cfg: FewShotConfig, run_id: int, extra_scorings: list[str]) -> dict:
    return {"kind": "fewshot", "base_model": cfg.base_model, "k": cfg.k,
            "with_rationales": cfg.with_rationales, "seed": cfg.seed,
            "selection": cfg.selection, "run_id": run_id,
            "extra_scorings": list(extra_scorings)}
