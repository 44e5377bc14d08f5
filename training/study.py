"""The data half of a study: cohort → rationales → audit → verified export.

:func:`prepare_dataset` runs the stages the training grid needs, each one
idempotent (a stage whose output exists is reused), so a reproduction can be
re-run or resumed with the same command:

1. a synthetic cohort (case-enriched by default);
2. rationales for the train and validation patients in each format, from a
   label-conditioned teacher (the template teacher, or a model through vLLM);
3. an audit campaign: real clinicians' ratings where a named campaign exists,
   simulated raters otherwise — simulated ratings are flagged as such in the
   campaign, the export policy and every report;
4. a verified dataset version under the stated approval policy.
"""

from collections.abc import Callable
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import campaigns, export
from annotation_db.models import Campaign, Cohort, DatasetVersion
from annotation_db.rubric import SCALE_DIMENSIONS
from generation.models import DEFAULT_MODEL, history_counter
from training.study_config import TEMPLATE_TEACHERS, DataSettings


def _cohort(engine: Engine, data: DataSettings, say) -> int:
    from generation.cohort_config import CohortConfig
    from generation.cohort_store import store_generated_cohort

    with Session(engine) as session:
        row = session.execute(select(Cohort).where(Cohort.name == data.cohort)).scalars().first()
        if row is not None:
            say(f"cohort {data.cohort!r} exists; reusing it")
            return row.id
    cfg = CohortConfig(name=data.cohort, n=data.n, seed=data.seed, mode=data.mode)
    say(f"generating cohort {data.cohort!r} ({data.n} patients, {data.mode})")
    return store_generated_cohort(engine, cfg)[0]


def _rationales(engine: Engine, data: DataSettings, cache_dir: str | None, say) -> list[int]:
    from generation.rationales import generate_rationales
    from generation.rationales_config import GenerateConfig

    run_ids = []
    backend = data.teacher if data.teacher in TEMPLATE_TEACHERS else "vllm"
    for fmt in data.formats:
        for split in ("train", "validation"):
            cfg = GenerateConfig(cohort=data.cohort, split=split, n=None, format=fmt,
                                 mode=data.teacher_mode, backend=backend,
                                 model=data.teacher if backend == "vllm" else "bundled:smollm2-"
                                 "135m-instruct", cache_dir=cache_dir, seed=data.seed,
                                 history_budget=data.history_budget,
                                 history_tokenizer=data.history_tokenizer or DEFAULT_MODEL,
                                 gold_share=data.audit.gold_share if split == "train" else 0.0)
            summary = generate_rationales(engine, cfg)
            say(f"rationales ({fmt}, {split}): {summary.generated} new, "
                f"{summary.skipped} reused, {summary.failed} failed")
            run_ids.append(summary.run_id)
    return run_ids


def _audit(engine: Engine, data: DataSettings, run_ids: list[int], say) -> dict:
    from annotation_db.simulate import simulate, simulated_raters

    audit = data.audit
    with Session(engine) as session:
        existing = session.execute(select(Campaign).where(Campaign.name == audit.campaign)
                                   ).scalars().first()
        if existing is not None:
            status = campaigns.status(session, existing)
            simulated = all(n.startswith("sim-rater")
                            for n in (existing.settings or {}).get("annotators", []))
            say(f"campaign {audit.campaign!r} exists ({'simulated' if simulated else 'real'} "
                "raters); using its ratings")
            return {"campaign": audit.campaign, "simulated": simulated, "status": status}
        names = simulated_raters(session, audit.simulated_raters)
        campaign = campaigns.create_campaign(
            session, name=audit.campaign, run_ids=run_ids, annotators=names, k=audit.k,
            gold_share=audit.gold_share, seed=data.seed)
        added = simulate(session, campaign, noise=audit.noise, seed=data.seed)
        say(f"campaign {audit.campaign!r}: {added} ratings from {len(names)} SIMULATED raters "
            "(no clinician has rated these rationales)")
        return {"campaign": audit.campaign, "simulated": True, "ratings": added}


def prepare_dataset(engine: Engine, data: DataSettings, *, exports_dir: str | Path,
                    cache_dir: str | None = None,
                    on_stage: Callable[[str], None] | None = None) -> tuple[DatasetVersion, dict]:
    """The study's dataset version (made if missing) and what each stage did."""
    say = on_stage or (lambda _: None)
    with Session(engine) as session:
        version = session.execute(select(DatasetVersion).where(
            DatasetVersion.name == data.dataset)).scalars().first()
        if version is not None:
            say(f"dataset version {data.dataset!r} exists; reusing it")
            return version, {"reused": True, **describe_version(version)}
    cohort_id = _cohort(engine, data, say)
    run_ids = _rationales(engine, data, None if data.teacher in TEMPLATE_TEACHERS else cache_dir,
                          say)
    audit = _audit(engine, data, run_ids, say)
    policy = {"history_budget": data.history_budget,
              "history_tokenizer": data.history_tokenizer or DEFAULT_MODEL, **data.policy,
              "campaigns": [data.audit.campaign]}
    if audit["simulated"] and not policy.get("include_simulated"):
        raise export.ExportError("the audit campaign has only simulated ratings but the policy "
                                 "excludes them; set include_simulated: true or rate for real")
    with Session(engine) as session:
        version = export.create(session, name=data.dataset, root=exports_dir,
                                policy_text=yaml.safe_dump(policy, sort_keys=False),
                                counter_for=history_counter)
    say(f"dataset version {version.name} ({version.content_hash[:12]}): "
        f"{version.manifest['counts']}")
    described = describe_version(version)
    return version, {"cohort_id": cohort_id, "generation_runs": run_ids,
                     "teacher": described["teacher"], "audit": {**audit, **described["audit"]},
                     "policy": policy}


def describe_version(version: DatasetVersion) -> dict:
    """What a version's own files say of its teacher and ratings (for reports on reuse).

    ``simulated`` is true only when every exported rating is simulated;
    ``same_score_share`` is, per dimension, the share of ratings at the most
    common score (a high share leaves little variance for agreement to measure)."""
    from collections import Counter

    from training.data import read_view

    manifest = version.manifest
    ratings = read_view(version, "ratings_long", "all") \
        if "ratings_long/all.jsonl" in manifest.get("files", {}) else []
    shares = {}
    for dim in SCALE_DIMENSIONS:
        scores = [r["score"] for r in ratings if r["dimension"] == dim]
        if scores:
            shares[dim] = Counter(scores).most_common(1)[0][1] / len(scores)
    return {"teacher": sorted({run["model"] for run in
                               (manifest.get("provenance") or {}).get("runs", [])}),
            "audit": {"campaigns": (manifest.get("policy") or {}).get("campaigns", []),
                      "ratings": sum(r["dimension"] == "accuracy" for r in ratings),
                      "simulated": bool(ratings) and all(r["simulated"] for r in ratings),
                      "simulated_share": (sum(r["simulated"] for r in ratings) / len(ratings))
                      if ratings else None,
                      "same_score_share": shares}}
