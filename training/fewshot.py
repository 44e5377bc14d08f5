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
``demonstrations.jsonl``.
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
    ScorerPool,
    judge_validity,
    rationale_cap,
    score_rows,
    summarize,
    write_outputs,
)
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


def run_fewshot(engine: Engine, config: FewShotConfig, *, pool: ScorerPool | None = None,
                on_stage: Callable[[str], None] | None = None, force: bool = False
                ) -> EvaluationResult:
    """Score the split with demonstrations; a finished identical run is reused."""
    from generation.models import resolve_model

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
        queries = read_view(version, "label_only", config.split)
        if config.limit:
            queries = queries[:config.limit]
        demo_pool = [row for row in read_view(version, "fewshot_pool", "train")
                     if row["format"] == config.rationale_format]
        run_dir = runs.run_folder(config.runs_dir, "fewshot", config.target, config_hash)
        run = runs.begin(session, kind="fewshot", target=config.target,
                         base_model=config.base_model, config=config.model_dump(mode="json"),
                         config_hash=config_hash, run_dir=run_dir,
                         dataset_version_id=version.id)
        try:
            echo_config(config, run_dir, "train fewshot")
            demos = choose_demonstrations(demo_pool, queries, config)
            with (run_dir / "demonstrations.jsonl").open("w") as handle:
                for query, chosen in zip(queries, demos, strict=True):
                    handle.write(json.dumps({"id": query["id"],
                                             "demonstrations": [d["id"] for d in chosen]}) + "\n")
            conversations = [conversation(q, d, config.with_rationales)
                             for q, d in zip(queries, demos, strict=True)]
            model = resolve_model(config.base_model, cache_dir=config.cache_dir)
            pool = pool or ScorerPool(config.engine, config.batch_size)
            say(f"scoring {len(queries)} {config.split} patients, k={config.k} "
                f"({'with' if config.with_rationales else 'without'} rationales, {pool.kind})")
            scorer = pool.scorer(model, None)
            mode = "rationale" if config.with_rationales else "direct"
            cap = rationale_cap(scorer.tokenizer, [
                assistant_text(d["label"], d["rationale"]) for d in demo_pool],
                config.max_rationale_tokens) if mode == "rationale" else None
            scored = score_rows(scorer, queries, mode, cap["cap"] if cap else 0,
                                conversations=conversations)
            metrics = summarize(scored, config.evaluate_config())
            if cap:
                metrics["rationale_token_cap"] = cap
                judge_validity(metrics, config.min_reached_answer)
            metrics.update(engine=pool.kind, k=config.k, with_rationales=config.with_rationales,
                           selection=config.selection,
                           dataset={"version": version.name,
                                    "content_sha256": version.content_hash})
            csv_path = write_outputs(Path(run_dir) / "eval" / config.split, scored, metrics)
            result = runs.record_evaluation(session, run, split=config.split, metrics=metrics,
                                            predictions_path=csv_path)
        except BaseException as exc:
            runs.fail(session, run, exc)
            raise
        runs.finish(session, run)
        session.refresh(result)
        return result
