"""Deliberately flawed copies of a rationale: gold items for annotation campaigns.

Each mutation plants one fault that a careful clinician (and the grounding checker) should
catch. A mutation that would not be detectable for this patient is skipped rather than
stored, so every gold item is known to be wrong.

    wrong_code            a diagnosis code the record does not have
    invented_value        a measurement value the record does not show
    contradicted_absence  "no history of X" where the record shows X
    swapped_label         the opposite prediction
"""

import random
import re

from generation.grounding import CONCEPTS, _present, check_rationale

MUTATIONS = ("wrong_code", "invented_value", "contradicted_absence", "swapped_label")
DECOYS = [("E11.9", "type 2 diabetes"), ("I10", "hypertension"), ("F32.9", "depression"),
          ("H91.9", "hearing loss"), ("S06.0", "a concussion"), ("E78.5", "hyperlipidaemia"),
          ("I63.9", "a cerebral infarction"), ("G20", "Parkinson's disease")]
MEASURE_TEXT = {"Body mass index": ("BMI", "kg/m2"), "HbA1c": ("HbA1c", "mmol/mol"),
                "LDL cholesterol": ("LDL cholesterol", "mmol/L"),
                "Systolic blood pressure": ("systolic blood pressure", "mmHg")}


def mutate(text: str, prediction: str, record: dict, kind: str, rng: random.Random
           ) -> tuple[str, str] | None:
    """Return (flawed text, flawed prediction), or None if ``kind`` does not apply here."""
    items = record["items"]
    codes = {i.get("code") or "" for i in items}
    if kind == "wrong_code":
        options = [(c, name) for c, name in DECOYS if not any(x.startswith(c[:3]) for x in codes)]
        if not options:
            return None
        code, name = rng.choice(options)
        return f"{text.rstrip()} The record also documents {name} ({code}).", prediction
    if kind == "invented_value":
        measured = [i for i in items if i["kind"] == "measurement"
                    and any(i["description"].startswith(k) for k in MEASURE_TEXT)]
        if not measured:
            return None
        item = rng.choice(measured)
        label, unit = next(v for k, v in MEASURE_TEXT.items() if item["description"].startswith(k))
        value = float(item["value"]) * rng.choice((1.35, 0.7)) + 3
        decimals = 1 if "." in item["value"] else 0
        recorded = {i["value"] for i in items if i["description"].startswith(
            item["description"].split(" ")[0])}
        new = f"{value:.{decimals}f}"
        if new in recorded:
            return None
        return f"{text.rstrip()} The latest {label} was {new} {unit}.", prediction
    if kind == "contradicted_absence":
        present = [name for name, concept in CONCEPTS.items()
                   if "words" in concept and _present(concept, items)
                   and name not in ("family history", "APOE ε4", "smoking")]
        if not present:
            return None
        name = rng.choice(present)
        return f"{text.rstrip()} There is no history of {name}.", prediction
    if kind == "swapped_label":
        flipped = "no" if prediction == "yes" else "yes"
        swapped = re.sub(r"\b(will|would)\b(?! not)", r"\1 not", text, count=1)
        return swapped, flipped
    raise ValueError(f"unknown mutation {kind!r}; known: {', '.join(MUTATIONS)}")


def flawed_copies(text: str, cited: list[str], prediction: str, record: dict, *, seed: int,
                  kinds: tuple[str, ...] = MUTATIONS) -> list[dict]:
    """Every applicable mutation of one rationale, each verified to fail a grounding check."""
    rng = random.Random(seed)
    copies = []
    for kind in kinds:
        result = mutate(text, prediction, record, kind, rng)
        if result is None:
            continue
        new_text, new_prediction = result
        report = check_rationale(new_text, cited, new_prediction, record,
                                 mode="label-conditioned")
        if report.failed:  # only faults the checker (and so a rater) can see become gold
            copies.append({"variant": kind, "text": new_text, "prediction": new_prediction,
                           "grounding": report.as_dict()})
    return copies
