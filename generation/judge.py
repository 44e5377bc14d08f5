"""An automatic judge: the clinicians' rubric and guidelines given to a model.

    rationale-audit judge run --campaign pilot --model bundled:smollm2-135m-instruct
    rationale-audit judge run --campaign pilot --server-url http://127.0.0.1:8000/v1

The judge sees what a clinician sees — the patient's record, the rationale and its
predicted label — never the grounding checks, the generating model or anyone's ratings.
It answers in a JSON schema: a short reason, then a 1–5 score per dimension, then flags,
and, when the campaign has claim review, one verdict per claim of the rationale (the
clinicians' five, in order; the schema fixes how many).
Where the backend returns log-probabilities (vLLM offline and OpenAI-compatible servers),
each score also gets its G-Eval expected value, Σ p(s)·s over the score tokens' probabilities
renormalised over 1–5 (Liu et al. 2023); the transformers backend gives the sampled
score only.

Judge scores are stored in their own tables (``judge_run``, ``judge_rating``): exports,
the panel's agreement report and the annotation screens never read them. A run is keyed by
(campaign, model, prompt, sampling), so re-running the same command scores only the
rationales still missing.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as campaign_crud
from annotation_db.claim_review import is_on as claim_review_on
from annotation_db.claims import claims_of
from annotation_db.cohorts import patient_record
from annotation_db.command_config import stable_hash
from annotation_db.errors import UserError
from annotation_db.models import CampaignItem, JudgeRating, JudgeRun, Patient, Rationale, utcnow
from annotation_db.records import PatientRecord
from annotation_db.render import render_compact
from annotation_db.rubric import CLAIM_VERDICTS, FLAGS, SCALE, SCALE_DIMENSIONS
from generation.backends import ServedModel, make_backend
from generation.chat import Backend, ChatRequest, Completion, SamplingConfig, TokenLogprobs
from generation.engine import EngineOptions
from generation.judge_config import FIXED_TOKENS, JudgeConfig
from generation.models import DEFAULT_MODEL, ResolvedModel, resolve_model
from generation.rationales import output_counter

PROMPT_VERSION = "1"
CLAIM_TOKENS = 8  # one quoted verdict name and its comma, in the longest tokenisation
MIN_REASON = 16  # characters the reason keeps however many claims there are
SCORES = SCALE


class JudgeError(UserError):
    """A judge run that cannot start; the message is one line."""


def json_schema(max_tokens: int, claims: int = 0) -> dict:
    """The judge's answer; with ``claims`` > 0 also a verdict per claim, in order. Each
    verdict takes at most CLAIM_TOKENS tokens, taken from the reason's share."""
    score = {"type": "integer", "enum": list(SCORES)}
    verdicts = ({"claims": {"type": "array", "minItems": claims, "maxItems": claims,
                            "items": {"type": "string", "enum": list(CLAIM_VERDICTS)}}}
                if claims else {})
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": max(
                MIN_REASON, max_tokens - FIXED_TOKENS - CLAIM_TOKENS * claims)},
            **{name: score for name in SCALE_DIMENSIONS},
            "flags": {"type": "array", "items": {"type": "string", "enum": list(FLAGS)},
                      "maxItems": len(FLAGS)},
            **verdicts,
        },
        "required": ["reason", *SCALE_DIMENSIONS, "flags", *verdicts],
        "additionalProperties": False,
    }


def answer_budget(max_tokens: int, claims: int = 0) -> int:
    """The tokens an answer may take: ``max_tokens``, raised where a rationale has so many
    claims that their verdicts and the shortest reason would not close within it."""
    return max(max_tokens, FIXED_TOKENS + MIN_REASON + CLAIM_TOKENS * claims)


