"""Verified dataset export: an approval policy, immutable content-addressed versions, and
training-ready views.

    rationale-audit export preview --policy policy.yaml
    rationale-audit export create --policy policy.yaml --name v1
    rationale-audit export list | show v1 | verify v1

A version is a folder of views, each split written as JSONL and Parquet, plus
``manifest.json``. Its SHA-256 is taken over the data files' canonical bytes (sorted paths
and their digests), and the same database state always yields byte-identical files: rows
are ordered by id, JSON keys are sorted, and nothing time-dependent is written into a data
file. Files are written to a temporary folder, made read-only and renamed into place; the
DatasetVersion row is committed last.
"""

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import audit, faithfulness
from annotation_db.adjudication import latest_ratings
from annotation_db.claim_review import campaign_verdicts, policy_reasons
from annotation_db.errors import UserError
from annotation_db.models import (
    Adjudication,
    Campaign,
    CampaignItem,
    Claim,
    DatasetVersion,
    GenerationRun,
    Patient,
    PromptTemplate,
    Rationale,
    User,
    utcnow,
)
from annotation_db.rubric import SCALE_DIMENSIONS, SCALE_MAX, SCALE_MIN
from annotation_db.student_task import completion_messages, prompt_messages

VIEWS = ("label_only", "rationale_free", "rationale_stepwise", "fewshot_pool", "ratings_long",
         "rationale_corrected", "preference")
# Written only when an accepted correction passes the policy: a version without corrections
# holds exactly the files it held before these views existed (so its content hash, and the
# identity of every run trained on it, does not move when the product gains a view).
CORRECTION_VIEWS = ("rationale_corrected", "preference")
# Views with no test split: the few-shot pool, the ratings, and the preference pairs (a
# model is evaluated on labels, through label_only's test split).
TRAIN_ONLY = {"fewshot_pool": ("train",), "ratings_long": ("train",),
              "preference": ("train", "validation")}
SPLITS = ("train", "validation", "test")


class ExportError(UserError):
    """An export that cannot be made or found; the message says why."""


