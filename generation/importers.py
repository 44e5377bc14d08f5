"""Import cohorts: the documented JSONL record format, and Synthea's CSV export.

    rationale-audit cohort import --format jsonl cohort.jsonl --name team-cohort
    rationale-audit cohort import --format synthea output/csv --name ma --index-date 2010-01-01

An invalid file is rejected whole: every bad line is reported with its number and
reason, and nothing is written. Histories are checked for label leakage (outcome
codes or anti-dementia drugs before the index date) and coding errors exactly as
``cohort validate`` checks them.
"""

import csv
import datetime as dt
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from annotation_db.csv_files import CsvFileError, read_csv
from annotation_db.errors import UserError
from annotation_db.records import DAYS_PER_YEAR, PatientRecord, assign_evidence_ids
from generation.cohort import CohortModel, stratified_split
from generation.cohort_validate import record_problems

MAX_REPORTED = 200
BLOCKING = ("outcome_code_in_history", "anti_dementia_drug_before_diagnosis",
            "invalid_icd10_code", "sex_inappropriate_code", "label_disagrees_with_outcome")


class ImportRejected(UserError):
    """A file that cannot be imported; ``problems`` lists (line number, reason)."""

    def __init__(self, source: str, problems: list[tuple[int | str, str]]):
        self.source, self.problems = source, problems
        if len(problems) == 1:  # one line: where, the rule, and that nothing was written
            line, reason = problems[0]
            where = (f"line {line}: " if isinstance(line, int) else f"{line}: ") if line else ""
            super().__init__(f"{source}: {where}{reason}; nothing was imported")
            return
        shown = "\n".join(f"  line {line}: {reason}" for line, reason in problems[:MAX_REPORTED])
        more = (f"\n  … and {len(problems) - MAX_REPORTED} more"
                if len(problems) > MAX_REPORTED else "")
        super().__init__(
            f"{source}: {len(problems)} problem(s); nothing was imported\n{shown}{more}"
        )


