"""Few-shot prompting with audited demonstrations, scored like a trained model.

Demonstrations come from the version's ``fewshot_pool`` (approved rationales of
training patients only; never the test split). ``k`` of them are chosen,
balanced by label:

- ``random``: one seeded set shared by every query (so vLLM's prefix cache
  reuses the demonstrations across queries);
- ``nearest``: per query, the most similar training records (TF-IDF cosine over
  the rendered history), the nearest ``k/2`` of each label.

Each demonstration is a user turn (the same question the chat views ask) and an
assistant turn: the audited rationale then ``Final answer: yes|no`` (with
rationales) or the answer line alone (without). With rationales, the model
writes its own rationale before the label is scored; without, the label is
scored directly. The demonstration ids used for every query are kept in
``demonstrations.jsonl``. A finished run with rationales can also be scored by sampled
rationales (:func:`score_sampled`), stored beside its own result, as a grid that samples
its SFT rationale targets asks.
"""

import json
import random
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.export import get_version
from annotation_db.models import EvaluationResult, RunStatus
from annotation_db.provenance import echo_config
from annotation_db.student_task import assistant_text, fewshot_messages, history_of
from training import runs
from training.data import DataError, read_view
from training.evaluate import (
    Scored,
    ScorerPool,
    judge_validity,
    rationale_cap,
    score_rows,
    summarize,
    write_outputs,
)
from training.evaluate_config import EvaluateConfig
from training.fewshot_config import FewShotConfig


def _balanced(candidates: list[dict], k: int, order: list[int]) -> list[dict]:
    """Up to k demonstrations alternating yes/no, taken in ``order`` of preference."""
    by_label = {0: [candidates[i] for i in order if candidates[i]["label"] == 0],
                1: [candidates[i] for i in order if candidates[i]["label"] == 1]}
    chosen: list[dict] = []
    turn = candidates[order[0]]["label"] if order else 1  # the most preferred comes first
    while len(chosen) < k and (by_label[0] or by_label[1]):
        if not by_label[turn]:
            turn = 1 - turn
        chosen.append(by_label[turn].pop(0))
        turn = 1 - turn
    return chosen


def choose_demonstrations(pool: list[dict], queries: list[dict], config: FewShotConfig
                          ) -> list[list[dict]]:
    """The demonstrations of every query, in prompt order."""
    if config.k == 0:
        return [[] for _ in queries]
    if len({row["label"] for row in pool}) < 2 or len(pool) < config.k:
        raise DataError(f"the few-shot pool has {len(pool)} {config.rationale_format} "
                        f"demonstrations ({sorted({r['label'] for r in pool})} labels); "
                        f"k={config.k} needs at least k with both labels")
    if config.selection == "random":
        order = list(range(len(pool)))
        random.Random(config.seed).shuffle(order)
        shared = _balanced(pool, config.k, order)
        return [shared for _ in queries]
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z0-9.]+", sublinear_tf=True)
    pool_matrix = vectorizer.fit_transform([row["history"] for row in pool])
    # history against history: the query's user turn less its fixed intro and question
    query_matrix = vectorizer.transform([history_of(q["prompt"][-1]["content"])
                                         for q in queries])
    similarity = (query_matrix @ pool_matrix.T).toarray()
    # nearest first; the most similar demonstration goes last, next to the query
    return [list(reversed(_balanced(pool, config.k, list((-row).argsort(kind="stable")))))
            for row in similarity]


def conversation(query: dict, demonstrations: list[dict], with_rationales: bool) -> list[dict]:
    """The query's prompt with its demonstrations before it (see ``student_task``)."""
    return fewshot_messages(query["prompt"], demonstrations, with_rationales)


def _prompts(version, config: FewShotConfig) -> tuple[list[dict], list[dict], list[list[dict]]]:
    """The scored patients, the demonstration pool and each patient's demonstrations."""
    queries = read_view(version, "label_only", config.split)
    if config.limit:
        queries = queries[:config.limit]
    demo_pool = [row for row in read_view(version, "fewshot_pool", "train")
                 if row["format"] == config.rationale_format]
    return queries, demo_pool, choose_demonstrations(demo_pool, queries, config)


def _score(config: FewShotConfig, evaluation: EvaluateConfig, pool: ScorerPool,
           queries: list[dict], demo_pool: list[dict], demos: list[list[dict]],
           stream: str) -> tuple[Scored, dict]:
    """Score the patients with their demonstrations as ``evaluation`` says; the scored
    rows and their metrics."""
    from generation.models import resolve_model

    conversations = [conversation(q, d, config.with_rationales)
                     for q, d in zip(queries, demos, strict=True)]
    model = resolve_model(config.base_model, cache_dir=config.cache_dir)
    scorer = pool.scorer(model, None)
    mode = ("sampled" if evaluation.scoring == "sampled" else "rationale") \
        if config.with_rationales else "direct"
    cap = rationale_cap(scorer.tokenizer, [
        assistant_text(d["label"], d["rationale"]) for d in demo_pool],
        config.max_rationale_tokens) if mode != "direct" else None
    scored = score_rows(scorer, queries, mode, cap["cap"] if cap else 0,
                        conversations=conversations, n_samples=evaluation.n_samples,
                        temperature=evaluation.sample_temperature, seed=evaluation.seed,
                        stream=stream)
    metrics = summarize(scored, evaluation)
    if cap:
        metrics["rationale_token_cap"] = cap
        judge_validity(metrics, config.min_reached_answer)
    metrics.update(engine=pool.kind, k=config.k, with_rationales=config.with_rationales,
                   selection=config.selection)
    return scored, metrics


