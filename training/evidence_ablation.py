"""Evidence ablation: does the evidence a rationale cites drive a model's prediction?

    rationale-audit faithfulness run --run 3                  # the bundled base model reads
    rationale-audit faithfulness run --run 3 --scorer-run 12  # a label-only run's adapter reads

For every rationale of generation run ``--run``, a scorer gives P(yes) on the student
task's prompt for the rationale's patient (:mod:`annotation_db.student_task`, the history
budgeted as exports budget it) in these variants of the history:

- **full**: the budgeted history as a student sees it;
- **without cited**: the cited items that history shows, removed;
- **only cited**: the cited items alone, under the undated header line (sex, index date);
- **random**: as many *uncited* shown items removed, ``draws`` times, each draw seeded by
  the run's seed and the rationale, so a re-run or a partial run draws the same items.

The probability read is the one of the rationale's conclusion (P(yes) when it says yes,
P(no) when it says no; the scorer's own full-history answer when it states none), and in
its direction (DeYoung et al. 2020, ERASER):

- comprehensiveness = p(full) − p(without cited): how much the prediction falls without
  the cited evidence;
- sufficiency = p(full) − p(only cited): how much it falls with nothing else (lower: the
  cited evidence is enough on its own);
- baseline = the mean fall over the random draws; **margin** = comprehensiveness − baseline,
  which says whether the cited items matter more than any items would.

The same comprehensiveness, baseline and margin are measured per claim for every claim
that cites shown items. Variants are subsets of the budgeted history, so every variant fits
the same history budget (a variant is rendered again under that budget, which it always
meets). Identical prompts are scored once, and the prefix cache (on by default in every
engine the project starts) reuses the system turn and the history up to the first removed
line across a rationale's variants.
"""

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import faithfulness as store
from annotation_db.claims import claims_of
from annotation_db.cohorts import patient_record
from annotation_db.models import GenerationRun, Patient, Rationale
from annotation_db.provenance import CommandConfig
from annotation_db.render import render_compact, tokenizer_counter
from annotation_db.student_task import ANSWER_PREFIX, prompt_messages
from training.data import prompt_text

DEFAULT_BUDGET = 1500  # the approval policy's default history_budget


class FaithfulnessConfig(CommandConfig):
    """Settings of `rationale-audit faithfulness run` (YAML keys are the field names)."""

    COMMAND = "rationale-audit faithfulness run"

    run: int = Field(description="generation run whose rationales are ablated")
    scorer: str | None = Field(
        None, description="model spec that reads the histories: bundled:NAME, a local Hugging "
        "Face folder or hf:ORG/NAME (default: the bundled base model)")
    scorer_run: str | None = Field(
        None, description="a finished SFT run (id, config-hash prefix or folder) whose adapter "
        "reads the histories instead, e.g. a label-only run: does the evidence the teacher "
        "cited drive the student's prediction?")
    history_budget: int | None = Field(
        None, ge=40, description="tokens of history in each prompt (default: the scorer run's "
        f"dataset policy, else {DEFAULT_BUDGET}, the export policy's default)")
    draws: int = Field(5, ge=1, le=50, description="random draws of as many uncited items "
                                                   "removed: the baseline")
    per_claim: bool = Field(True, description="also ablate each claim's own cited items")
    seed: int = Field(0, description="seeds the random draws (with each rationale's id)")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when installed, else transformers")
    batch_size: int = Field(32, ge=1, description="rationales scored per batch (each is "
                                                  "several prompts)")
    prefix_caching: bool = Field(True, description="vLLM's prefix cache (the same numbers "
                                                   "either way; only faster with it)")
    limit: int | None = Field(None, ge=1, description="score only the first N rationales not "
                                                      "yet scored (a later run goes on)")
    cache_dir: str | None = Field(None, description="model cache directory (must exist)")

    # Where and how fast the numbers are made, not what they are.
    NOT_IN_IDENTITY = frozenset({"engine", "batch_size", "prefix_caching", "limit",
                                 "cache_dir", "run", "scorer", "scorer_run"})


@dataclass
class Ablation:
    """One rationale's variants: history texts by key, and what they were made from."""

    rationale_id: int
    direction: int | None  # the conclusion: 1 yes, 0 no, None: not stated
    shown: list[str]
    cited: list[str]  # cited and shown: what "without cited" removes
    missing: list[str]  # cited but not shown (not in the record, or budgeted out)
    histories: dict[str, str] = field(default_factory=dict)
    claims: list[dict] = field(default_factory=list)  # position, cited (shown)


def _sub_history(record: dict, keep: set[str], budget: int, count) -> str:
    sub = {**record, "items": [item for item in record["items"] if item["id"] in keep]}
    return render_compact(sub, budget, count).text


def _draws(pool: list[str], size: int, draws: int, rng: random.Random) -> list[list[str]]:
    size = min(size, len(pool))
    return [rng.sample(pool, size) for _ in range(draws)] if size else []


