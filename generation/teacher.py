"""A deterministic, label-conditioned *template teacher* for rationales.

The bundled 135M model cannot write rationales worth auditing, and a study needs
thousands of them. This teacher writes grounded rationales from the record
itself: it knows the outcome (label-conditioned, as the study's teacher did), and
it cites the record's own risk factors and possible prodromal items by evidence
id, quoting their descriptions verbatim — so every claim is in the record and the
grounding checks pass. It stands in for a large teacher LLM when none is
available; with one, use the vLLM backend and a real model (``--model``).

It speaks the same protocol as the model backends (JSON in the rationale schema),
so its output goes through the same validation, grounding and audit.
"""

import datetime as dt
import json

from generation.chat import ChatRequest, Completion, SamplingConfig

NAME = "template-teacher-v1"
MAX_CITED = 5


def _age(record: dict) -> int | None:
    try:
        born = dt.date.fromisoformat(str(record["birth_date"]))
        index = dt.date.fromisoformat(str(record["index_date"]))
    except (KeyError, ValueError):
        return None
    return index.year - born.year - ((index.month, index.day) < (born.month, born.day))


def _latest_by_code(items: list[dict]) -> list[dict]:
    """One item per code (the most recent), so repeated measurements are cited once."""
    latest: dict[str, dict] = {}
    for item in items:
        key = item.get("code") or item["description"]
        if key not in latest or str(item.get("date") or "") >= str(latest[key].get("date") or ""):
            latest[key] = item
    return sorted(latest.values(), key=lambda i: int(i["id"][1:]))


def _cite(items: list[dict]) -> str:
    """Descriptions quoted verbatim, each with its evidence id."""
    return "; ".join(f"{i['description']} [{i['id']}]" for i in items)


def write(record: dict, format: str) -> dict:
    """The rationale JSON object for one record.

    Label-conditioned (the record carries ``label``), the label decides the
    conclusion. Label-blind (no ``label`` key: the generator strips it), the teacher
    predicts from what the record shows: yes when a possible prodromal item is recorded.
    """
    items = [i for i in record["items"] if i.get("id")]
    risks = _latest_by_code([i for i in items if i.get("role") == "risk_factor"])
    prodrome = _latest_by_code([i for i in items if i.get("role") == "possible_prodrome"])
    label = bool(record["label"]) if "label" in record else bool(prodrome)
    context = _latest_by_code([i for i in items if i.get("role") == "context"
                               and i["kind"] != "demographic"])
    age = _age(record)
    age_text = f"At {age} years of age" if age is not None else "At the index date"
    if label:
        cited = (prodrome + risks)[:MAX_CITED] or context[:2]
    else:
        cited = (risks[:2] + context[:MAX_CITED - min(len(risks), 2)])[:MAX_CITED] or items[:1]
    steps: list[tuple[str, list[str]]] = []
    demographic = next((i for i in items if i["kind"] == "demographic"), None)
    steps.append((f"{age_text}, age is the strongest background factor"
                  + (f"; {demographic['description']} [{demographic['id']}]." if demographic
                     else "."), [demographic["id"]] if demographic else []))
    if label:
        if prodrome:
            steps.append(("The record shows possible early cognitive or functional change: "
                          + _cite(prodrome[:3])
                          + ".", [i["id"] for i in prodrome[:3]]))
        if risks:
            steps.append(("Established dementia risk factors are present: "
                          + _cite(risks[:3])
                          + ".", [i["id"] for i in risks[:3]]))
        steps.append(("Together these make a diagnosis of Alzheimer's disease or a related "
                      "dementia within five years likely.", []))
    else:
        if risks:
            steps.append(("Some risk factors are recorded ("
                          + _cite(risks[:2])
                          + "), but they are modest on their own.", [i["id"] for i in risks[:2]]))
        if prodrome:
            steps.append(("An isolated possible early symptom is recorded ("
                          + _cite(prodrome[:2])
                          + "), without a pattern of progressive decline.",
                          [i["id"] for i in prodrome[:2]]))
        else:
            steps.append(("No memory complaint, cognitive symptom or functional decline is "
                          "documented before the index date.", []))
        if context:
            steps.append(("The remaining findings are unremarkable for dementia risk: "
                          + _cite(context[:2])
                          + ".", [i["id"] for i in context[:2]]))
        steps.append(("A diagnosis of Alzheimer's disease or a related dementia within five "
                      "years is unlikely.", []))
    evidence = list(dict.fromkeys([i["id"] for i in cited] + [e for _, ids in steps for e in ids]))
    evidence = evidence[:12] or [items[0]["id"]]
    if format == "stepwise":
        rationale: str | list = [{"step": text, "evidence": ids} for text, ids in steps[:6]]
    else:
        rationale = " ".join(text for text, _ in steps)[:1200]
    return {"prediction": "yes" if label else "no", "evidence": evidence, "rationale": rationale}


class TemplateBackend:
    """A backend whose requests carry the record; no model, no sampling."""

    name = "template"

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
