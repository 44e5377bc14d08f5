"""Evidence ablation: does the evidence a rationale cites drive a model's prediction?

    rationale-audit faithfulness run --run 3                  # the bundled base model reads
    rationale-audit faithfulness run --run 3 --scorer-run 12  # a label-only run's adapter reads

For every rationale of generation run ``--run``, a scorer gives P(yes) on the student
task's prompt for the rationale's patient (:mod:`annotation_db.student_task`, the history
budgeted as exports budget it) in these variants of the history:

- **full**: the budgeted history as a student sees it;
- **without cited**: the cited items that history shows, removed;
- **only cited**: the cited items alone, under the undated header line (sex, index date);
- **random**: as many *uncited* shown items removed (items no claim of the rationale
  cites), ``draws`` times, each draw seeded by the run's seed and the rationale, so a
  re-run or a partial run draws the same items. When the history shows fewer uncited items
  than the rationale cites there is no baseline (and no margin) for it.

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
that cites shown items. Every variant is the budgeted history with whole item lines taken
out, so it fits the same budget and keeps the full history's "(N older items omitted)"
line (the only-cited variant keeps the header and the cited lines alone). Identical
prompts are scored once, and the prefix cache (on by default in every engine the project
starts) reuses the system turn and the history up to the first removed line across a
rationale's variants.
"""

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import faithfulness as store
from annotation_db.claims import claims_of
from annotation_db.cohorts import patient_record
from annotation_db.command_config import stable_hash
from annotation_db.models import GenerationRun, Patient, Rationale
from annotation_db.provenance import file_sha256
from annotation_db.render import render_compact, tokenizer_counter
from annotation_db.student_task import ANSWER_PREFIX, prompt_messages
from generation.models import history_counter
from training.data import prompt_text
from training.evidence_ablation_config import DEFAULT_BUDGET, FaithfulnessConfig


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


_OMITTED = re.compile(r"^\(\d+ older items omitted\)$")


def _lines_kept(full_text: str, keep: Callable[[str], bool], *, omitted_line: bool) -> str:
    """The budgeted history with whole item lines taken out: line 0 (the header) stays, an
    item line stays when ``keep(its evidence id)``, and the "(N older items omitted)" line
    stays when ``omitted_line``. Removing whole lines never makes the text longer, so every
    variant fits the budget the full history fits."""
    lines = full_text.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        if _OMITTED.match(line):
            if omitted_line:
                out.append(line)
        elif keep(line.split(" ", 1)[0]):
            out.append(line)
    return "\n".join(out)


def _without(full_text: str, removed: set[str]) -> str:
    return _lines_kept(full_text, lambda i: i not in removed, omitted_line=True)


def _draws(pool: list[str], size: int, draws: int, rng: random.Random) -> list[list[str]]:
    """``draws`` random sets of ``size`` items from ``pool``; none when the pool holds fewer
    than ``size`` (a baseline that removed fewer items than the rationale cites would be
    easier to beat, so there is no baseline then)."""
    return [rng.sample(pool, size) for _ in range(draws)] if 0 < size <= len(pool) else []


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
    cited_set = set(cited)
    uncited = [i for i in shown if i not in cited_set]  # cited by no claim of the rationale
    out.histories["without"] = _without(full.text, cited_set)
    out.histories["only"] = _lines_kept(full.text, cited_set.__contains__, omitted_line=False)
    for j, removed in enumerate(_draws(uncited, len(cited), draws, rng)):
        out.histories[f"random:{j}"] = _without(full.text, set(removed))
    if not per_claim:
        return out
    for position, claim_ids in claims:
        own = list(dict.fromkeys(i for i in claim_ids if i in shown_set))
        if not own:
            continue
        out.claims.append({"position": position, "cited": own})
        out.histories[f"claim:{position}"] = _without(full.text, set(own))
        for j, removed in enumerate(_draws(uncited, len(own), draws, rng)):
            out.histories[f"claim:{position}:random:{j}"] = _without(full.text, set(removed))
    return out