class ApprovalPolicy(BaseModel):
    """When a rationale is approved for training data (a YAML file; its text is kept)."""

    model_config = ConfigDict(extra="forbid")

    campaigns: list[str] = Field(min_length=1, description="campaigns whose ratings count")
    min_ratings: int = Field(2, ge=1, description="ratings a rationale needs")
    min_accuracy: float = Field(4, ge=SCALE_MIN, le=SCALE_MAX,
                                description="lowest accuracy score (1-5)")
    min_faithfulness: float = Field(4, ge=SCALE_MIN, le=SCALE_MAX,
                                    description="lowest faithfulness (1-5)")
    aggregate: Literal["mean", "each"] = Field("mean", description="mean of the raters, or "
                                                                   "each rater")
    blocking_flags: list[str] = Field(
        ["hallucinated_fact", "unsafe_or_misleading", "label_contradicts_record"],
        description="any of these flags rejects")
    adjudication_overrides: bool = Field(True, description="an adjudicator's decision wins")
    min_gold_accuracy: float | None = Field(0.5, ge=0, le=1, description="raters who catch "
                                            "fewer gold items are left out (null: keep all)")
    include_simulated: bool = Field(False, description="count simulated ratings (dry runs "
                                                       "only: never for data you train on)")
    max_unsupported_claims: int | None = Field(
        None, ge=0, description="most claims the raters judge not in the record or "
        "contradicted (half or more of them; needs claim review; null: not checked)")
    min_supported_share: float | None = Field(
        None, ge=0, le=1, description="least share of a rationale's claims that half or more "
        "of the raters judge supported (needs claim review; null: not checked)")
    min_comprehensiveness_margin: float | None = Field(
        None, ge=-1, le=1, description="least margin by which removing the cited evidence "
        "moves the prediction more than removing as many random items (`faithfulness run`; "
        "null: not checked)")
    faithfulness_run: int | None = Field(
        None, description="faithfulness run the margin is read from (null: the newest "
        "finished run of each rationale's generation run)")
    history_budget: int = Field(1500, ge=40, description="tokens of history in each prompt, "
                                                         "counted with history_tokenizer")
    history_tokenizer: str = Field("bundled:smollm2-135m-instruct",
                                   description="model whose tokenizer counts history_budget")

    def to_yaml(self) -> str:
        """The policy as YAML, each key with its meaning as a comment (what the export
        screen shows to start from, and what the demo writes)."""
        lines = []
        for name, value in self.model_dump(mode="json").items():
            text = yaml.safe_dump({name: value}, default_flow_style=True, width=1000)
            text = text.strip().removeprefix("{").removesuffix("}")
            lines.append(f"{text:<40} # {type(self).model_fields[name].description}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_file(cls, path: str | Path) -> tuple["ApprovalPolicy", str]:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ExportError(f"cannot read policy {path}: {exc.strerror}") from exc
        return cls.from_text(text, source=str(path)), text

    @classmethod
    def from_text(cls, text: str, source: str = "policy") -> "ApprovalPolicy":
        try:
            return cls.model_validate(yaml.safe_load(text) or {})
        except (yaml.YAMLError, ValidationError) as exc:
            first = str(exc).splitlines()
            raise ExportError(f"invalid policy {source}: {' '.join(first[:3])}") from exc


@dataclass
class PolicyDecision:
    """The approval policy's verdict on one rationale (an adjudicator's is
    ``models.Decision``)."""

    rationale_id: int
    approved: bool
    reasons: list[str] = field(default_factory=list)
    provenance: str = "ratings"


def _gold_accuracy(session: Session, campaign: Campaign, include_simulated: bool
                   ) -> dict[str, float]:
    """Per rater, the share of gold items caught (as the agreement report computes it)."""
    from annotation_db.agreement import gold_accuracy
    from annotation_db.ratings import load_campaign_ratings
    from annotation_db.rubric import FLAGS

    ratings, gold, _ = load_campaign_ratings(session, campaign.name,
                                             include_simulated=include_simulated)
    return {row["rater"]: row["accuracy"]
            for row in gold_accuracy(ratings, gold, flag_dimensions=FLAGS)}


def evaluate(session: Session, policy: ApprovalPolicy) -> list[PolicyDecision]:
    """The policy's verdict on every original rationale rated in the policy's campaigns."""
    decisions: dict[int, PolicyDecision] = {}
    for name in policy.campaigns:
        campaign = session.execute(select(Campaign).where(Campaign.name == name)
                                   ).scalars().first()
        if campaign is None:
            raise ExportError(f"the policy names campaign {name!r}, which does not exist")
        accuracy_by_rater = _gold_accuracy(session, campaign, policy.include_simulated)
        excluded = {r for r, acc in accuracy_by_rater.items()
                    if policy.min_gold_accuracy is not None and acc < policy.min_gold_accuracy}
        adjudicated = {}
        for row in session.execute(select(Adjudication).where(
                Adjudication.campaign_id == campaign.id).order_by(Adjudication.revision)
        ).scalars():
            adjudicated[row.rationale_id] = row  # the latest revision wins
        originals = set(session.execute(select(Rationale.id).join(
            CampaignItem, CampaignItem.rationale_id == Rationale.id).where(
            CampaignItem.campaign_id == campaign.id, Rationale.variant == "original",
            Rationale.is_gold.is_(False))).scalars())
        ratings_by_item = latest_ratings(session, campaign.id)
        verdicts_by_item: dict[int, list[dict]] = defaultdict(list)
        claim_counts: dict[int, int] = {}
        if policy.max_unsupported_claims is not None or policy.min_supported_share is not None:
            for row in campaign_verdicts(session, campaign,
                                         include_simulated=policy.include_simulated):
                if row["rater"] not in excluded:
                    verdicts_by_item[row["rationale_id"]].append(row)
            claim_counts = dict(session.execute(
                select(Claim.rationale_id, func.count()).where(
                    Claim.rationale_id.in_(originals)).group_by(Claim.rationale_id)).all())
        try:
            margin_of = (faithfulness.margins(session, originals, policy.faithfulness_run)
                         if policy.min_comprehensiveness_margin is not None else {})
        except faithfulness.FaithfulnessError as exc:
            raise ExportError(f"min_comprehensiveness_margin: {exc}") from None
        contradicts = _contradicting_outcome(session, originals)
        for rationale_id in sorted(originals):
            if rationale_id in contradicts:  # whatever the ratings or an adjudication say
                decisions[rationale_id] = PolicyDecision(rationale_id, False,
                                                         [CONTRADICTS_OUTCOME])
                continue
            if policy.adjudication_overrides and rationale_id in adjudicated:
                row = adjudicated[rationale_id]
                decisions[rationale_id] = PolicyDecision(
                    rationale_id, row.decision == "approve",
                    [] if row.decision == "approve" else ["rejected by adjudication"],
                    "adjudicated")
                continue
            ratings = [r for r in ratings_by_item.get(rationale_id, [])
                       if (policy.include_simulated or not r["simulated"])
                       and r["rater"] not in excluded]
            reasons = _reasons(policy, ratings, verdicts_by_item[rationale_id],
                               claim_counts.get(rationale_id, 0))
            if policy.min_comprehensiveness_margin is not None:
                why = faithfulness.margin_reason(margin_of.get(rationale_id),
                                                 policy.min_comprehensiveness_margin)
                reasons += [why] if why else []
            if rationale_id not in decisions or decisions[rationale_id].approved is False:
                decisions[rationale_id] = PolicyDecision(rationale_id, not reasons, reasons)
    return [decisions[k] for k in sorted(decisions)]


CONTRADICTS_OUTCOME = ("its conclusion contradicts the recorded outcome (its training row "
                       "would end with the opposite answer)")


def _contradicting_outcome(session: Session, rationale_ids: set[int]) -> set[int]:
    """Rationales whose own prediction is the opposite of their patient's outcome. A
    training row is the rationale followed by the *recorded* answer, so such a row
    would teach a conclusion and the contrary answer after it. A label-conditioned
    teacher cannot write one that passes grounding; a label-blind teacher (or an
    imported rationale) can, and it is never exported."""
    if not rationale_ids:
        return set()
    return set(session.execute(select(Rationale.id).join(
        Patient, Patient.id == Rationale.patient_id).where(
        Rationale.id.in_(rationale_ids), Rationale.predicted_label.is_not(None),
        Rationale.predicted_label != Patient.label)).scalars())


def _reasons(policy: ApprovalPolicy, ratings: list[dict], verdicts: list[dict],
             claims: int) -> list[str]:
    """Why the policy rejects one rationale given its counted ratings and claim verdicts
    (none: approved)."""
    reasons = []
    if len(ratings) < policy.min_ratings:
        reasons.append("too few ratings")
    if ratings:
        for dim, minimum in zip(SCALE_DIMENSIONS, (policy.min_accuracy,
                                                   policy.min_faithfulness), strict=True):
            values = [r[dim] for r in ratings]
            low = (sum(values) / len(values) < minimum if policy.aggregate == "mean"
                   else min(values) < minimum)
            if low:
                reasons.append(f"{dim} below {minimum:g}")
        if any(set(r["flags"]) & set(policy.blocking_flags) for r in ratings):
            reasons.append("blocking flag")
        reasons += policy_reasons(verdicts, claims, policy.max_unsupported_claims,
                                  policy.min_supported_share)
    return reasons


def _rated_correction_passes(session: Session, policy: ApprovalPolicy, campaign: Campaign,
                             rationale_id: int, ratings_by_item: dict) -> bool:
    """In a campaign that rates its accepted corrections, whether one's own ratings pass
    the policy (as an original's would)."""
    ratings = [r for r in ratings_by_item.get(rationale_id, [])
               if policy.include_simulated or not r["simulated"]]
    verdicts = [v for v in campaign_verdicts(session, campaign,
                                             include_simulated=policy.include_simulated)
                if v["rationale_id"] == rationale_id]
    claims = session.execute(select(func.count()).where(
        Claim.rationale_id == rationale_id)).scalar()
    return not _reasons(policy, ratings, verdicts, claims)


def preview(session: Session, policy: ApprovalPolicy) -> dict:
    decisions = evaluate(session, policy)
    failing: dict[str, int] = defaultdict(int)
    for d in decisions:
        for reason in d.reasons:
            failing[reason] += 1
    return {"rationales": len(decisions), "approved": sum(d.approved for d in decisions),
            "rejected": sum(not d.approved for d in decisions),
            "adjudicated": sum(d.provenance == "adjudicated" for d in decisions),
            "failing_by_criterion": dict(sorted(failing.items()))}


def _pseudonym(username: str) -> str:
    return "rater-" + hashlib.sha256(f"rationale-audit:{username}".encode()).hexdigest()[:10]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows
                   ).encode()


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: json.dumps(v, sort_keys=True, ensure_ascii=False)
                                   if isinstance(v, list | dict) else v
                                   for k, v in sorted(r.items())} for r in rows]) \
        if rows else pa.table({})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