def run_fewshot(engine: Engine, config: FewShotConfig, *, pool: ScorerPool | None = None,
                on_stage: Callable[[str], None] | None = None, force: bool = False
                ) -> EvaluationResult:
    """Score the split with demonstrations; a finished identical run is reused."""
    say = on_stage or (lambda _: None)
    with Session(engine) as session:
        version = get_version(session, config.dataset)
        config_hash = config.identity(version.content_hash)
        existing = runs.get_run(session, config_hash)
        if existing is not None and existing.status == RunStatus.finished and not force:
            result = runs.result_for(session, existing.id, config.split)
            if result is not None:
                say(f"reusing finished few-shot run {existing.id}")
                return result
        run_dir = runs.run_folder(config.runs_dir, "fewshot", config.target, config_hash)
        run = runs.begin(session, kind="fewshot", target=config.target,
                         base_model=config.base_model, config=config.model_dump(mode="json"),
                         config_hash=config_hash, run_dir=run_dir,
                         dataset_version_id=version.id)
        try:
            echo_config(config, run_dir, "train fewshot")
            queries, demo_pool, demos = _prompts(version, config)
            with (run_dir / "demonstrations.jsonl").open("w") as handle:
                for query, chosen in zip(queries, demos, strict=True):
                    handle.write(json.dumps({"id": query["id"],
                                             "demonstrations": [d["id"] for d in chosen]}) + "\n")
            pool = pool or ScorerPool(config.engine, config.batch_size)
            say(f"scoring {len(queries)} {config.split} patients, k={config.k} "
                f"({'with' if config.with_rationales else 'without'} rationales, {pool.kind})")
            # sampled scoring is stored beside this one (score_sampled); the own scoring
            # draws nothing, so its stream is never read
            scored, metrics = _score(config, config.evaluate_config(), pool, queries,
                                     demo_pool, demos, config_hash)
            metrics["dataset"] = {"version": version.name,
                                  "content_sha256": version.content_hash}
            csv_path = write_outputs(Path(run_dir) / "eval" / config.split, scored, metrics)
            result = runs.record_evaluation(session, run, split=config.split, metrics=metrics,
                                            predictions_path=csv_path)
        except BaseException as exc:
            runs.fail(session, run, exc)
            raise
        runs.finish(session, run)
        session.refresh(result)
        return result


def score_sampled(engine: Engine, config: FewShotConfig, evaluation: EvaluateConfig, *,
                  pool: ScorerPool | None = None,
                  on_stage: Callable[[str], None] | None = None) -> EvaluationResult:
    """The finished few-shot run of ``config`` scored by sampled rationales
    (``evaluation``, from :meth:`FewShotConfig.evaluate_config`), stored beside its own
    result under scoring ``sampled``; a stored result made with the same settings is
    reused. The demonstrations are those of its own scoring (the same seeded choice,
    checked against its ``demonstrations.jsonl``), and each patient samples from its own
    stream (the run's identity and the patient), as SFT runs' sampled scores do."""
    say = on_stage or (lambda _: None)
    if evaluation.scoring != "sampled" or not config.with_rationales:
        raise runs.RunError("only a few-shot run with rationales is scored by sampled "
                            "rationales")
    with Session(engine) as session:
        version = get_version(session, config.dataset)
        run = runs.get_run(session, config.identity(version.content_hash))
        if run is None or run.status != RunStatus.finished:
            raise runs.RunError(f"few-shot {config.target} (seed {config.seed}, "
                                f"{config.selection}) has no finished run to score; run it "
                                "first")
        stored = runs.result_for(session, run.id, evaluation.split,
                                 evaluation.settings_hash(), evaluation.scoring)
        if stored is not None:
            say(f"reusing few-shot run {run.id}'s sampled scores")
            return stored
        queries, demo_pool, demos = _prompts(version, config)
        _check_demonstrations(Path(run.run_dir), queries, demos)
        pool = pool or ScorerPool(config.engine, config.batch_size)
        say(f"scoring {len(queries)} {config.split} patients with few-shot run {run.id}, "
            f"{evaluation.n_samples} sampled rationales each ({pool.kind})")
        folder = Path(run.run_dir) / "eval" / f"{config.split}-sampled"
        echo_config(evaluation, folder, f"evaluate fewshot {run.id}")
        scored, metrics = _score(config, evaluation, pool, queries, demo_pool, demos,
                                 run.config_hash)
        metrics["scoring"] = {"requested": "sampled", "mode": "sampled",
                              "n_samples": evaluation.n_samples,
                              "temperature": evaluation.sample_temperature}
        metrics["settings_hash"] = evaluation.settings_hash()
        metrics["dataset"] = {"version": version.name, "content_sha256": version.content_hash}
        csv_path = write_outputs(folder, scored, metrics)
        return runs.record_evaluation(session, run, split=evaluation.split, metrics=metrics,
                                      predictions_path=csv_path, scoring="sampled")


def _check_demonstrations(run_dir: Path, queries: list[dict], demos: list[list[dict]]
                          ) -> None:
    """Refuse to score a run again with demonstrations other than those it recorded."""
    path = run_dir / "demonstrations.jsonl"
    if not path.is_file():
        return  # restored from an archive without it: the choice is seeded, so the same
    recorded = {row["id"]: row["demonstrations"] for row in map(json.loads,
                                                                path.read_text().splitlines())}
    now = {q["id"]: [d["id"] for d in chosen] for q, chosen in zip(queries, demos, strict=True)}
    if recorded != now:
        raise runs.RunError(f"{path} records other demonstrations than the pool gives now; "
                            "the run cannot be scored again as itself")