def _draw_keys(p_yes: dict[str, float], prefix: str) -> list[float]:
    """The draws' P(yes) under ``prefix`` (``random:`` or ``claim:K:random:``), in draw order."""
    keys = [k for k in p_yes if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return [p_yes[k] for k in sorted(keys, key=lambda k: int(k[len(prefix):]))]


def quantities(ablation: Ablation, p_yes: dict[str, float]) -> dict:
    """The stored row of one rationale from P(yes) of each of its variants."""
    direction = ablation.direction
    if direction is None:
        direction = int(p_yes["full"] >= 0.5)

    def towards(p: float) -> float:  # the probability of the conclusion
        return p if direction == 1 else 1.0 - p

    full = towards(p_yes["full"])
    randoms = _draw_keys(p_yes, "random:")
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
        claim_randoms = _draw_keys(p_yes, f"{key}:random:")
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


def files_sha256(folder: Path, pattern: str = "*") -> str:
    """One digest of a folder's files matching ``pattern``: each file's SHA-256 by its
    relative name."""
    return stable_hash({p.relative_to(folder).as_posix(): file_sha256(p)
                        for p in sorted(folder.rglob(pattern)) if p.is_file()})


def model_identity(model) -> dict:
    """A model spec and the checksum of its weights: the one the project recorded when it
    prepared them, else the SHA-256 of the folder's safetensors (None for a hub id that
    only the library resolves)."""
    checksum = model.checksum
    if checksum is None and Path(model.path).is_dir():
        checksum = files_sha256(Path(model.path), "*.safetensors")
    return {"kind": "model", "model": model.spec, "source": model.source, "checksum": checksum}


@dataclass(frozen=True)
class Reader:
    """What reads the histories: the model, an adapter, who it is, and the budget rule."""

    model: object
    adapter: str | None
    identity: dict
    budget: int
    tokenizer: str  # the model spec whose tokenizer counts the budget, as exports count it


def resolve_scorer(engine: Engine, cfg: FaithfulnessConfig) -> Reader:
    """The reader ``cfg`` names: a model spec, or a finished SFT run's adapter (its base
    model, and its dataset's history budget and budget tokenizer unless given)."""
    from annotation_db.export import ApprovalPolicy
    from generation.models import DEFAULT_MODEL, resolve_model

    defaults = ApprovalPolicy.model_fields
    if cfg.scorer_run is None:
        model = resolve_model(cfg.scorer or DEFAULT_MODEL, cache_dir=cfg.cache_dir)
        return Reader(model, None, model_identity(model), cfg.history_budget or DEFAULT_BUDGET,
                      cfg.history_tokenizer or defaults["history_tokenizer"].default)
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
        policy = (version.manifest or {}).get("policy", {}) if version else {}
        identity = {"kind": "training_run", "training_run": run.id, "target": run.target,
                    "base_model": run.base_model, "config_hash": run.config_hash,
                    "adapter_sha256": files_sha256(adapter)}
        model = resolve_model(run.base_model, cache_dir=cfg.cache_dir or
                              run.config.get("cache_dir"))
    return Reader(model, str(adapter), identity,
                  cfg.history_budget or policy.get("history_budget") or DEFAULT_BUDGET,
                  cfg.history_tokenizer or policy.get("history_tokenizer")
                  or defaults["history_tokenizer"].default)


def pending_rationales(session: Session, run_id: int, done: set[int]) -> list[Rationale]:
    """The generation run's valid original rationales the faithfulness run has not scored
    (gold copies, flawed on purpose, and clinicians' corrections are not the run's output)."""
    return [r for r in session.execute(select(Rationale).where(
        Rationale.run_id == run_id, Rationale.status == "ok", Rationale.variant == "original",
        Rationale.is_gold.is_(False)).order_by(Rationale.id)).scalars() if r.id not in done]


def run_ablation(engine: Engine, cfg: FaithfulnessConfig, *, scorer=None,
                 scorer_identity: dict | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> AblationSummary:
    """Ablate every rationale of ``cfg.run`` not yet scored and store the rows.

    ``scorer`` (a :class:`training.scoring.Scorer`) replaces the one the config names; it
    then needs its ``scorer_identity``, and the budget is counted with its own tokenizer
    unless ``cfg.history_tokenizer`` names one. The run stays ``running`` while rationales
    are missing (``--limit``), ends ``finished`` when none are, and ``failed`` on an error.
    """
    from annotation_db.render import HistoryBudgetError

    with Session(engine) as session:
        if session.get(GenerationRun, cfg.run) is None:
            raise store.FaithfulnessError(f"no generation run {cfg.run}; `rationale-audit "
                                          "generate run` makes one")
    pool = None
    if scorer is None:
        from training.evaluate import ScorerPool

        reader = resolve_scorer(engine, cfg)
        identity, budget = reader.identity, reader.budget
        count = history_counter(reader.tokenizer, cache_dir=cfg.cache_dir)
        counted_by = reader.tokenizer
        pool = ScorerPool(cfg.engine, prefix_caching=cfg.prefix_caching)
        scorer = pool.scorer(reader.model, reader.adapter)
    else:
        if scorer_identity is None:
            raise ValueError("a scorer passed in needs its scorer_identity")
        identity, budget = scorer_identity, cfg.history_budget or DEFAULT_BUDGET
        counted_by = cfg.history_tokenizer or "the scorer's own"
        count = (tokenizer_counter(scorer.tokenizer) if cfg.history_tokenizer is None else
                 history_counter(cfg.history_tokenizer, cache_dir=cfg.cache_dir))
    settings = {**cfg.identity_data(), "history_budget": budget,
                "history_tokenizer": counted_by}
    run_id = None
    try:
        with Session(engine) as session:
            run = store.open_run(session, generation_run_id=cfg.run, scorer=identity,
                                 settings=settings)
            run_id = run.id
            done = store.scored_ids(session, run.id)
            pending = pending_rationales(session, cfg.run, done)
            todo = pending if cfg.limit is None else pending[:cfg.limit]
            summary = AblationSummary(run.id, skipped=len(done))
            total = len(todo)
            for start in range(0, total, cfg.batch_size):
                batch = todo[start:start + cfg.batch_size]
                try:
                    ablations = [_ablation(session, r, budget, count, cfg) for r in batch]
                except HistoryBudgetError as exc:
                    raise store.FaithfulnessError(str(exc)) from None
                started = time.perf_counter()
                rows = score_ablations(scorer, ablations)
                seconds = time.perf_counter() - started
                prompts = sum(len(a.histories) for a in ablations)
                store.store(session, run.id, rows, seconds, prompts)
                summary.scored += len(rows)
                summary.prompts += prompts
                summary.distinct_prompts += len({h for a in ablations
                                                 for h in a.histories.values()})
                summary.seconds += seconds
                if on_progress:
                    on_progress(summary.scored, total)
            store.finish(session, run.id, complete=len(todo) == len(pending))
    except BaseException:
        if run_id is not None:
            with Session(engine) as session:
                store.fail(session, run_id)
        raise
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