CounterFor = Callable[[str], Callable[[str], int]]


def build(session: Session, policy: ApprovalPolicy, *, counter_for: CounterFor
          ) -> tuple[dict[str, bytes], dict]:
    """Every file of a version (relative path → bytes) and the manifest's data part.

    ``counter_for(spec)`` returns a token counter with model ``spec``'s tokenizer
    (``generation.models.history_counter``); histories are budgeted with
    ``counter_for(policy.history_tokenizer)``. Tokenizers live a floor above this
    package, so the caller hands the counter down.
    """
    count = counter_for(policy.history_tokenizer)
    decisions = evaluate(session, policy)
    rationales, cohort_id = _approved_rationales(session, decisions)
    patients = {p.id: p for p in session.execute(select(Patient).where(
        Patient.cohort_id == cohort_id).order_by(Patient.id)).scalars()}
    texts = _PatientTexts(session, policy, patients, count)
    views: dict[str, dict[str, list[dict]]] = {v: {s: [] for s in SPLITS} for v in VIEWS}
    _add_label_rows(views, patients, sorted({r.patient_id for r in rationales.values()}),
                    texts.prompt)
    _add_rationale_rows(views, patients, rationales, texts)
    _corrections(session, policy, patients, texts.prompt, views)
    if not any(views["rationale_corrected"].values()):
        for view in CORRECTION_VIEWS:
            del views[view]
    for view in ("rationale_free", "rationale_stepwise", "rationale_corrected"):
        if view not in views:
            continue
        views[view]["test"] = [dict(r, completion=completion_messages(r["label"]))
                               for r in views["label_only"]["test"]]
    _add_ratings_rows(session, policy, views)
    files, counts = _view_files(views)
    leaks = _split_leaks(views, patients)
    if leaks:
        raise ExportError(f"patients in two splits: {sorted(leaks)[:5]}")
    data = {"counts": counts, "cohort_id": cohort_id,
            "decisions": preview_from(decisions)}
    return files, data