def _pydantic_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "record"
        parts.append(f"{where}: {error['msg']}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return "; ".join(parts) + more


def finish_records(records: list[dict], seed: int, fractions=(0.7, 0.1, 0.2)) -> list[dict]:
    """Give records without a split a stratified one (deterministic by seed)."""
    missing = [i for i, r in enumerate(records) if not r.get("split")]
    if missing:
        labels = np.array([records[i]["label"] for i in missing])
        for i, split in zip(missing, stratified_split(labels, fractions, seed), strict=True):
            records[i]["split"] = split
    return records


def read_jsonl(path: str | Path, *, seed: int = 0, model: CohortModel | None = None,
               horizon_years: float = 5.0) -> list[dict]:
    """Validated, normalised records from a JSONL file, or :class:`ImportRejected`."""
    model = model or CohortModel.load()
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportRejected(str(path), [(0, f"cannot read the file: {exc}")]) from exc
    problems: list[tuple[int | str, str]] = []
    records: list[dict] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:
            problems.append((number, "JSON nested too deeply to be a record (a record is an "
                                     "object whose items are a list of flat objects)"))
            continue
        try:
            record = PatientRecord.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            problems.append((number, _pydantic_reason(exc)))
            continue
        ids = [item["id"] for item in record["items"]]
        if any(ids) and not all(ids):
            problems.append((number, "either every item has an evidence id or none does"))
            continue
        if not any(ids):
            assign_evidence_ids(record["items"])
        if record["external_id"] in first_seen:
            problems.append((number, f"external_id {record['external_id']!r} already used on "
                                     f"line {first_seen[record['external_id']]}"))
            continue
        first_seen[record["external_id"]] = number
        for check, where in record_problems(record, model, 0, horizon_years):
            if check in BLOCKING:
                problems.append((number, f"{check.replace('_', ' ')}: {where}"))
        records.append(record)
    if not records and not problems:
        problems.append((0, "the file holds no records"))
    if problems:
        raise ImportRejected(str(path), problems)
    return finish_records(records, seed)


# --- Synthea -------------------------------------------------------------------------

SYNTHEA_FILES = {
    "patients.csv": ("Id", "BIRTHDATE", "DEATHDATE", "GENDER"),
    "conditions.csv": ("START", "PATIENT", "CODE", "DESCRIPTION"),
    "medications.csv": ("START", "PATIENT", "CODE", "DESCRIPTION"),
    "observations.csv": ("DATE", "PATIENT", "CODE", "DESCRIPTION", "VALUE", "UNITS"),
}
# LOINC -> (our measurement key, conversion from Synthea's unit to ours)
SYNTHEA_OBSERVATIONS = {
    "39156-5": ("bmi", lambda v: v),
    "8480-6": ("sbp", lambda v: v),
    "8462-4": ("dbp", lambda v: v),
    "4548-4": ("hba1c", lambda v: (v - 2.15) * 10.929),  # % (NGSP) -> mmol/mol (IFCC)
    "18262-6": ("ldl", lambda v: v / 38.67),  # mg/dL -> mmol/L
}
# LOINC -> the plausible values in Synthea's unit. A value outside them (or not a finite
# number) is a data error: the import is refused rather than storing it (docs/cohort.md).
SYNTHEA_PLAUSIBLE = {
    "39156-5": (10, 150, "kg/m2"),
    "8480-6": (50, 300, "mmHg"),
    "8462-4": (20, 200, "mmHg"),
    "4548-4": (2, 25, "%"),
    "18262-6": (1, 1000, "mg/dL"),
}


def _synthea_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def _read_csv(folder: Path, name: str, problems: list) -> list[tuple[int, dict]]:
    path = folder / name
    if not path.is_file():
        problems.append((name, "file is missing"))
        return []
    try:
        header, rows = read_csv(path)
    except CsvFileError as exc:
        problems.append((f"{name}:{exc.line}" if exc.line else name, exc.reason))
        return []
    except OSError as exc:
        problems.append((name, f"cannot read the file: {exc.strerror}"))
        return []
    missing = [c for c in SYNTHEA_FILES[name] if c not in header]
    if missing:
        problems.append((f"{name}:1", f"missing column(s) {', '.join(missing)}"))
        return []
    return rows


def _measurement(code: str, text: str) -> tuple[float | None, str | None]:
    """A Synthea observation's value in Synthea's unit, or why it cannot be imported."""
    low, high, unit = SYNTHEA_PLAUSIBLE[code]
    try:
        value = float(text)
    except ValueError:
        return None, f"VALUE {text!r} of {code} is not a number"
    if not math.isfinite(value):
        return None, f"VALUE {text!r} of {code} is not a finite number"
    if not low <= value <= high:
        return None, (f"VALUE {text!r} of {code} is outside the plausible range "
                      f"{low}–{high} {unit}")
    return value, None


def read_synthea(folder: str | Path, *, index_date: dt.date, horizon_years: float = 5.0,
                 age_min: int = 40, age_max: int = 70, seed: int = 0,
                 model: CohortModel | None = None) -> tuple[list[dict], dict]:
    """Records from a Synthea CSV export, and a summary of what was kept and why not.

    Everyone alive and aged ``age_min``–``age_max`` on ``index_date`` without ADRD
    before it is a patient; the label is an ADRD condition (mapped to ICD-10) in the
    ``horizon_years`` after it. Conditions map SNOMED→ICD-10 where
    ``data/synthea_map.csv`` knows the code and keep SNOMED otherwise; medications keep
    RxNorm; the five core measurements are converted to UK units.
    """
    model = model or CohortModel.load()
    folder = Path(folder)
    problems: list[tuple[int | str, str]] = []
    tables = {name: _read_csv(folder, name, problems) for name in SYNTHEA_FILES}
    if problems:
        raise ImportRejected(str(folder), problems)
    people = _synthea_people(tables["patients.csv"], problems)
    events = _synthea_events(tables, people, problems)
    if problems:
        raise ImportRejected(str(folder), problems)
    unmapped = _add_history_items(events, people, problems, model=model,
                                  index_date=index_date)
    if problems:
        raise ImportRejected(str(folder), problems)
    horizon_end = index_date + dt.timedelta(days=round(horizon_years * DAYS_PER_YEAR))
    kept, excluded = _eligible_records(people, index_date=index_date, horizon_end=horizon_end,
                                       age_min=age_min, age_max=age_max)
    if not kept:
        raise ImportRejected(str(folder), [(0, "no patient is eligible on the index date "
                                               f"({dict(excluded) or 'no patients'})")])
    summary = {"patients_in_export": len(people), "imported": len(kept),
               "excluded": dict(excluded), "cases": sum(r["label"] for r in kept),
               "unmapped_snomed_codes": len(unmapped),
               "unmapped_examples": [code for code, _ in unmapped.most_common(10)]}
    return finish_records(kept, seed), summary


def _synthea_people(rows: list[tuple[int, dict]], problems: list) -> dict[str, dict]:
    """Each patient of ``patients.csv`` by Id, with no history yet (bad rows: problems)."""
    people: dict[str, dict] = {}
    first_seen: dict[str, int] = {}
    for number, row in rows:
        if row["Id"] in first_seen:
            problems.append((f"patients.csv:{number}", f"Id {row['Id']!r} already used on line "
                                                       f"{first_seen[row['Id']]}"))
            continue
        first_seen[row["Id"]] = number
        try:
            birth = _synthea_date(row["BIRTHDATE"])
            death = _synthea_date(row["DEATHDATE"]) if row["DEATHDATE"] else None
        except ValueError:
            problems.append((f"patients.csv:{number}", f"bad date in {row['BIRTHDATE']!r} or "
                                                       f"{row['DEATHDATE']!r}"))
            continue
        if row["GENDER"] not in ("F", "M"):
            problems.append((f"patients.csv:{number}", f"GENDER must be F or M, not "
                                                       f"{row['GENDER']!r}"))
            continue
        people[row["Id"]] = {"birth": birth, "death": death, "sex": row["GENDER"], "items": [],
                             "adrd": None}
    return people


def _synthea_events(tables: dict, people: dict[str, dict],
                    problems: list) -> list[tuple[str, int, str, dict]]:
    """(file, line, patient, row) of every dated condition, medication and observation
    of a known patient; each row gets its date as ``_date``."""
    events: list[tuple[str, int, str, dict]] = []
    for name, date_column in (("conditions.csv", "START"), ("medications.csv", "START"),
                              ("observations.csv", "DATE")):
        for number, row in tables[name]:
            if row["PATIENT"] not in people:
                problems.append((f"{name}:{number}", f"unknown PATIENT {row['PATIENT']!r}"))
                continue
            try:
                row["_date"] = _synthea_date(row[date_column])
            except ValueError:
                problems.append((f"{name}:{number}", f"bad {date_column} {row[date_column]!r}"))
                continue
            events.append((name, number, row["PATIENT"], row))
    return events


def _add_history_items(events: list, people: dict[str, dict], problems: list, *,
                       model: CohortModel, index_date: dt.date) -> Counter:
    """Give each person the items of their events up to ``index_date``, and their
    earliest ADRD (an outcome code, or an anti-dementia drug) at any date. Returns how
    often each SNOMED code without an ICD-10 mapping was seen."""
    mapping = _snomed_map()
    outcome_prefixes = tuple(model.codes["leakage"]["outcome_icd10_prefixes"])
    unmapped: Counter = Counter()
    for name, number, pid, row in events:
        person, when = people[pid], row["_date"]
        if name == "conditions.csv":
            icd = mapping.get(row["CODE"])
            if icd and icd[0].startswith(outcome_prefixes):
                _note_adrd(person, when, icd[0])
                continue
            if when > index_date:
                continue
            item = _condition_item(row, icd, unmapped)
        elif name == "medications.csv":
            if row["CODE"] in model.codes.get("anti_dementia_rxnorm", ()):
                _note_adrd(person, when, "G30.9")  # treated as a diagnosis of dementia
                continue
            if when > index_date:
                continue
            item = {"kind": "medication", "code": row["CODE"], "code_system": "RxNorm",
                    "description": row["DESCRIPTION"][:300]}
        else:
            if row["CODE"] not in SYNTHEA_OBSERVATIONS or when > index_date:
                continue
            item, problem = _observation_item(row, model.codes["measurements"])
            if problem:
                problems.append((f"{name}:{number}", problem))
                continue
        person["items"].append({"id": None, "date": when.isoformat(), "value": None,
                                "unit": None, "role": "context", **item})
    return unmapped


def _note_adrd(person: dict, when: dt.date, code: str) -> None:
    """Keep the earliest ADRD event of a person as their outcome."""
    if person["adrd"] is None or when < person["adrd"][0]:
        person["adrd"] = (when, code)


def _condition_item(row: dict, icd: tuple[str, str] | None, unmapped: Counter) -> dict:
    """A diagnosis in ICD-10 where the SNOMED code maps, else in SNOMED (counted)."""
    if icd:
        return {"kind": "diagnosis", "code": icd[0], "code_system": "ICD-10",
                "description": icd[1]}
    unmapped[row["CODE"]] += 1
    return {"kind": "diagnosis", "code": row["CODE"], "code_system": "SNOMED",
            "description": row["DESCRIPTION"][:300]}


def _observation_item(row: dict, measure_spec: dict) -> tuple[dict | None, str | None]:
    """A core measurement converted to UK units, or why its value cannot be imported."""
    key, convert = SYNTHEA_OBSERVATIONS[row["CODE"]]
    raw, problem = _measurement(row["CODE"], row["VALUE"])
    if problem:
        return None, problem
    value = convert(raw)
    spec = measure_spec[key]
    text = f"{value:.{spec['decimals']}f}"
    return {"kind": "measurement", "code": row["CODE"], "code_system": "LOINC",
            "description": f"{spec['name']} {text} {spec['unit']}", "value": text,
            "unit": spec["unit"]}, None


def _eligible_records(people: dict[str, dict], *, index_date: dt.date, horizon_end: dt.date,
                      age_min: int, age_max: int) -> tuple[list[dict], Counter]:
    """The records of the people eligible on ``index_date``, and why the others are not."""
    kept, excluded = [], Counter()
    for pid, person in people.items():
        age = index_date.year - person["birth"].year - (
            (index_date.month, index_date.day) < (person["birth"].month, person["birth"].day))
        if person["death"] and person["death"] <= index_date:
            excluded["died before the index date"] += 1
            continue
        if not age_min <= age <= age_max:
            excluded["outside the age range"] += 1
            continue
        if person["adrd"] and person["adrd"][0] <= index_date:
            excluded["ADRD before the index date (prevalent)"] += 1
            continue
        kept.append(_synthea_record(pid, person, age, index_date, horizon_end))
    return kept, excluded


def _synthea_record(pid: str, person: dict, age: int, index_date: dt.date,
                    horizon_end: dt.date) -> dict:
    """One eligible person's record: a demographic item first, the label from ADRD."""
    adrd = person["adrd"]
    label = bool(adrd and adrd[0] <= horizon_end)
    items = [{"id": None, "kind": "demographic", "date": index_date.isoformat(),
              "code": None, "code_system": None,
              "description": f"{'Male' if person['sex'] == 'M' else 'Female'}, aged {age} "
                             "at the index date",
              "value": str(age), "unit": "years", "role": "context"}, *person["items"]]
    return {
        "external_id": pid[:64], "sex": person["sex"],
        "birth_date": person["birth"].isoformat(), "index_date": index_date.isoformat(),
        "label": label, "split": None, "weight": 1.0,
        "items": assign_evidence_ids(items),
        "outcome": {"adrd_date": adrd[0].isoformat() if adrd else None,
                    "adrd_code": adrd[1] if adrd else None,
                    "death_date": person["death"].isoformat() if person["death"] else None,
                    "expected_risk": None},
    }


def _snomed_map() -> dict[str, tuple[str, str]]:
    path = Path(__file__).with_name("data") / "synthea_map.csv"
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {row["snomed"]: (row["icd10"], row["description"]) for row in csv.DictReader(lines)}
