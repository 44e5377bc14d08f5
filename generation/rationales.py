"""Generation runs: write grounded rationales for a cohort selection, resumably.

    rationale-audit generate --split train --n 500 --mode label-conditioned --format free

A run is keyed by (cohort selection, model, prompt template and its hash, sampling
parameters, seed): running the same command again finds the same run and generates only
the patients that have no rationale yet. Each batch is written in one transaction and the
database refuses a second rationale per (run, patient, variant), so a run killed at any
point and started again ends with every patient exactly once.

Per patient: the prompt's chat with the compact history → structured output restricted to
the patient's evidence ids → pydantic validation → up to ``retries`` new attempts (higher
temperature, new seed) → stored as ``ok`` with its grounding checks, or as ``failed`` with
the raw text.
"""

import datetime as dt
import hashlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from annotation_db import cohorts as cohort_crud
from annotation_db.command_config import stable_hash
from annotation_db.models import GenerationRun, Patient, Rationale
from annotation_db.models import PromptTemplate as PromptRow
from generation.backends import ServedModel, make_backend
from generation.chat import Backend, ChatRequest, SamplingConfig
from generation.engine import EngineOptions
from generation.grounding import check_rationale
from generation.models import DEFAULT_MODEL, ResolvedModel, resolve_model
from generation.mutator import flawed_copies
from generation.output_budget import SchemaBounds, derive_bounds
from generation.prompts import PromptError, TeacherPrompt, template_for
from generation.rationale_schema import json_schema, parse_output
from generation.rationales_config import GenerateConfig


def sampling(cfg: GenerateConfig) -> SamplingConfig:
    """The sampling settings ``cfg`` gives every backend."""
    return SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p,
                          max_tokens=cfg.max_tokens, repetition_penalty=cfg.repetition_penalty,
                          retry_temperature=cfg.retry_temperature)