def _approved_rationales(session: Session, decisions: list[PolicyDecision]
                         ) -> tuple[dict[int, Rationale], int]:
    """The approved rationales by id, and the one cohort they all come from."""
    approved = [d.rationale_id for d in decisions if d.approved]
    rationales = {r.id: r for r in session.execute(select(Rationale).where(
        Rationale.id.in_(approved)).order_by(Rationale.id)).scalars()} if approved else {}
    patient_ids = {r.patient_id for r in rationales.values()}
    cohort_ids = set(session.execute(select(Patient.cohort_id).where(
        Patient.id.in_(patient_ids))).scalars()) if patient_ids else set()
    if len(cohort_ids) > 1:
        raise ExportError("approved rationales come from several cohorts; export one at a time")
    if not cohort_ids:
        raise ExportError("no rationale passes the policy; nothing to export "
                          "(see `rationale-audit export preview`)")
    return rationales, cohort_ids.pop()


class _PatientTexts:
    """Each patient's history rendered within the policy's budget (once), and the
    prompt it makes."""

    def __init__(self, session: Session, policy: ApprovalPolicy, patients: dict[int, Patient],
                 count: Callable[[str], int]):
        self.session, self.policy, self.patients, self.count = session, policy, patients, count
        self.records: dict[int, dict] = {}

    def record(self, pid: int) -> dict:
        from annotation_db.cohorts import patient_record

        if pid not in self.records:
            self.records[pid] = patient_record(self.session, self.patients[pid])
        return self.records[pid]

    def history(self, pid: int) -> str:
        from annotation_db.render import HistoryBudgetError, render_compact

        try:
            return render_compact(self.record(pid), self.policy.history_budget, self.count).text
        except HistoryBudgetError as exc:
            raise ExportError(f"the policy's history_budget is too small: {exc}") from None

    def prompt(self, pid: int) -> list[dict]:
        return prompt_messages(self.history(pid))