def system_prompt(guidelines: dict, claims: bool = False) -> str:
    lines = ["You audit rationales written by a model that predicts whether a patient will be "
             "diagnosed with Alzheimer's disease or a related dementia within five years. "
             "Score the rationale as a careful clinician would, using only the patient's "
             "record shown. Answer in JSON: a one-sentence reason, then each score, then "
             "any flags that apply."]
    for name in SCALE_DIMENSIONS:
        spec = guidelines["dimensions"][name]
        lines.append(f"\n{name} ({spec['title']}): {spec['question']}")
        lines.extend(f"  {score}: {spec['anchors'][score]}" for score in SCORES)
    lines.append("\nflags (list every one that applies, or none):")
    lines.extend(f"  {name}: {guidelines['flags'][name]}" for name in FLAGS)
    if claims:
        lines.append("\nclaims (when the rationale's claims are listed): one verdict per "
                     "claim, in order:")
        lines.extend(f"  {name}: {words}" for name, words in CLAIM_VERDICTS.items())
    return "\n".join(lines)


def user_prompt(record: dict, rationale: Rationale, history_budget: int,
                count_tokens: Callable[[str], int], claims: list[str] | None = None) -> str:
    history = render_compact(record, history_budget, count_tokens).text
    text = rationale.text or ""
    if rationale.steps:
        text = "\n".join(f"{i}. {step.get('step', '')} [{', '.join(step.get('evidence', []))}]"
                         for i, step in enumerate(rationale.steps, 1))
    label = "will" if rationale.predicted_label else "will not"
    cited = ", ".join(rationale.cited_evidence_ids or []) or "none"
    listed = ("\nClaims to judge one by one:\n" + "\n".join(
        f"{k}. {claim}" for k, claim in enumerate(claims, start=1)) if claims else "")
    return (f"Patient record (each line starts with its evidence id):\n{history}\n\n"
            f"Rationale:\n{text}\nCited evidence: {cited}\n"
            f"Predicted: the patient {label} be diagnosed with ADRD within five years."
            + listed)


# --- Reading the answer ----------------------------------------------------------------

def score_distribution(logprobs: list[TokenLogprobs] | None, text: str, key: str
                       ) -> dict[str, float] | None:
    """P(score) at the token that writes ``key``'s value, renormalised over 1–5."""
    if not logprobs:
        return None
    # Search the tokens' own text: a token decoded alone may differ from its share of the
    # answer (a character split across tokens, a tokenizer's word-initial space).
    joined = "".join(position.token for position in logprobs)
    marker = joined.find(f'"{key}"')
    if marker < 0:
        return None
    value_at = joined.find(":", marker + len(key) + 2) + 1
    while value_at < len(joined) and joined[value_at] == " ":
        value_at += 1
    offset = 0
    for position in logprobs:
        end = offset + len(position.token)
        if offset <= value_at < end:
            mass = {}
            for token, logprob in position.top.items():
                digit = token.strip()
                if digit in {str(s) for s in SCORES} and math.isfinite(logprob):
                    mass[digit] = mass.get(digit, 0.0) + math.exp(logprob)
            total = sum(mass.values())
            return {k: v / total for k, v in sorted(mass.items())} if total > 0 else None
        offset = end
    return None


def expected_score(distribution: dict[str, float] | None) -> float | None:
    if not distribution:
        return None
    return sum(int(score) * p for score, p in distribution.items())


@dataclass
class JudgeAnswer:
    scores: dict[str, int]
    flags: list[str]
    reason: str
    distributions: dict[str, dict[str, float] | None]
    claims: list[str] | None = None


def parse_answer(completion: Completion, claims: int = 0) -> JudgeAnswer | None:
    """The answer, or None when it is outside the rubric (or, with ``claims``, does not
    give exactly one known verdict per claim)."""
    try:
        data = json.loads(completion.text)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    scores = {name: data.get(name) for name in SCALE_DIMENSIONS}
    if any(not isinstance(v, int) or v not in SCORES for v in scores.values()):
        return None
    flags = data.get("flags", [])
    if not isinstance(flags, list) or any(f not in FLAGS for f in flags):
        return None
    verdicts = data.get("claims") if claims else None
    if claims and (not isinstance(verdicts, list) or len(verdicts) != claims
                   or any(v not in CLAIM_VERDICTS for v in verdicts)):
        return None
    return JudgeAnswer(scores, sorted(set(flags)), str(data.get("reason", "")),
                       {name: score_distribution(completion.logprobs, completion.text, name)
                        for name in SCALE_DIMENSIONS}, verdicts)


