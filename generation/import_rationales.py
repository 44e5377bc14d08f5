"""Rationales written elsewhere, brought in to be audited like generated ones.

    rationale-audit generate import outputs.jsonl --model org/model-7b --format free
    rationale-audit generate import batch_output.jsonl --file-format openai-batch --model gpt

Two kinds of file, one rationale per line, keyed by the patient's id in the cohort:

``jsonl``
    ``{"patient_id": "P0000012", "prediction": "yes", "evidence": ["E3"], "rationale": …}``:
    the project's output schema (:mod:`generation.rationale_schema`) plus the patient id.
``openai-batch``
    An OpenAI Batch API *output* file: ``custom_id`` is the patient id, and
    ``response.body.choices[0].message.content`` is the JSON of the output schema.

Each line is checked as a generated rationale is: JSON, the schema and format, every cited
id one of the patient's own, the grounding checks; and the file as a whole: every patient
known, none twice. Any bad line refuses the whole file with every bad line named (line
number and rule) and nothing written; with ``skip_invalid`` the good lines are imported and
the refused ones written to a file beside the input with their reasons. The run records
the stated model name and the file's SHA-256 as its provenance; importing the same file
again adds nothing. Claims are split when the rationales are stored, as for any other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from annotation_db import cohorts as cohort_crud
from annotation_db.command_config import stable_hash
from annotation_db.errors import UserError
from annotation_db.models import GenerationRun, Patient, Rationale, utcnow
from annotation_db.models import PromptTemplate as PromptRow
from generation.grounding import check_rationale
from generation.import_rationales_config import ImportConfig
from generation.rationale_schema import parse_output

MAX_LINE_BYTES = 200_000


class RationaleImportError(UserError):
    """A file that cannot be imported; the message names each bad line."""


@dataclass
class ImportSummary:
    run_id: int | None
    imported: int
    already: int
    refused: list[str] = field(default_factory=list)
    refused_file: str | None = None
    file_sha256: str = ""


def _payload(line: str, file_format: str) -> tuple[str | None, str | None, str]:
    """(patient id, the output JSON text, error) of one line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, None, f"not JSON ({exc.msg})"
    if not isinstance(data, dict):
        return None, None, "not a JSON object"
    if file_format == "jsonl":
        pid = data.pop("patient_id", None)
        return (str(pid) if pid is not None else None), json.dumps(data), (
            "" if pid is not None else "no patient_id")
    pid = data.get("custom_id")
    if data.get("error"):
        return pid, None, f"the batch request failed: {data['error']}"
    try:
        content = data["response"]["body"]["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return pid, None, "no response.body.choices[0].message.content"
    if pid is None:
        return None, None, "no custom_id (the patient id)"
    return str(pid), content if isinstance(content, str) else json.dumps(content), ""


def read_file(session: Session, path: Path, cfg: ImportConfig, cohort_id: int
              ) -> tuple[list[dict], list[tuple[int, str, str]]]:
    """Good rows (patient, output, grounding) and refused lines (number, text, reason)."""
    raw = path.read_bytes()
    good, bad, seen = [], [], {}
    patients = {p.external_id: p for p in session.execute(
        select(Patient).where(Patient.cohort_id == cohort_id)).scalars()}
    for number, chunk in enumerate(raw.splitlines(), start=1):
        if not chunk.strip():
            continue
        if len(chunk) > MAX_LINE_BYTES:
            bad.append((number, "", f"longer than {MAX_LINE_BYTES:,} bytes"))
            continue
        try:
            line = chunk.decode("utf-8")
        except UnicodeDecodeError:
            bad.append((number, "", "not UTF-8 text"))
            continue
        pid, output_text, error = _payload(line, cfg.file_format)
        if error:
            bad.append((number, line, error))
            continue
        patient = patients.get(pid)
        if patient is None:
            bad.append((number, line, f"unknown patient {pid!r} in this cohort"))
            continue
        if pid in seen:
            bad.append((number, line, f"patient {pid} again (first on line {seen[pid]})"))
            continue
        seen[pid] = number
        record = cohort_crud.patient_record(session, patient)
        ids = [item["id"] for item in record["items"]]
        output, reason = parse_output(output_text, ids, cfg.format)
        if output is None:
            bad.append((number, line, reason))
            continue
        unknown = [i for i in output.cited_ids() if i not in set(ids)]
        if unknown:
            bad.append((number, line, f"cites {', '.join(unknown[:5])}, not in patient "
                                      f"{pid}'s record"))
            continue
        report = check_rationale(output.text, output.cited_ids(), output.prediction, record,
                                 mode=cfg.mode)
        good.append({"patient": patient, "output": output, "report": report,
                     "raw": output_text})
    return good, bad


def import_rationales(engine, path: str | Path, cfg: ImportConfig) -> ImportSummary:
    """Check the whole file, then store its rationales in one transaction (or nothing)."""
    path = Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise RationaleImportError(f"cannot read {path}: {exc.strerror}") from None
    with Session(engine) as session:
        cohort = (cohort_crud.get_cohort(session, cfg.cohort) if cfg.cohort
                  else cohort_crud.latest_cohort(session))
        good, bad = read_file(session, path, cfg, cohort.id)
        refused = [f"line {n}: {reason}" for n, _, reason in bad]
        if bad and not cfg.skip_invalid:
            shown = "; ".join(refused[:10]) + (f"; … {len(refused) - 10} more"
                                                if len(refused) > 10 else "")
            raise RationaleImportError(f"{path.name}: {len(bad)} bad line(s), nothing imported "
                               f"(--skip-invalid imports the rest): {shown}")
        if not good:
            raise RationaleImportError(f"{path.name}: no rationale to import")
        refused_file = None
        if bad:
            refused_file = path.with_name(path.name + ".refused.jsonl")
            refused_file.write_text("".join(json.dumps({"line": n, "reason": reason,
                                                        "text": text}) + "\n"
                                            for n, text, reason in bad))
        key = stable_hash({"import": digest, "cohort": cohort.id, "model": cfg.model,
                           "format": cfg.format, "mode": cfg.mode,
                           "file_format": cfg.file_format})
        run = session.execute(select(GenerationRun).where(GenerationRun.content_hash == key)
                              ).scalars().first()
        if run is not None:
            return ImportSummary(run.id, 0, len(good), refused, str(refused_file or "") or None,
                                 digest)
        prompt = _import_prompt(session, cfg)
        run = GenerationRun(content_hash=key, cohort_id=cohort.id, prompt_template_id=prompt.id,
                            model=cfg.model, backend="import",
                            selection={"patients": [g["patient"].id for g in good],
                                       "file": path.name, "file_sha256": digest,
                                       "file_format": cfg.file_format, "mode": cfg.mode,
                                       "refused_lines": len(bad)},
                            sampling_params={}, seed=0, status="finished",
                            stats={"imported": len(good), "refused": len(bad)},
                            finished_at=utcnow())
        session.add(run)
        session.flush()
        for g in good:
            output, report = g["output"], g["report"]
            steps = None if isinstance(output.rationale, str) else [
                s.model_dump() for s in output.rationale]
            session.add(Rationale(run_id=run.id, patient_id=g["patient"].id, format=cfg.format,
                                  status="ok", predicted_label=output.prediction == "yes",
                                  cited_evidence_ids=output.cited_ids(), text=output.text,
                                  steps=steps, raw_output=g["raw"], grounding=report.as_dict(),
                                  grounding_score=report.score))
        session.commit()
        return ImportSummary(run.id, len(good), 0, refused, str(refused_file or "") or None,
                             digest)


def _import_prompt(session: Session, cfg: ImportConfig) -> PromptRow:
    """The "prompt" of an imported run: that it is not known here."""
    body = ("The prompt that produced these rationales was not given: they were written "
            f"outside Rationale Audit ({cfg.mode}, {cfg.format}) and imported.")
    content_hash = hashlib.sha256(body.encode()).hexdigest()
    version = f"{'lc' if cfg.mode == 'label-conditioned' else 'lb'}-{cfg.format}"  # ≤ 20
    row = session.execute(select(PromptRow).where(PromptRow.name == "imported",
                                                  PromptRow.version == version)
                          ).scalars().first()
    if row is None:
        row = PromptRow(name="imported", version=version, mode=cfg.mode,
                        format=cfg.format, body=body, content_hash=content_hash)
        session.add(row)
        session.flush()
    return row