def _add_label_rows(views: dict, patients: dict[int, Patient], approved_patients: list[int],
                    prompt: Callable[[int], list[dict]]) -> None:
    """``label_only``: the approved rationales' patients outside test, and every test
    patient (evaluation is on labels)."""
    for pid in approved_patients:
        split = patients[pid].split
        if split != "test":
            views["label_only"][split].append({
                "id": patients[pid].external_id, "label": int(patients[pid].label),
                "prompt": prompt(pid), "completion": completion_messages(patients[pid].label)})
    for pid, p in patients.items():  # evaluation is on labels: every test patient
        if p.split == "test":
            views["label_only"]["test"].append({
                "id": p.external_id, "label": int(p.label), "prompt": prompt(pid),
                "completion": completion_messages(p.label)})


def _add_rationale_rows(views: dict, patients: dict[int, Patient],
                        rationales: dict[int, Rationale], texts: _PatientTexts) -> None:
    """Each approved rationale outside test in its format's view; in train, also a
    demonstration in ``fewshot_pool``."""
    for rationale in rationales.values():
        pid, split = rationale.patient_id, patients[rationale.patient_id].split
        view = f"rationale_{rationale.format}"
        row = {"id": f"{patients[pid].external_id}-r{rationale.id}",
               "label": int(patients[pid].label), "prompt": texts.prompt(pid),
               "completion": completion_messages(patients[pid].label, rationale.text)}
        if split != "test":
            views[view][split].append(row)
        if split == "train":
            views["fewshot_pool"]["train"].append({
                "id": row["id"], "label": int(patients[pid].label), "format": rationale.format,
                "history": texts.history(pid),
                "rationale": rationale.text.strip(),
                "evidence": rationale.cited_evidence_ids})


def _add_ratings_rows(session: Session, policy: ApprovalPolicy, views: dict) -> None:
    """``ratings_long``: one row per counted rating and dimension (and per flag), raters
    pseudonymous."""
    for name in policy.campaigns:
        campaign = session.execute(select(Campaign).where(Campaign.name == name)).scalars().one()
        for rationale_id, ratings in sorted(latest_ratings(session, campaign.id).items()):
            for r in ratings:
                if r["simulated"] and not policy.include_simulated:
                    continue
                for dim in SCALE_DIMENSIONS:
                    views["ratings_long"]["train"].append({
                        "campaign": name, "rationale_id": rationale_id,
                        "rater": _pseudonym(r["rater"]), "dimension": dim, "score": r[dim],
                        "simulated": r["simulated"]})
                for flag in sorted(r["flags"]):
                    views["ratings_long"]["train"].append({
                        "campaign": name, "rationale_id": rationale_id,
                        "rater": _pseudonym(r["rater"]), "dimension": flag, "score": 1,
                        "simulated": r["simulated"]})


def _view_files(views: dict) -> tuple[dict[str, bytes], dict[str, dict[str, int]]]:
    """Each view's splits as JSONL and Parquet files, and their row counts."""
    files: dict[str, bytes] = {}
    counts: dict[str, dict[str, int]] = {}
    for view, splits in views.items():
        counts[view] = {}
        for split, rows in splits.items():
            if split not in TRAIN_ONLY.get(view, SPLITS):
                continue
            name = "all" if view == "ratings_long" else split
            files[f"{view}/{name}.jsonl"] = _jsonl(rows)
            files[f"{view}/{name}.parquet"] = _parquet(rows)
            counts[view][name] = len(rows)
    return files, counts