@dataclass
class RunSummary:
    run_id: int
    generated: int
    skipped: int
    failed: int
    tokens: int
    seconds: float
    gold: int = 0
    retried: int = 0
    retries: int = 0  # attempts after a patient's first, in this session
    bounds: SchemaBounds | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _patient_seed(seed: int, patient_id: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}:{patient_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def register_prompt(session: Session, template: TeacherPrompt) -> PromptRow:
    row = session.execute(select(PromptRow).where(PromptRow.name == template.name,
                                                  PromptRow.version == template.version)
                          ).scalars().first()
    if row is None:
        row = PromptRow(name=template.name, version=template.version, mode=template.mode,
                        format=template.format, body=template.body,
                        content_hash=template.content_hash)
        session.add(row)
        session.flush()
    elif row.content_hash != template.content_hash:
        raise PromptError(f"prompt {template.id} changed since it was first used; give the "
                          "edited template a new version")
    return row


def teacher_model(backend: str = "template") -> ResolvedModel:
    """A template teacher as a "model": its name and the hash of its source."""
    from generation import teacher, teacher_balanced

    module = teacher_balanced if backend == "template-balanced" else teacher
    digest = hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
    return ResolvedModel(spec=module.NAME, source="template", path="", checksum=digest)


def select_patients(session: Session, cohort_id: int, split: str, n: int | None) -> list[Patient]:
    query = select(Patient).where(Patient.cohort_id == cohort_id)
    if split != "all":
        query = query.where(Patient.split == split)
    query = query.order_by(Patient.id)
    if n is not None:
        query = query.limit(n)
    return list(session.execute(query).scalars())


def run_key(cohort_id: int, patient_ids: list[int], cfg: GenerateConfig,
            model: ResolvedModel, template: TeacherPrompt, *,
            served: ServedModel | None = None, bounds: SchemaBounds | None = None
            ) -> tuple[str, dict]:
    selection = {"cohort_id": cohort_id, "split": cfg.split, "n": cfg.n,
                 "patients_sha256": stable_hash(patient_ids)}
    key = {"selection": selection, "model": model.spec, "model_sha256": model.checksum,
           "prompt": template.id, "prompt_sha256": template.content_hash,
           "sampling": sampling(cfg).as_dict(), "seed": cfg.seed,
           "history_budget": cfg.history_budget, "history_tokenizer": cfg.history_tokenizer}
    if served is not None:
        key["served_by"] = served.as_dict()
    if bounds is not None:
        key["schema_bounds"] = bounds.as_dict()
    return stable_hash(key), selection


def run_evidence_ids(records: list[dict]) -> list[str]:
    """Every evidence id of a run's patients, in order: the ids its one schema may cite.

    One schema per run, not one per patient: xgrammar compiles a schema with string
    length bounds in 2–4.5 s on this machine (0.01 s without them), and compiles an
    identical schema once. A patient citing an id its record lacks is caught by
    validation (and retried) instead of by the decoder.
    """
    ids = {item["id"] for r in records for item in r["items"]}
    return sorted(ids, key=lambda i: (len(i), i))


def schema_bounds(records: list[dict], cfg: GenerateConfig, count_output, tokenizer: str
                  ) -> SchemaBounds:
    """The run's schema bounds: sized so that the largest valid rationale fits
    ``max_tokens`` as the generating model counts them (:mod:`generation.output_budget`)."""
    from annotation_db.render import render_compact
    from generation.models import history_counter

    count = history_counter(cfg.history_tokenizer, cfg.cache_dir)
    histories = [render_compact(r, cfg.history_budget, count).text for r in records]
    return derive_bounds(cfg.max_tokens, cfg.format, count_output,
                         ids=run_evidence_ids(records), texts=histories,
                         tokenizer=tokenizer)


def output_counter(backend: Backend | None, model: ResolvedModel):
    """How the generating model counts tokens, and what that count came from."""
    if backend is not None and hasattr(backend, "token_counter"):
        return backend.token_counter()
    from annotation_db.render import tokenizer_counter
    from generation.models import load_tokenizer

    return tokenizer_counter(load_tokenizer(model.path)), model.spec


def generate_rationales(
    engine,
    cfg: GenerateConfig,
    *,
    backend: Backend | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    retry_failed: bool = False,
    api_key: str | None = None,
) -> RunSummary:
    """Generate (or finish generating) the rationales of one run; see the module doc.

    ``retry_failed`` gives the patients whose rationale is stored as ``failed`` another
    full set of attempts in the same run: their failed rows are removed (campaigns only
    ever hold ``ok`` rationales) and the run's ``stats.retried`` counts them.

    With ``cfg.server_url`` the run records what the server serves under ``cfg.model``
    (its id, root and max model length, and the URL without credentials) and that is
    part of its key; ``api_key`` is sent to the server and stored nowhere.
    """
    template = template_for(cfg.mode, cfg.format, cfg.prompt_version)
    backend, served, model = _writer(cfg, backend, api_key)
    params = sampling(cfg)
    cohort_id, patients, records = _patients(engine, cfg)
    # A model decodes under a schema sized to its token budget; the template teacher
    # writes its JSON directly and needs none.
    bounds = (None if model.source == "template" else
              schema_bounds(list(records.values()), cfg, *output_counter(backend, model)))
    schema_ids = run_evidence_ids(list(records.values()))
    with Session(engine) as session:
        run = _open_run(session, cfg, cohort_id, patients, model, template, served, backend,
                        params, bounds)
        run_id = run.id
        prior = _drop_failed(session, run) if retry_failed else {}
        done = set(session.execute(select(Rationale.patient_id).where(
            Rationale.run_id == run_id, Rationale.variant == "original")).scalars())
        todo = [(p.id, records[p.id]) for p in patients if p.id not in done]

    summary = RunSummary(run_id, 0, len(patients) - len(todo), 0, 0, 0.0, retried=len(prior),
                         bounds=bounds)
    if todo and backend is None:
        backend = make_backend(cfg.backend, model,
                               options=EngineOptions(max_model_len=cfg.max_model_len,
                                                     seed=cfg.seed))
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start:start + cfg.batch_size]
        started = time.perf_counter()
        rows, tokens, attempts = _generate_batch(backend, batch, template, cfg, params, run_id,
                                                 prior, bounds, schema_ids)
        seconds = time.perf_counter() - started
        written = _store(engine, rows)
        failures = sum(r.status == "failed" for r in written)
        summary.generated += len(written)
        summary.failed += failures
        summary.tokens += tokens
        summary.seconds += seconds
        summary.retries += attempts - len(batch)
        _add_stats(engine, run_id, tokens=tokens, seconds=seconds, failures=failures,
                   attempts=attempts, retries=attempts - len(batch))
        if on_progress:
            on_progress(len(batch), tokens, seconds)
    if cfg.gold_share > 0:
        summary.gold = add_gold_copies(engine, run_id, cfg.gold_share, cfg.seed)
    _finish(engine, run_id, sessions_increment=1 if todo else 0)
    return summary


def _writer(cfg: GenerateConfig, backend: Backend | None, api_key: str | None
            ) -> tuple[Backend | None, ServedModel | None, ResolvedModel]:
    """Who writes the run's rationales: a server's model (its backend made here), the
    template teacher, or a local model (its engine made only when there is work)."""
    if backend is None and cfg.server_url:
        backend = make_backend(cfg.backend, None, server_url=cfg.server_url, served=cfg.model,
                               api_key=api_key)
    served: ServedModel | None = getattr(backend, "served", None)
    if served is not None:
        model = ResolvedModel(spec=served.id, source="server", path=served.root or "")
    elif cfg.backend in ("template", "template-balanced"):
        model = teacher_model(cfg.backend)
    else:
        model = resolve_model(cfg.model or DEFAULT_MODEL, cache_dir=cfg.cache_dir)
    return backend, served, model


