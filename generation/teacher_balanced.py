"""A template teacher whose rationale does not give its decision away at the start.

The first template teacher (:mod:`generation.teacher`) opens each rationale with a
sentence on age, then, second, the branch that decides it ("The record shows possible
early cognitive or functional change…" or "Established dementia risk factors are
present…" for yes, "Some risk factors are recorded…, but they are modest" or "No memory
complaint…" for no), about 40 tokens in. A model fine-tuned on it learns to decide at
that one early token; the rest of the text, and the answer, follow from it. This variant
is written the other way round:

- the opening is one of several neutral sentences, picked by the patient's id (not the
  label), so its first words say nothing about the outcome;
- the evidence comes next, in the same words whatever the label: age, each recorded risk
  factor, each possible early change (or that none of the items shown is one), the other
  findings;
- the conclusion comes last, and only it depends on the label (label-conditioned), or on
  what the record shows (label-blind: yes when a possible prodromal item is recorded).

Like the first teacher it cites the record's own items by evidence id with their
descriptions verbatim. It is given only the items the prompt's history shows (the
history budget may leave older ones out), so it states an absence only of those: "none
of the items shown…", never "no … is documented", which an item left out of the prompt
could contradict (version 1 did, for 14 cases of the cpu cohort whose memory complaint
fell outside the budget). Select it with ``teacher:
template-balanced`` (study config) or ``--backend template-balanced``.
"""

import hashlib
import json

from generation.chat import ChatRequest, Completion, SamplingConfig
from generation.teacher import MAX_CITED, _age, _cite, _latest_by_code

NAME = "template-teacher-balanced-v2"

# the last sentence, the only one that depends on the label: then "likely." / "unlikely."
CONCLUSION = ("Weighing these together, a diagnosis of Alzheimer's disease or a related "
              "dementia within five years is ")

OPENINGS = (
    "Reading the record in order, from background to recent findings:",
    "Going through what the history documents before the index date:",
    "Taking the documented history item by item before weighing it:",
    "Looking first at the background and then at each recorded finding:",
    "Reviewing what this patient's record contains, one part at a time:",
)


def _opening(record: dict) -> str:
    """A neutral first sentence, the same for a patient whatever the outcome."""
    key = str(record.get("external_id") or record.get("patient_id") or record.get("id") or "")
    index = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(OPENINGS)
    return OPENINGS[index]


def write(record: dict, format: str) -> dict:
    """The rationale JSON object for one record: evidence first, conclusion last."""
    items = [i for i in record["items"] if i.get("id")]
    risks = _latest_by_code([i for i in items if i.get("role") == "risk_factor"])
    prodrome = _latest_by_code([i for i in items if i.get("role") == "possible_prodrome"])
    context = _latest_by_code([i for i in items if i.get("role") == "context"
                               and i["kind"] != "demographic"])
    label = bool(record["label"]) if "label" in record else bool(prodrome)
    age = _age(record)
    demographic = next((i for i in items if i["kind"] == "demographic"), None)
    steps: list[tuple[str, list[str]]] = [(_opening(record), [])]
    background = f"Age at the index date: {age} years" if age is not None else \
        "Age at the index date is not recorded"
    steps.append((background + (f"; {demographic['description']} [{demographic['id']}]."
                                if demographic else "."),
                  [demographic["id"]] if demographic else []))
    if risks:
        steps.append(("Recorded risk factors: " + _cite(risks[:3]) + ".",
                      [i["id"] for i in risks[:3]]))
    else:
        steps.append(("None of the items shown is an established dementia risk factor.", []))
    if prodrome:
        steps.append(("Possible early cognitive or functional changes: " + _cite(prodrome[:3])
                      + ".", [i["id"] for i in prodrome[:3]]))
    else:
        steps.append(("None of the items shown records a memory complaint, cognitive "
                      "symptom or functional decline.", []))
    if context:
        steps.append(("Other findings: " + _cite(context[:2]) + ".",
                      [i["id"] for i in context[:2]]))
    steps.append((CONCLUSION + ("likely." if label else "unlikely."), []))
    cited = [e for _, ids in steps for e in ids]
    evidence = list(dict.fromkeys(cited))[:max(MAX_CITED, 12)] or [items[0]["id"]]
    if format == "stepwise":
        rationale: str | list = [{"step": text, "evidence": ids} for text, ids in steps[:6]]
    else:  # at most 1,200 characters, the conclusion always kept; the body's cut is
        # the same for both labels (the longer conclusion's), so it cannot tell the label
        longest = len(CONCLUSION + "unlikely.")
        body = " ".join(text for text, _ in steps[:-1])[:1200 - longest - 1]
        rationale = f"{body} {steps[-1][0]}"
    return {"prediction": "yes" if label else "no", "evidence": evidence, "rationale": rationale}


class BalancedTemplateBackend:
    """The balanced teacher as a backend: requests carry the record; no model.

    The same loop as :class:`generation.teacher.TemplateBackend`, written again on
    purpose: that module's bytes are the first teacher's identity (its SHA-256 keys every
    generation run it made), so factoring this loop out of it would regenerate every
    rationale of the committed reproduction under a new run."""

    name = "template-balanced"

    def complete(self, requests: list[ChatRequest], params: SamplingConfig) -> list[Completion]:
        out = []
        for request in requests:
            if request.record is None:
                raise ValueError("the template teacher needs the patient record in the request")
            format = "stepwise" if request.schema and \
                request.schema["properties"]["rationale"].get("type") == "array" else "free"
            text = json.dumps(write(request.record, format))
            out.append(Completion(text=text, completion_tokens=len(text.split()),
                                  finish_reason="stop"))
        return out