def _corrections(session: Session, policy: ApprovalPolicy, patients: dict[int, Patient],
                 prompt: Callable[[int], list[dict]], views: dict) -> None:
    """Accepted corrections of the policy's campaigns (never proposed or rejected ones),
    for patients outside the test split: as SFT targets (``rationale_corrected``, same
    prompt and completion form as the other rationale views) and as preference pairs
    (``preference``: chosen the correction, rejected the rationale it corrects; TRL's
    conversational DPO format). In a campaign that rates its corrections, a correction
    must also pass the policy on its own ratings."""
    from annotation_db.corrections import accepted

    for name in policy.campaigns:
        campaign = session.execute(select(Campaign).where(Campaign.name == name)).scalars().one()
        rated = (campaign.settings or {}).get("rate_corrections")
        ratings_by_item = latest_ratings(session, campaign.id) if rated else {}
        for row in accepted(session, campaign):
            corrected, source = row["corrected"], row["source"]
            patient = patients.get(corrected.patient_id)
            if patient is None or patient.split == "test":
                continue
            if corrected.predicted_label is not None and \
                    corrected.predicted_label != patient.label:
                continue  # as an original would be: its row would contradict its conclusion
            if rated and not _rated_correction_passes(session, policy, campaign, corrected.id,
                                                      ratings_by_item):
                continue  # its raters' verdict, under the same policy as the originals
            label, key = patient.label, f"{patient.external_id}-r{corrected.id}"
            views["rationale_corrected"][patient.split].append({
                "id": key, "label": int(label), "prompt": prompt(patient.id),
                "completion": completion_messages(label, corrected.text),
                "corrects": source.id})
            views["preference"][patient.split].append({
                "id": key, "label": int(label), "prompt": prompt(patient.id),
                "chosen": completion_messages(label, corrected.text),
                "rejected": completion_messages(label, source.text)})


def preview_from(decisions: list[PolicyDecision]) -> dict:
    return {"approved": sum(d.approved for d in decisions),
            "rejected": sum(not d.approved for d in decisions),
            "adjudicated": sum(d.provenance == "adjudicated" for d in decisions)}


def _split_leaks(views: dict, patients: dict[int, Patient]) -> set[str]:
    by_id = {p.external_id: p.split for p in patients.values()}
    seen: dict[str, set[str]] = defaultdict(set)
    for view in ("label_only", "rationale_free", "rationale_stepwise", *CORRECTION_VIEWS):
        for split, rows in views.get(view, {}).items():
            for row in rows:
                seen[row["id"].split("-r")[0]].add(split)
    return {pid for pid, splits in seen.items() if len(splits) > 1 or
            by_id.get(pid) not in splits}


def content_hash(files: dict[str, bytes]) -> str:
    return _digest_lines((path, hashlib.sha256(data).hexdigest())
                         for path, data in sorted(files.items()))


def _digest_lines(named_digests) -> str:
    """The SHA-256 of ``name digest`` lines, in the order given: a version's (or a
    view's) content hash."""
    canonical = "\n".join(f"{name} {digest}" for name, digest in named_digests)
    return hashlib.sha256(canonical.encode()).hexdigest()


def view_hashes(manifest: dict) -> dict[str, str]:
    """Each view's own content hash (its files, as :func:`content_hash` hashes a whole
    version), from a manifest's per-file hashes: two versions whose ``label_only`` hashes
    match give label-only training the same rows, byte for byte."""
    views: dict[str, list[tuple[str, str]]] = {}
    for path, sha in sorted(manifest["files"].items()):
        view, _, name = path.partition("/")
        views.setdefault(view, []).append((name, sha))
    return {view: _digest_lines(lines) for view, lines in views.items()}