def _patients(engine, cfg: GenerateConfig) -> tuple[int, list[Patient], dict]:
    """The cohort's id, the run's patients (split, first n) and their records."""
    with Session(engine) as session:
        cohort = (cohort_crud.get_cohort(session, cfg.cohort) if cfg.cohort
                  else cohort_crud.latest_cohort(session))
        patients = select_patients(session, cohort.id, cfg.split, cfg.n)
        if not patients:
            raise cohort_crud.CohortError(f"cohort {cohort.name!r} has no {cfg.split} patients")
        records = {p.id: cohort_crud.patient_record(session, p) for p in patients}
    return cohort.id, patients, records


def _open_run(session: Session, cfg: GenerateConfig, cohort_id: int, patients: list[Patient],
              model: ResolvedModel, template, served: ServedModel | None,
              backend: Backend | None, params, bounds) -> GenerationRun:
    """The run these settings identify: found by its key (a rerun resumes it) or created."""
    key, selection = run_key(cohort_id, [p.id for p in patients], cfg, model, template,
                             served=served, bounds=bounds)
    prompt_row = register_prompt(session, template)
    run = session.execute(select(GenerationRun).where(GenerationRun.content_hash == key)
                          ).scalars().first()
    if run is None:
        run = GenerationRun(content_hash=key, cohort_id=cohort_id,
                            prompt_template_id=prompt_row.id, model=model.spec,
                            backend=backend.name if backend else cfg.backend,
                            selection=selection, sampling_params=params.as_dict(),
                            seed=cfg.seed, status="running",
                            served_by=served.as_dict() if served else None,
                            stats={"tokens": 0, "seconds": 0.0, "failures": 0,
                                   "attempts": 0, "retries": 0, "sessions": 0,
                                   "schema_bounds": bounds.as_dict() if bounds else None})
        session.add(run)
    session.commit()
    return run


def _drop_failed(session: Session, run: GenerationRun) -> dict[int, int]:
    """Remove a run's failed originals; returns each such patient's attempts so far, so
    that its new attempts continue the sequence (new seeds, the retry temperature)
    instead of replaying the ones that failed."""
    failed = list(session.execute(select(Rationale).where(
        Rationale.run_id == run.id, Rationale.variant == "original",
        Rationale.status == "failed")).scalars())
    prior = {row.patient_id: row.attempts or 0 for row in failed}
    for row in failed:
        session.delete(row)
    if failed:
        run.stats = {**(run.stats or {}), "retried": (run.stats or {}).get("retried", 0)
                     + len(failed)}
    session.commit()
    return prior


def _generate_batch(backend: Backend, batch: list[tuple[int, dict]], template: TeacherPrompt,
                    cfg: GenerateConfig, params: SamplingConfig, run_id: int,
                    prior_attempts: dict[int, int] | None = None,
                    bounds: SchemaBounds | None = None, schema_ids: list[str] | None = None
                    ) -> tuple[list[Rationale], int, int]:
    from annotation_db.render import render_compact
    from generation.models import history_counter

    count = history_counter(cfg.history_tokenizer, cfg.cache_dir)
    states = {}
    for patient_id, record in batch:
        ids = [item["id"] for item in record["items"]]
        # What the prompt shows (the history budget may leave old items out): a
        # teacher without a model (the template backend) is given only these, as a
        # model would be, so it never cites an item the prompt did not show.
        # Label-blind: the backend never receives the label or the outcome.
        rendered = render_compact(record, cfg.history_budget, count)
        shown = set(rendered.shown_ids)
        visible = {k: v for k, v in record.items()
                   if cfg.mode == "label-conditioned" or k not in ("label", "outcome")}
        states[patient_id] = {
            "record": record, "ids": ids,
            "shown": {**visible, "items": [i for i in record["items"] if i["id"] in shown]},
            "schema": json_schema(schema_ids or ids, cfg.format, bounds),
            "messages": template.messages(record, history=rendered.text),
            "attempts": (prior_attempts or {}).get(patient_id, 0), "output": None, "raw": "",
            "error": None,
        }
    tokens = attempts = 0
    pending = list(states)
    for attempt in range(cfg.retries + 1):
        if not pending:
            break
        # a retried patient's attempts continue where its failed ones stopped
        numbers = {p: (prior_attempts or {}).get(p, 0) + attempt for p in pending}
        requests = [ChatRequest(states[p]["messages"], states[p]["schema"],
                                seed=_patient_seed(cfg.seed, p, numbers[p]),
                                temperature=params.temperature if numbers[p] == 0
                                else params.retry_temperature, record=states[p]["shown"])
                    for p in pending]
        completions = backend.complete(requests, params)
        still = []
        for patient_id, completion in zip(pending, completions, strict=True):
            state = states[patient_id]
            state["attempts"] += 1
            attempts += 1
            tokens += completion.completion_tokens
            output, error = parse_output(completion.text, state["ids"], cfg.format)
            if output is None and completion.finish_reason == "length":
                error = f"output cut off at max_tokens ({error})"
            state.update(raw=completion.text, output=output, error=error)
            if output is None:
                still.append(patient_id)
        pending = still

    rows = []
    for patient_id, state in states.items():
        output = state["output"]
        if output is None:
            rows.append(Rationale(run_id=run_id, patient_id=patient_id, format=cfg.format,
                                  status="failed", cited_evidence_ids=[], text="",
                                  raw_output=state["raw"], attempts=state["attempts"],
                                  grounding={"error": state["error"]}))
            continue
        cited = output.cited_ids()
        report = check_rationale(output.text, cited, output.prediction, state["record"],
                                 mode=cfg.mode)
        steps = (None if isinstance(output.rationale, str)
                 else [s.model_dump() for s in output.rationale])
        rows.append(Rationale(run_id=run_id, patient_id=patient_id, format=cfg.format,
                              status="ok", predicted_label=output.prediction == "yes",
                              cited_evidence_ids=cited, text=output.text, steps=steps,
                              raw_output=state["raw"], grounding=report.as_dict(),
                              grounding_score=report.score, attempts=state["attempts"]))
    return rows, tokens, attempts


