"""Automatic grounding checks: does a rationale say only what the patient's record shows?

Each claim found in a rationale becomes one check with a verdict:

- ``cited_id``: every cited evidence id exists in the record;
- ``icd10``: every ICD-10 code in the text is (a prefix of) a code in the record;
- ``drug``: every known drug name in the text is among the record's medications;
- ``value``: every number given for a measurement (BMI, blood pressure, HbA1c, LDL,
  alcohol units) matches one of the record's values for it, after rounding;
- ``date``: every ISO date in the text is the date of some record item; every year is
  the year of some item, the index date or the birth date;
- ``age``: a stated age equals the age at the index date;
- ``absence``: a stated absence ("no history of diabetes") is not contradicted by the record;
- ``label``: in label-conditioned mode, the prediction equals the true label.

The grounding score is the share of checks that pass (1.0 when nothing was checkable
except the label). The result is a plain dict stored on the rationale, so the admin
screen can show each failed claim with its reason.
"""

import re
from dataclasses import dataclass, field

ICD10_IN_TEXT = re.compile(r"\b([A-Z][0-9]{2}(?:\.[0-9A-Z]{1,4})?)\b")
EVIDENCE_IN_TEXT = re.compile(r"\b(E[1-9][0-9]*)\b")
ISO_DATE = re.compile(r"\b((?:19|20)[0-9]{2}-[01][0-9]-[0-3][0-9])\b")
YEAR = re.compile(r"\b(?:in|since|from|of|until|during)\s+((?:19|20)[0-9]{2})\b", re.I)
AGE = re.compile(r"\b(?:aged|age(?: of)?|at)\s+([1-9][0-9])\b(?!\s*(?:mmHg|mmol|kg|units|%))"
                 r"|\b([1-9][0-9])[- ]year[- ]old\b", re.I)

# Measurement names as written in text → the record's measurement descriptions.
MEASURES = {
    "bmi": (r"\bBMI\b|body mass index", "Body mass index"),
    "sbp": (r"systolic(?: blood pressure)?|\bSBP\b", "Systolic blood pressure"),
    "dbp": (r"diastolic(?: blood pressure)?|\bDBP\b", "Diastolic blood pressure"),
    "hba1c": (r"\bHbA1c\b|glycated haemoglobin", "HbA1c"),
    "ldl": (r"\bLDL\b(?: cholesterol)?", "LDL cholesterol"),
    "alcohol": (r"alcohol|units per week|units/week", "Alcohol"),
}
NUMBER_AFTER = r"(?:\s+(?:of|was|is|at|=|:|reading|level|value))*\s*[:=]?\s*([0-9]+(?:\.[0-9]+)?)"
BP_PAIR = re.compile(r"\b([0-9]{2,3})\s*/\s*([0-9]{2,3})\s*(?:mm ?Hg)?", re.I)

# Concepts whose absence a rationale might assert → how the record shows their presence.
CONCEPTS = {
    "diabetes": {"codes": ("E10", "E11", "E14"), "words": r"diabet(?:es|ic)"},
    "hypertension": {"codes": ("I10", "I11", "I12", "I13", "I15"),
                     "words": r"hypertension|high blood pressure"},
    "depression": {"codes": ("F32", "F33"), "words": r"depress(?:ion|ive)"},
    "hearing loss": {"codes": ("H90", "H91"), "words": r"hearing (?:loss|impairment)|deaf"},
    "obesity": {"codes": ("E66",), "words": r"obes(?:ity|e)"},
    "hyperlipidaemia": {"codes": ("E78",),
                        "words": r"hyperlipid(?:a)?emia|high cholesterol|dyslipid(?:a)?emia"},
    "head injury": {"codes": ("S06",), "words": r"head injury|brain injury|concussion|TBI"},
    "memory complaints": {"codes": ("R41.3",), "words": r"memory (?:complaints?|loss|problems)"},
    "falls": {"codes": ("R29.6",), "words": r"falls?"},
    "family history": {"family": True, "words": r"family history(?: of dementia)?"},
    "APOE ε4": {"genotype_e4": True, "words": r"APOE ?(?:ε|e)4|apolipoprotein E ?(?:ε|e)4"},
    "smoking": {"lifestyle": ("Smoking status", "current"),
                "words": r"smok(?:ing|er)|tobacco"},
}
ABSENCE_CUES = (r"\bno (?:history|record|evidence|diagnosis|sign|signs|mention) of\s+(?:any\s+)?",
                r"\bno\s+(?:known\s+)?", r"\bwithout\s+(?:any\s+)?", r"\bdenies\s+",
                r"\bnot\s+(?:a\s+)?(?:known\s+)?", r"\babsence of\s+")


@dataclass
class GroundingReport:
    checks: list[dict] = field(default_factory=list)

    def add(self, kind: str, claim: str, ok: bool, detail: str = "") -> None:
        self.checks.append({"kind": kind, "claim": claim, "ok": bool(ok), "detail": detail})

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.checks if not c["ok"]]

    @property
    def score(self) -> float:
        return 1.0 if not self.checks else sum(c["ok"] for c in self.checks) / len(self.checks)

    def as_dict(self) -> dict:
        return {"score": round(self.score, 4), "passed": not self.failed,
                "failed": len(self.failed), "checks": self.checks}


def _number_matches(stated: float, values: list[str]) -> bool:
    for value in values:
        try:
            recorded = float(value)
        except ValueError:
            continue
        decimals = len(value.split(".")[1]) if "." in value else 0
        if abs(round(stated, decimals) - recorded) <= 0.5 * 10 ** -decimals + 1e-9:
            return True
    return False


