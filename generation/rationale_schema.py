"""The structured output a rationale must have, as JSON Schema (for constrained decoding)
and as pydantic models (for validation after decoding).

``evidence`` is restricted to the patient's own evidence ids, so a constrained decoder
cannot cite an item that does not exist; the pydantic check repeats that for backends
without constrained decoding.
"""

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generation.output_budget import (
    MAX_EVIDENCE,
    MAX_RATIONALE_CHARS,
    MAX_STEP_CHARS,
    MAX_STEPS,
    MIN_RATIONALE_CHARS,
    SchemaBounds,
)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=MAX_STEP_CHARS)
    evidence: list[str] = Field(default_factory=list, max_length=MAX_EVIDENCE)


class RationaleOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction: Literal["yes", "no"]
    evidence: list[str] = Field(min_length=1, max_length=MAX_EVIDENCE)
    rationale: str | list[Step]

    @property
    def text(self) -> str:
        if isinstance(self.rationale, str):
            return self.rationale
        return "\n".join(f"{k}. {s.step}" for k, s in enumerate(self.rationale, start=1))

    def cited_ids(self) -> list[str]:
        """Every id the output cites: the evidence list, step lists, and [E#] in the text."""
        ids = list(self.evidence)
        if not isinstance(self.rationale, str):
            for step in self.rationale:
                ids.extend(step.evidence)
        ids.extend(re.findall(r"\[(E\d+)\]", self.text))
        return list(dict.fromkeys(ids))


def json_schema(evidence_ids: list[str], format: str, bounds: SchemaBounds | None = None
                ) -> dict:
    """The JSON schema for one patient's rationale in ``format`` (free or stepwise).

    ``bounds`` (from :func:`generation.output_budget.derive_bounds`) size the lists and
    strings so that the largest valid document fits the run's token budget; without them
    the content limits apply.
    """
    ids = {"type": "string", "enum": list(evidence_ids)}
    evidence = bounds.evidence if bounds else MAX_EVIDENCE
    if format == "free":
        rationale = {"type": "string", "minLength": MIN_RATIONALE_CHARS,
                     "maxLength": bounds.rationale_chars if bounds else MAX_RATIONALE_CHARS}
    else:
        rationale = {
            "type": "array", "minItems": 1, "maxItems": bounds.steps if bounds else MAX_STEPS,
            "items": {
                "type": "object",
                "properties": {
                    "step": {"type": "string", "minLength": 1,
                             "maxLength": bounds.step_chars if bounds else MAX_STEP_CHARS},
                    "evidence": {"type": "array", "items": ids,
                                 "maxItems": bounds.step_evidence if bounds
                                 else MAX_EVIDENCE},
                },
                "required": ["step", "evidence"],
                "additionalProperties": False,
            },
        }
    return {
        "type": "object",
        "properties": {
            "prediction": {"type": "string", "enum": ["yes", "no"]},
            "evidence": {"type": "array", "items": ids, "minItems": 1, "maxItems": evidence},
            "rationale": rationale,
        },
        "required": ["prediction", "evidence", "rationale"],
        "additionalProperties": False,
    }


def parse_output(raw: str, evidence_ids: list[str], format: str) -> tuple[RationaleOutput | None,
                                                                          str | None]:
    """Parse and validate raw model text; return (output, None) or (None, reason)."""
    text = raw.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        return None, "no JSON object in the output"
    try:
        data = json.loads(text[start:end + 1] if end > start else text[start:])
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg})"
    try:
        output = RationaleOutput.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"schema: {'.'.join(map(str, first['loc']))}: {first['msg']}"
    if format == "free" and not isinstance(output.rationale, str):
        return None, "schema: rationale must be text for the free format"
    if format == "stepwise" and isinstance(output.rationale, str):
        return None, "schema: rationale must be a list of steps for the stepwise format"
    unknown = [i for i in output.cited_ids() if i not in set(evidence_ids)]
    if unknown and not _only_in_text(output, unknown):
        return None, f"cites ids that are not in the record: {', '.join(unknown[:5])}"
    return output, None


def _only_in_text(output: RationaleOutput, unknown: list[str]) -> bool:
    """Unknown ids mentioned only inside the prose are left to the grounding check."""
    listed = set(output.evidence)
    if not isinstance(output.rationale, str):
        for step in output.rationale:
            listed.update(step.evidence)
    return not (set(unknown) & listed)