# --- The run ------------------------------------------------------------------------------

@dataclass
class JudgeSummary:
    run_id: int
    scored: int
    skipped: int
    failed: int
    with_probabilities: int
    seconds: float


def _campaign_rationales(session: Session, campaign_id: int) -> list[Rationale]:
    return list(session.execute(
        select(Rationale).join(CampaignItem, CampaignItem.rationale_id == Rationale.id)
        .where(CampaignItem.campaign_id == campaign_id).order_by(Rationale.id)).scalars())


def run_judge(engine, cfg: JudgeConfig, guidelines: dict, *, backend: Backend | None = None,
              api_key: str | None = None,
              on_progress: Callable[[int], None] | None = None) -> JudgeSummary:
    """Score every rationale of the campaign that this judge run has not scored yet."""
    if cfg.server_url and backend is None:
        backend = make_backend(cfg.backend, None, server_url=cfg.server_url, served=cfg.model,
                               api_key=api_key)
    served: ServedModel | None = getattr(backend, "served", None)
    model = (ResolvedModel(spec=served.id, source="server", path=served.root or "")
             if served else resolve_model(cfg.model or DEFAULT_MODEL, cache_dir=cfg.cache_dir))
    with Session(engine) as session:
        campaign = campaign_crud.get_campaign(session, cfg.campaign)
        review = claim_review_on(campaign)
        system = system_prompt(guidelines, claims=review)
        if guidelines.get("version") != campaign.guidelines_version:
            raise JudgeError(f"campaign {campaign.name!r} uses guidelines "
                             f"{campaign.guidelines_version}; the judge was given "
                             f"{guidelines.get('version')}")
        run_id = _open_run(session, campaign, cfg, model, served, backend, system, review)
        work = _pending(session, campaign.id, run_id, review)
    summary = JudgeSummary(run_id, 0, len(work.done), 0, 0, 0.0)
    if work.rationales and backend is None:
        backend = make_backend(cfg.backend, model, options=EngineOptions(
            max_model_len=cfg.max_model_len, seed=cfg.seed))
    count = output_counter(backend, model)[0] if work.rationales else None
    for start in range(0, len(work.rationales), cfg.batch_size):
        batch = work.rationales[start:start + cfg.batch_size]
        params = SamplingConfig(temperature=cfg.temperature, repetition_penalty=1.0,
                                max_tokens=answer_budget(cfg.max_tokens, max(
                                    len(work.claims[r.id]) for r in batch)))
        requests = [_request(cfg, system, work, r, count) for r in batch]
        started = time.perf_counter()
        completions = backend.complete(requests, params)
        seconds = time.perf_counter() - started
        summary.seconds += seconds
        rows = [row for rationale, completion in zip(batch, completions, strict=True)
                if (row := _rating(run_id, rationale, completion,
                                   len(work.claims[rationale.id]), summary)) is not None]
        _store_batch(engine, run_id, rows, failed=len(batch) - len(rows), seconds=seconds)
        summary.scored += len(rows)
        if on_progress:
            on_progress(len(batch))
    _finish(engine, run_id, complete=summary.scored == len(work.rationales))
    return summary