def check_rationale(text: str, cited_ids: list[str], prediction: str | None, record: dict,
                    *, mode: str | None = None) -> GroundingReport:
    """Check one rationale against the record it claims to explain."""
    report = GroundingReport()
    items = record["items"]
    ids = {item["id"] for item in items}
    for evidence_id in dict.fromkeys([*cited_ids, *EVIDENCE_IN_TEXT.findall(text)]):
        report.add("cited_id", evidence_id, evidence_id in ids,
                   "" if evidence_id in ids else "no such item in the record")

    codes = [item["code"] for item in items if item.get("code") and
             item.get("code_system") == "ICD-10"]
    for code in dict.fromkeys(ICD10_IN_TEXT.findall(text)):
        if EVIDENCE_IN_TEXT.fullmatch(code):
            continue
        ok = any(c == code or c.startswith(code + ".") or c.startswith(code) for c in codes)
        report.add("icd10", code, ok, "" if ok else "the record has no such diagnosis")

    _check_drugs(text, items, report)
    _check_values(text, items, report)
    _check_dates(text, record, report)
    _check_age(text, record, report)
    _check_absences(text, items, report)
    if mode == "label-conditioned" and prediction is not None:
        truth = "yes" if record["label"] else "no"
        report.add("label", f"prediction {prediction}", prediction == truth,
                   "" if prediction == truth else f"the record's outcome is {truth}")
    return report


def _drug_names() -> set[str]:
    from generation.cohort import CohortModel

    names = set()
    for options in CohortModel.load().codes["medications"].values():
        names.update(option["name"].lower() for option in options)
    return names | {"donepezil", "rivastigmine", "galantamine", "memantine", "insulin",
                    "aspirin", "warfarin", "apixaban", "lisinopril", "perindopril", "statin"}


_DRUGS: set[str] | None = None


def _check_drugs(text: str, items: list[dict], report: GroundingReport) -> None:
    global _DRUGS
    if _DRUGS is None:
        _DRUGS = _drug_names()
    prescribed = " ".join(i["description"].lower() for i in items if i["kind"] == "medication")
    lowered = text.lower()
    for drug in sorted(_DRUGS):
        if re.search(rf"\b{re.escape(drug)}s?\b", lowered):
            ok = drug in prescribed or (drug == "statin" and "statin" in prescribed)
            report.add("drug", drug, ok, "" if ok else "not among the record's medications")


def _values_for(items: list[dict], description: str) -> list[str]:
    return [i["value"] for i in items
            if i.get("value") and i["description"].startswith(description)]


def _check_values(text: str, items: list[dict], report: GroundingReport) -> None:
    seen: set[tuple[str, str]] = set()
    for key, (pattern, description) in MEASURES.items():
        for match in re.finditer(rf"(?:{pattern}){NUMBER_AFTER}", text, re.I):
            number = match.group(1)
            if (key, number) in seen:
                continue
            seen.add((key, number))
            values = _values_for(items, description)
            ok = _number_matches(float(number), values)
            report.add("value", f"{description} {number}", ok,
                       "" if ok else f"the record's values are {', '.join(values) or 'none'}")
    sbp, dbp = _values_for(items, "Systolic"), _values_for(items, "Diastolic")
    for match in BP_PAIR.finditer(text):
        if ISO_DATE.search(match.group(0)):
            continue
        claim = f"blood pressure {match.group(1)}/{match.group(2)}"
        ok = _number_matches(float(match.group(1)), sbp) and _number_matches(
            float(match.group(2)), dbp)
        report.add("value", claim, ok, "" if ok else "no such blood pressure in the record")


def _check_dates(text: str, record: dict, report: GroundingReport) -> None:
    dates = {i["date"] for i in record["items"] if i.get("date")}
    years = {d[:4] for d in dates} | {str(record["index_date"])[:4],
                                      str(record["birth_date"])[:4]}
    for date in dict.fromkeys(ISO_DATE.findall(text)):
        report.add("date", date, date in dates, "" if date in dates else "no item on that date")
    for year in dict.fromkeys(YEAR.findall(text)):
        report.add("date", year, year in years, "" if year in years else "no item in that year")


def _check_age(text: str, record: dict, report: GroundingReport) -> None:
    from annotation_db.records import age_on

    age = age_on(record["birth_date"], record["index_date"])
    for match in AGE.finditer(text):
        stated = int(match.group(1) or match.group(2))
        if not 30 <= stated <= 100:
            continue
        report.add("age", f"age {stated}", stated == age,
                   "" if stated == age else f"the patient was {age} at the index date")


def _present(concept: dict, items: list[dict]) -> bool:
    if "codes" in concept:
        return any((i.get("code") or "").startswith(concept["codes"]) for i in items
                   if i["kind"] in ("diagnosis", "symptom"))
    if concept.get("family"):
        return any(i["kind"] == "family_history" and i.get("role") == "risk_factor"
                   for i in items)
    if concept.get("genotype_e4"):
        return any(i["kind"] == "genotype" and "e4" in (i.get("value") or "") for i in items)
    label, value = concept["lifestyle"]
    return any(i["description"].startswith(label) and i.get("value") == value for i in items)


def _check_absences(text: str, items: list[dict], report: GroundingReport) -> None:
    for sentence in re.split(r"(?<=[.;!?])\s+|\n", text):
        for concept in CONCEPTS.values():
            for cue in ABSENCE_CUES:
                match = re.search(rf"{cue}(?:[\w-]+\s+){{0,3}}?(?:{concept['words']})", sentence,
                                  re.I)
                if match:
                    present = _present(concept, items)
                    report.add("absence", match.group(0).strip(), not present,
                               "the record shows it" if present else "")
                    break