def _provenance(session: Session, policy: ApprovalPolicy) -> dict:
    # Distinct ids first: PostgreSQL cannot compare the runs' JSON columns for DISTINCT.
    run_ids = select(Rationale.run_id).join(
        CampaignItem, CampaignItem.rationale_id == Rationale.id).join(
        Campaign, Campaign.id == CampaignItem.campaign_id).where(
        Campaign.name.in_(policy.campaigns)).distinct()
    runs = session.execute(
        select(GenerationRun, PromptTemplate).join(
            PromptTemplate, PromptTemplate.id == GenerationRun.prompt_template_id)
        .where(GenerationRun.id.in_(run_ids)).order_by(GenerationRun.id)).all()
    out = {"runs": [{"run_id": run.id, "model": run.model, "backend": run.backend,
                     "prompt": f"{prompt.name}@{prompt.version}",
                     "prompt_sha256": prompt.content_hash, "sampling": run.sampling_params,
                     "seed": run.seed} for run, prompt in runs]}
    if policy.min_comprehensiveness_margin is not None:  # the scorer the margins came from
        try:
            out["faithfulness"] = [faithfulness.identity(r) for r in faithfulness.runs_for(
                session, {run.id for run, _ in runs}, policy.faithfulness_run)]
        except faithfulness.FaithfulnessError as exc:
            raise ExportError(f"min_comprehensiveness_margin: {exc}") from None
    return out


def _agreement(session: Session, policy: ApprovalPolicy) -> dict:
    from annotation_db.agreement import agreement_report
    from annotation_db.ratings import default_dimensions, load_campaign_ratings

    out = {}
    for name in policy.campaigns:
        ratings, gold, _ = load_campaign_ratings(session, name,
                                                 include_simulated=policy.include_simulated)
        if not ratings:
            out[name] = {"computable": False, "reason": "no ratings"}
            continue
        report = agreement_report(ratings, default_dimensions(set(SCALE_DIMENSIONS)),
                                  replicates=500, seed=0, gold_items=gold)
        out[name] = {s["dimension"]: {k: s["alpha"].get(k) for k in
                                      ("alpha", "ci95", "computable", "reason")}
                     for s in report["dimensions"]}
    return out


VERSION_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def check_version_name(name: str) -> None:
    """Refuse a version name that is not 1–64 letters, digits, '-', '_' or '.' with no
    leading dot: the name becomes a folder under the exports root, so nothing in it may
    lead elsewhere (``..``, ``/``) or hide the folder."""
    if not VERSION_NAME.fullmatch(name or ""):
        raise ExportError(f"version name {name!r} must be 1–64 letters, digits, '-', '_' or "
                          "'.', not starting with a dot")


def _inside(root: Path, child: str) -> Path:
    """``root / child``, refused unless it resolves to a folder directly inside ``root``
    (a second line of defence behind :func:`check_version_name`, e.g. against a link)."""
    if (root / child).is_symlink():
        raise ExportError(f"version folder {child!r} in {root} is a link; a version is "
                          "written only to a folder of its own")
    path = (root / child).resolve()
    if path.parent != root.resolve():
        raise ExportError(f"version folder {child!r} would be outside {root}")
    return path