def _store(engine, rows: list[Rationale]) -> list[Rationale]:
    """Write a batch in one transaction; rows another process wrote meanwhile are skipped."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            session.add_all(rows)
            session.commit()
        return rows
    except IntegrityError:
        written = []
        for row in rows:
            try:
                with Session(engine, expire_on_commit=False) as session:
                    session.add(Rationale.model_validate(row.model_dump(exclude={"id"})))
                    session.commit()
                written.append(row)
            except IntegrityError:
                continue
        return written


def _add_stats(engine, run_id: int, **increments) -> None:
    with Session(engine) as session:
        run = session.get(GenerationRun, run_id)
        stats = dict(run.stats or {})
        for key, value in increments.items():
            stats[key] = round(stats.get(key, 0) + value, 3)
        stats["tokens_per_second"] = round(stats["tokens"] / stats["seconds"], 1) if stats.get(
            "seconds") else 0.0
        run.stats = stats
        session.add(run)
        session.commit()


def _finish(engine, run_id: int, sessions_increment: int) -> None:
    with Session(engine) as session:
        run = session.get(GenerationRun, run_id)
        stats = dict(run.stats or {})
        stats["sessions"] = stats.get("sessions", 0) + sessions_increment
        run.stats = stats
        run.status = "finished"
        run.finished_at = dt.datetime.now(dt.UTC)
        session.add(run)
        session.commit()


def add_gold_copies(engine, run_id: int, share: float, seed: int) -> int:
    """Flawed copies (gold items) of a seeded random share of the run's ok rationales."""
    rng = random.Random(seed)
    made = 0
    with Session(engine) as session:
        originals = list(session.execute(select(Rationale).where(
            Rationale.run_id == run_id, Rationale.variant == "original",
            Rationale.status == "ok").order_by(Rationale.id)).scalars())
        existing = set(session.execute(select(Rationale.parent_id).where(
            Rationale.run_id == run_id, Rationale.is_gold)).scalars())
        # Re-running tops the share up; it never adds copies beyond it.
        candidates = [r for r in originals if r.id not in existing]
        wanted = max(0, math.ceil(share * len(originals)) - len(existing))
        chosen = sorted(rng.sample(candidates, min(len(candidates), wanted)), key=lambda r: r.id)
        for original in chosen:
            patient = session.get(Patient, original.patient_id)
            record = cohort_crud.patient_record(session, patient)
            prediction = "yes" if original.predicted_label else "no"
            for copy in flawed_copies(original.text, original.cited_evidence_ids, prediction,
                                      record, seed=seed + original.id):
                session.add(Rationale(
                    run_id=run_id, patient_id=original.patient_id, variant=copy["variant"],
                    parent_id=original.id, is_gold=True, format=original.format, status="ok",
                    predicted_label=copy["prediction"] == "yes",
                    cited_evidence_ids=original.cited_evidence_ids, text=copy["text"],
                    steps=None, raw_output="", grounding=copy["grounding"],
                    grounding_score=copy["grounding"]["score"]))
                made += 1
        session.commit()
    return made