def ablate(record: dict, rationale_id: int, cited_ids: list[str], claims: list[tuple[int, list]],
           *, direction: int | None, budget: int, count: Callable[[str], int], draws: int,
           seed: int, per_claim: bool = True) -> Ablation:
    """The variants of one rationale's history (see the module doc)."""
    full = render_compact(record, budget, count)
    shown = list(full.shown_ids)
    shown_set = set(shown)
    cited = list(dict.fromkeys(i for i in cited_ids if i in shown_set))
    missing = list(dict.fromkeys(i for i in cited_ids if i not in shown_set))
    out = Ablation(rationale_id, direction, shown, cited, missing, {"full": full.text})
    if not cited:
        return out
    rng = random.Random(f"ablation-{seed}-{rationale_id}")
    uncited = [i for i in shown if i not in set(cited)]
    out.histories["without"] = _sub_history(record, shown_set - set(cited), budget, count)
    out.histories["only"] = _sub_history(record, set(cited), budget, count)
    for j, removed in enumerate(_draws(uncited, len(cited), draws, rng)):
        out.histories[f"random:{j}"] = _sub_history(record, shown_set - set(removed), budget,
                                                    count)
    if not per_claim:
        return out
    for position, claim_ids in claims:
        own = list(dict.fromkeys(i for i in claim_ids if i in shown_set))
        if not own:
            continue
        out.claims.append({"position": position, "cited": own})
        out.histories[f"claim:{position}"] = _sub_history(record, shown_set - set(own),
                                                          budget, count)
        others = [i for i in shown if i not in set(own)]
        for j, removed in enumerate(_draws(others, len(own), draws, rng)):
            out.histories[f"claim:{position}:random:{j}"] = _sub_history(
                record, shown_set - set(removed), budget, count)
    return out


def quantities(ablation: Ablation, p_yes: dict[str, float]) -> dict:
    """The stored row of one rationale from P(yes) of each of its variants."""
    direction = ablation.direction
    if direction is None:
        direction = int(p_yes["full"] >= 0.5)

    def towards(p: float) -> float:  # the probability of the conclusion
        return p if direction == 1 else 1.0 - p

    full = towards(p_yes["full"])
    randoms = [p_yes[k] for k in sorted(p_yes) if k.startswith("random:")]
    row = {"rationale_id": ablation.rationale_id, "direction": direction,
           "shown_items": len(ablation.shown), "cited_shown": len(ablation.cited),
           "cited_missing": len(ablation.missing), "p_full": p_yes["full"],
           "p_without_cited": p_yes.get("without"), "p_only_cited": p_yes.get("only"),
           "p_random": randoms, "comprehensiveness": None, "sufficiency": None,
           "baseline": None, "claims": []}
    if "without" in p_yes:
        row["comprehensiveness"] = full - towards(p_yes["without"])
        row["sufficiency"] = full - towards(p_yes["only"])
        if randoms:
            row["baseline"] = float(np.mean([full - towards(p) for p in randoms]))
    for claim in ablation.claims:
        key = f"claim:{claim['position']}"
        claim_randoms = [p_yes[k] for k in sorted(p_yes) if k.startswith(f"{key}:random:")]
        comp = full - towards(p_yes[key])
        base = (float(np.mean([full - towards(p) for p in claim_randoms]))
                if claim_randoms else None)
        row["claims"].append({"position": claim["position"], "cited": claim["cited"],
                              "p_without": p_yes[key], "p_random": claim_randoms,
                              "comprehensiveness": comp, "baseline": base})
    return row


def score_ablations(scorer, ablations: list[Ablation]) -> list[dict]:
    """Score every variant of ``ablations`` (each distinct prompt once) into stored rows."""
    keys, texts, index = [], [], {}
    for a in ablations:
        for key, history in a.histories.items():
            text = prompt_text(scorer.tokenizer, prompt_messages(history)) + ANSWER_PREFIX
            if text not in index:
                index[text] = len(texts)
                texts.append(text)
            keys.append((a.rationale_id, key, index[text]))
    p_yes, _ = scorer.label_probabilities(texts) if texts else (np.array([]), None)
    by_rationale: dict[int, dict[str, float]] = {}
    for rationale_id, key, i in keys:
        by_rationale.setdefault(rationale_id, {})[key] = float(p_yes[i])
    return [quantities(a, by_rationale[a.rationale_id]) for a in ablations]


@dataclass
class AblationSummary:
    run_id: int
    scored: int = 0
    skipped: int = 0
    prompts: int = 0
    distinct_prompts: int = 0
    seconds: float = 0.0
    scorer: dict = field(default_factory=dict)