def create(session: Session, *, name: str, policy_path: str | Path | None = None,
           policy_text: str | None = None, root: str | Path = "exports",
           created_by: int | None = None, counter_for: CounterFor, actor: str | None = None,
           address: str | None = None) -> DatasetVersion:
    """Build, write and register a version from a policy file or the policy's YAML text
    (``counter_for`` as in :func:`build`); the audit trail records who (``actor``,
    from ``address``) in the same transaction."""
    from annotation_db.provenance import code_version, library_versions

    check_version_name(name)
    if policy_path is not None:
        policy, policy_text = ApprovalPolicy.from_file(policy_path)
    else:
        policy = ApprovalPolicy.from_text(policy_text or "")
    if session.execute(select(DatasetVersion.id).where(DatasetVersion.name == name)).first():
        raise ExportError(f"a dataset version named {name!r} already exists; versions never "
                          "change, so choose a new name")
    files, data = build(session, policy, counter_for=counter_for)
    digest = content_hash(files)
    same = session.execute(select(DatasetVersion).where(DatasetVersion.content_hash == digest)
                           ).scalars().first()
    if same is not None:
        raise ExportError(f"the data are identical to version {same.name!r} ({digest[:12]})")
    cohort = session.get(Patient, session.execute(select(func.min(Patient.id)).where(
        Patient.cohort_id == data["cohort_id"])).scalar())
    from annotation_db.models import Cohort

    cohort_row = session.get(Cohort, cohort.cohort_id)
    manifest = {
        "name": name, "content_sha256": digest, "policy": policy.model_dump(),
        "policy_text": policy_text, "counts": data["counts"], "decisions": data["decisions"],
        "agreement": _agreement(session, policy), "provenance": _provenance(session, policy),
        "cohort": {"name": cohort_row.name, "seed": cohort_row.seed, "source": cohort_row.source},
        "code_version": code_version(), "libraries": library_versions(),
        "files": {path: hashlib.sha256(blob).hexdigest() for path, blob in sorted(files.items())},
    }
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = _inside(root, f"{name}-{digest[:12]}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for path, blob in files.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
            target.chmod(0o444)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (tmp / "manifest.json").chmod(0o444)
        _place(tmp, final, files)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    version = DatasetVersion(name=name, content_hash=digest, manifest=manifest,
                             path=str(final.resolve()), created_by=created_by)
    session.add(version)
    audit.record(session, "export_created", actor=actor, address=address, target=name,
                 commit=False, content_sha256=digest)
    session.commit()
    session.refresh(version)  # loaded, so readable after the session closes
    return version


def _place(tmp: Path, final: Path, files: dict[str, bytes]) -> None:
    """Move the written folder ``tmp`` to its name. A folder already there has the same
    name and content hash: a database that no longer holds the version wrote it (one
    rebuilt from nothing beside its old exports), or another database that does. If its
    data files are these, byte for byte, only its manifest is replaced (atomically: the
    folder never disappears, and another database that registered it still verifies, as
    verification checks the data files); otherwise it is refused and left as it is."""
    if not final.exists():
        tmp.rename(final)
        return
    found = {str(p.relative_to(final)) for p in final.rglob("*") if p.is_file()}
    found.discard("manifest.json")
    problems = ([f"{p} missing" for p in sorted(set(files) - found)]
                + [f"{p} not part of these data" for p in sorted(found - set(files))]
                + [f"{p} changed" for p in sorted(set(files) & found)
                   if (final / p).read_bytes() != files[p]])
    if problems:
        raise ExportError(f"{final} already exists and does not hold these data "
                          f"({'; '.join(problems[:3])}): move it away, or export under "
                          "another root")
    try:
        os.replace(tmp / "manifest.json", final / "manifest.json")
    except OSError as error:
        raise ExportError(f"{final} holds these data, but its manifest cannot be replaced "
                          f"({error.strerror}): make the folder writable, or move it away"
                          ) from error
    shutil.rmtree(tmp)


def get_version(session: Session, name: str) -> DatasetVersion:
    version = session.execute(select(DatasetVersion).where(DatasetVersion.name == name)
                              ).scalars().first()
    if version is None:
        known = session.execute(select(DatasetVersion.name)).scalars().all()
        raise ExportError(f"no dataset version named {name!r}; known: "
                          f"{', '.join(known) or 'none'}")
    return version


def verify(version: DatasetVersion) -> list[str]:
    """Problems found by re-hashing the version's files (empty when intact)."""
    if version.deleted_at is not None:
        return [f"version {version.name!r} was deleted; only its manifest is kept"]
    folder = Path(version.path)
    problems = []
    expected = version.manifest["files"]
    for path, digest in sorted(expected.items()):
        file = folder / path
        if not file.is_file():
            problems.append(f"{path}: missing")
        elif hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: content changed")
    found = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {
        "manifest.json"}
    problems += [f"{p}: not part of the version" for p in sorted(found - set(expected))]
    canonical = "\n".join(f"{p} {d}" for p, d in sorted(expected.items()))
    if hashlib.sha256(canonical.encode()).hexdigest() != version.content_hash:
        problems.append("the manifest's file list does not match the version hash")
    return problems


def delete(session: Session, *, name: str, admin: User,
           address: str | None = None) -> DatasetVersion:
    if admin.role != "admin":
        raise ExportError("only an admin can delete a dataset version")
    version = get_version(session, name)
    folder = Path(version.path)
    for path in version.manifest["files"]:
        file = folder / path
        if file.exists():
            os.chmod(file, 0o644)
            file.unlink()
    version.deleted_at = utcnow()
    session.add(version)
    audit.record(session, "export_deleted", actor=admin.username, address=address,
                 target=name, commit=False)
    session.commit()
    return version