def _open_run(session: Session, campaign, cfg: JudgeConfig, model: ResolvedModel,
              served: ServedModel | None, backend: Backend | None, system: str,
              review: bool) -> int:
    """The id of this judge's run on the campaign: found by its content hash (a rerun
    resumes it) or created."""
    settings = {"prompt_version": PROMPT_VERSION, "system_sha256": stable_hash(system),
                "schema": json_schema(cfg.max_tokens), **cfg.model_dump(include={
                    "max_tokens", "top_logprobs", "temperature", "seed", "history_budget"}),
                **({"claim_review": True} if review else {})}
    key = stable_hash({"campaign": campaign.id, "model": model.spec,
                       "served_by": served.as_dict() if served else None, **settings})
    run = session.execute(select(JudgeRun).where(JudgeRun.content_hash == key)
                          ).scalars().first()
    if run is None:
        run = JudgeRun(campaign_id=campaign.id, content_hash=key, model=model.spec,
                       backend=backend.name if backend else cfg.backend,
                       served_by=served.as_dict() if served else None, settings=settings,
                       status="running", stats={"failed": 0, "seconds": 0.0})
        session.add(run)
        session.commit()
    return run.id


@dataclass
class _Pending:
    """What a judge run has left to score: the rationales, their records and claims."""

    done: set[int]
    rationales: list[Rationale]
    records: dict[int, PatientRecord]
    claims: dict[int, list[str]]


def _pending(session: Session, campaign_id: int, run_id: int, review: bool) -> _Pending:
    done = set(session.execute(select(JudgeRating.rationale_id).where(
        JudgeRating.judge_run_id == run_id)).scalars())
    rationales = [r for r in _campaign_rationales(session, campaign_id) if r.id not in done]
    records = {r.id: patient_record(session, session.get(Patient, r.patient_id))
               for r in rationales}
    claims = {r.id: [c.text for c in claims_of(session, r.id)] if review else []
              for r in rationales}
    return _Pending(done, rationales, records, claims)


def _request(cfg: JudgeConfig, system: str, work: _Pending, rationale: Rationale,
             count) -> ChatRequest:
    """The judge's chat for one rationale, held to the schema for its number of claims."""
    claims = work.claims[rationale.id]
    return ChatRequest(
        messages=[{"role": "system", "content": system},
                  {"role": "user", "content": user_prompt(work.records[rationale.id], rationale,
                                                          cfg.history_budget, count, claims)}],
        schema=json_schema(cfg.max_tokens, len(claims)), seed=cfg.seed + rationale.id,
        temperature=cfg.temperature, logprobs=cfg.top_logprobs)


def _rating(run_id: int, rationale: Rationale, completion: Completion, n_claims: int,
            summary: JudgeSummary) -> JudgeRating | None:
    """The stored rating of one completion (None, counted as failed, when it does not parse)."""
    answer = parse_answer(completion, n_claims)
    if answer is None:
        summary.failed += 1
        return None
    expected = {name: expected_score(answer.distributions[name]) for name in SCALE_DIMENSIONS}
    summary.with_probabilities += all(v is not None for v in expected.values())
    return JudgeRating(
        judge_run_id=run_id, rationale_id=rationale.id,
        accuracy=answer.scores["accuracy"], faithfulness=answer.scores["faithfulness"],
        expected_accuracy=expected["accuracy"],
        expected_faithfulness=expected["faithfulness"],
        probabilities=({k: v for k, v in answer.distributions.items() if v} or None),
        flags=answer.flags, reason=answer.reason[:2000],
        claim_verdicts=({str(k): v for k, v in enumerate(answer.claims, start=1)}
                        if answer.claims else None),
        raw_output=completion.text[:20000])


def _store_batch(engine, run_id: int, rows: list[JudgeRating], *, failed: int,
                 seconds: float) -> None:
    """A batch's ratings and the run's running counts, in one transaction."""
    with Session(engine) as session:
        session.add_all(rows)
        run = session.get(JudgeRun, run_id)
        run.stats = {"failed": (run.stats or {}).get("failed", 0) + failed,
                     "seconds": round((run.stats or {}).get("seconds", 0.0) + seconds, 3)}
        session.add(run)
        session.commit()


def _finish(engine, run_id: int, *, complete: bool) -> None:
    """Finished when every pending rationale was scored, else failed (a rerun resumes)."""
    with Session(engine) as session:
        run = session.get(JudgeRun, run_id)
        run.status = "finished" if complete else "failed"
        run.finished_at = utcnow()
        session.add(run)
        session.commit()
