"""A clinician's corrected rationale, checked as generation checks a model's: the same
output schema (:mod:`generation.rationale_schema`), every cited id in the patient's record,
and the grounding checks (:mod:`generation.grounding`); then stored as a proposed
correction (:mod:`annotation_db.corrections`).

The editor holds plain text: a free-form rationale as written, citations inline
(``[E12]``); a step-by-step one as one step per line, each step's citations inline. The
prediction stays the one the rationale explains.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlmodel import Session

from annotation_db import corrections
from annotation_db.campaigns import own_assignment
from annotation_db.cohorts import patient_record
from annotation_db.models import Correction, GenerationRun, Patient, PromptTemplate, Rationale
from annotation_db.models import User as UserRow
from generation.grounding import check_rationale
from generation.rationale_schema import parse_output

CITATION = re.compile(r"\[(E\d+)\]")
NUMBERED = re.compile(r"^\s*\d+[.)]\s*")


@dataclass
class Checked:
    """A correction as checked: the output to store (None when refused), why it was
    refused, and the grounding report (when it got that far)."""

    output: dict | None
    problem: str | None
    grounding: dict | None


def editable(rationale: Rationale) -> str:
    """The rationale as the correction editor starts it: free text as written; steps one
    per line, each with its cited ids inline."""
    if not rationale.steps:
        return rationale.text
    lines = []
    for step in rationale.steps:
        words = str(step.get("step", "")).strip()
        missing = [e for e in step.get("evidence", []) if f"[{e}]" not in words]
        lines.append(words + "".join(f" [{e}]" for e in missing))
    return "\n".join(lines)


def _same(a: str, b: str) -> bool:
    """Whether two texts differ only in spacing and line numbering."""
    def words(text: str) -> list[str]:
        return " ".join(NUMBERED.sub("", line) for line in text.splitlines()).split()
    return words(a) == words(b)


def _payload(rationale: Rationale, edited: str) -> dict:
    """The edited text as the generator's JSON output for the rationale's format."""
    prediction = "yes" if rationale.predicted_label else "no"
    if rationale.format == "stepwise":
        steps = [NUMBERED.sub("", line).strip() for line in edited.splitlines()]
        body: str | list = [{"step": s, "evidence": list(dict.fromkeys(CITATION.findall(s)))}
                            for s in steps if s]
        cited = [e for s in body for e in s["evidence"]]
    else:
        body = edited.strip()
        cited = CITATION.findall(body)
    return {"prediction": prediction, "evidence": list(dict.fromkeys(cited)),
            "rationale": body}


def check(session: Session, rationale: Rationale, edited: str) -> Checked:
    """Check an edited rationale against the schema, the patient's record and grounding."""
    record = patient_record(session, session.get(Patient, rationale.patient_id))
    ids = [item["id"] for item in record["items"]]
    if _same(edited, editable(rationale)):
        return Checked(None, "the text is the rationale as it was: change what is wrong first",
                       None)
    payload = _payload(rationale, edited)
    if not payload["evidence"]:
        return Checked(None, "cite at least one record line inline, as [E12]", None)
    unknown = [e for e in payload["evidence"] if e not in set(ids)]
    if unknown:
        return Checked(None, f"{', '.join(unknown)} {'are' if len(unknown) > 1 else 'is'} not "
                             "in this patient's record", None)
    output, reason = parse_output(json.dumps(payload), ids, rationale.format)
    if output is None:
        return Checked(None, reason, None)
    run = session.get(GenerationRun, rationale.run_id)
    prompt = session.get(PromptTemplate, run.prompt_template_id) if run else None
    report = check_rationale(output.text, output.cited_ids(), output.prediction, record,
                             mode=prompt.mode if prompt else None)
    return Checked(payload, None, report.as_dict())


def propose(session: Session, *, assignment_id: int, user: UserRow, edited: str,
            note: str = "", address: str | None = None) -> tuple[Correction | None, Checked]:
    """Check the edited rationale of one's own item and, when it passes the schema and id
    checks, store it as a proposed correction (grounding failures are stored with it and
    shown; the adjudicator sees them)."""
    assignment = own_assignment(session, assignment_id, user)
    source = session.get(Rationale, assignment.rationale_id)
    checked = check(session, source, edited)
    if checked.output is None:
        return None, checked
    body = checked.output["rationale"]
    steps = body if isinstance(body, list) else None
    text = ("\n".join(f"{k}. {s['step']}" for k, s in enumerate(steps, start=1))
            if steps else body)
    cited = list(dict.fromkeys([*checked.output["evidence"],
                                *(e for s in steps or [] for e in s["evidence"])]))
    correction = corrections.propose(
        session, assignment_id=assignment_id, user=user, text=text, steps=steps,
        cited_ids=cited, predicted_label=source.predicted_label, grounding=checked.grounding,
        raw_output=json.dumps(checked.output), note=note, address=address)
    return correction, checked