def adapter_sha256(folder: Path) -> str:
    """SHA-256 over an adapter folder's files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def resolve_scorer(engine: Engine, cfg: FaithfulnessConfig) -> tuple[object, str | None, dict,
                                                                     int]:
    """(model, adapter folder or None, the scorer's identity, history budget)."""
    from generation.models import DEFAULT_MODEL, resolve_model

    if cfg.scorer_run is None:
        model = resolve_model(cfg.scorer or DEFAULT_MODEL, cache_dir=cfg.cache_dir)
        identity = {"kind": "model", "model": model.spec, "source": model.source,
                    "checksum": model.checksum}
        return model, None, identity, cfg.history_budget or DEFAULT_BUDGET
    if cfg.scorer is not None:
        raise store.FaithfulnessError("give --scorer or --scorer-run, not both (a run's "
                                      "adapter brings its own base model)")
    from annotation_db.models import DatasetVersion, RunStatus
    from training import runs

    with Session(engine) as session:
        run = runs.find_run(session, cfg.scorer_run)
        if run.kind != "sft" or run.status != RunStatus.finished:
            raise store.FaithfulnessError(f"run {run.id} is a {run.status} {run.kind} run; "
                                          "--scorer-run needs a finished SFT run")
        adapter = Path(run.run_dir) / "adapter"
        if not adapter.is_dir():
            raise store.FaithfulnessError(f"run {run.id} has no adapter in {run.run_dir}; "
                                          "retrain it to score with it")
        version = session.get(DatasetVersion, run.dataset_version_id)
        budget = cfg.history_budget or ((version.manifest or {}).get("policy", {}).get(
            "history_budget") if version else None) or DEFAULT_BUDGET
        identity = {"kind": "training_run", "training_run": run.id, "target": run.target,
                    "base_model": run.base_model, "config_hash": run.config_hash,
                    "adapter_sha256": adapter_sha256(adapter)}
        model = resolve_model(run.base_model, cache_dir=cfg.cache_dir or
                              run.config.get("cache_dir"))
    return model, str(adapter), identity, budget


def pending_rationales(session: Session, run_id: int, done: set[int]) -> list[Rationale]:
    """The generation run's valid rationales the faithfulness run has not scored."""
    return [r for r in session.execute(select(Rationale).where(
        Rationale.run_id == run_id, Rationale.status == "ok").order_by(Rationale.id)).scalars()
            if r.id not in done]


def run_ablation(engine: Engine, cfg: FaithfulnessConfig, *, scorer=None,
                 on_progress: Callable[[int, int], None] | None = None) -> AblationSummary:
    """Ablate every rationale of ``cfg.run`` not yet scored and store the rows.

    ``scorer`` (a :class:`training.scoring.Scorer`) replaces the one the config names;
    then its identity is the model spec given (or the default) and the budget the config's.
    """
    with Session(engine) as session:
        if session.get(GenerationRun, cfg.run) is None:
            raise store.FaithfulnessError(f"no generation run {cfg.run}; `rationale-audit "
                                          "generate run` makes one")
    pool = None
    if scorer is None:
        from training.evaluate import ScorerPool

        model, adapter, identity, budget = resolve_scorer(engine, cfg)
        pool = ScorerPool(cfg.engine, prefix_caching=cfg.prefix_caching)
        scorer = pool.scorer(model, adapter)
    else:
        identity = {"kind": "model", "model": cfg.scorer or "custom scorer"}
        budget = cfg.history_budget or DEFAULT_BUDGET
    settings = {**cfg.identity_data(), "history_budget": budget}
    count = tokenizer_counter(scorer.tokenizer)
    try:
        with Session(engine) as session:
            run = store.open_run(session, generation_run_id=cfg.run, scorer=identity,
                                 settings=settings)
            done = store.scored_ids(session, run.id)
            todo = pending_rationales(session, cfg.run, done)
            if cfg.limit is not None:
                todo = todo[:cfg.limit]
            summary = AblationSummary(run.id, skipped=len(done), scorer=identity)
            total = len(todo)
            for start in range(0, total, cfg.batch_size):
                batch = todo[start:start + cfg.batch_size]
                ablations = [_ablation(session, r, budget, count, cfg) for r in batch]
                started = time.perf_counter()
                rows = score_ablations(scorer, ablations)
                seconds = time.perf_counter() - started
                store.store(session, run.id, rows, seconds)
                summary.scored += len(rows)
                summary.prompts += sum(len(a.histories) for a in ablations)
                summary.distinct_prompts += len({h for a in ablations
                                                 for h in a.histories.values()})
                summary.seconds += seconds
                if on_progress:
                    on_progress(summary.scored, total)
            remaining = len(pending_rationales(session, cfg.run, store.scored_ids(session,
                                                                                  run.id)))
            store.finish(session, run.id, complete=remaining == 0)
    finally:
        if pool is not None:
            pool.close()
    return summary


def _ablation(session: Session, rationale: Rationale, budget: int, count,
              cfg: FaithfulnessConfig) -> Ablation:
    record = patient_record(session, session.get(Patient, rationale.patient_id))
    claims = [(c.position, list(c.cited_ids)) for c in claims_of(session, rationale.id)]
    direction = None if rationale.predicted_label is None else int(rationale.predicted_label)
    return ablate(record, rationale.id, list(rationale.cited_evidence_ids or []), claims,
                  direction=direction, budget=budget, count=count, draws=cfg.draws,
                  seed=cfg.seed, per_claim=cfg.per_claim)
