"""Importers: a bad file is rejected whole with every bad line; a good one becomes records."""

import csv
import datetime as dt
import json

import pytest

from generation.cohort import generate
from generation.cohort_config import CohortConfig
from generation.importers import ImportRejected, read_jsonl, read_synthea


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def records():
    return generate(CohortConfig(n=20, seed=1))[0]


def test_jsonl_round_trips_records(tmp_path, records):
    path = tmp_path / "cohort.jsonl"
    _write_jsonl(path, records)
    assert read_jsonl(path) == records


def test_jsonl_without_ids_or_splits_gets_them(tmp_path, records):
    bare = [dict(r, split=None, items=[{k: v for k, v in i.items() if k != "id"}
                                       for i in r["items"]]) for r in records]
    path = tmp_path / "bare.jsonl"
    _write_jsonl(path, bare)
    loaded = read_jsonl(path, seed=3)
    assert all(r["split"] in {"train", "validation", "test"} for r in loaded)
    assert [i["id"] for i in loaded[0]["items"]] == [i["id"] for i in records[0]["items"]]


def test_invalid_jsonl_lists_every_bad_line_and_reason(tmp_path, records):
    good = json.dumps(records[0])
    late = dict(records[1], items=[dict(records[1]["items"][0], date="2099-01-01")])
    leak = dict(records[2], items=[*records[2]["items"], {
        "id": "E99", "kind": "diagnosis", "date": records[2]["index_date"], "code": "G30.9",
        "code_system": "ICD-10", "description": "Alzheimer's disease"}])
    lines = [good, "{not json", json.dumps(dict(records[3], sex="X")), json.dumps(late),
             json.dumps(leak), good]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportRejected) as caught:
        read_jsonl(path)
    problems = dict(caught.value.problems)
    assert set(problems) == {2, 3, 4, 5, 6}
    assert "not valid JSON" in problems[2]
    assert "sex" in problems[3]
    assert "after the index date" in problems[4]
    assert "outcome code in history" in problems[5] and "G30.9" in problems[5]
    assert "already used on line 1" in problems[6]
    assert "nothing was imported" in str(caught.value)


def _synthea(folder, patients, conditions=(), medications=(), observations=()):
    tables = {
        "patients.csv": (["Id", "BIRTHDATE", "DEATHDATE", "GENDER", "FIRST"], patients),
        "conditions.csv": (["START", "STOP", "PATIENT", "ENCOUNTER", "SYSTEM", "CODE",
                            "DESCRIPTION"], conditions),
        "medications.csv": (["START", "STOP", "PATIENT", "CODE", "DESCRIPTION"], medications),
        "observations.csv": (["DATE", "PATIENT", "ENCOUNTER", "CATEGORY", "CODE", "DESCRIPTION",
                              "VALUE", "UNITS", "TYPE"], observations),
    }
    for name, (header, rows) in tables.items():
        with (folder / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)


def test_synthea_export_becomes_labelled_icd10_records(tmp_path):
    _synthea(
        tmp_path,
        patients=[["a", "1945-02-01", "", "F", "Ann"], ["b", "1950-06-01", "", "M", "Bob"],
                  ["c", "1944-01-01", "2009-01-01", "M", "Cy"], ["d", "1990-01-01", "", "F", "D"],
                  ["e", "1948-01-01", "", "F", "Eve"]],
        conditions=[
            ["2001-03-02", "", "a", "x", "SNOMED-CT", "59621000", "Essential hypertension"],
            ["2012-05-01", "", "a", "x", "SNOMED-CT", "26929004", "Alzheimer's disease"],
            ["2003-01-01", "", "b", "x", "SNOMED-CT", "444814009", "Viral sinusitis"],
            ["2011-01-01", "", "b", "x", "SNOMED-CT", "44054006", "Diabetes"],
            ["2008-01-01", "", "e", "x", "SNOMED-CT", "26929004", "Alzheimer's disease"],
        ],
        medications=[["2002-01-01T10:00:00Z", "", "a", "314076", "lisinopril 10 MG"]],
        observations=[
            ["2009-06-01T10:00:00Z", "a", "x", "vital-signs", "4548-4", "HbA1c", "6.5", "%",
             "numeric"],
            ["2009-06-01T10:00:00Z", "a", "x", "laboratory", "18262-6", "LDL", "116.0", "mg/dL",
             "numeric"],
        ],
    )
    records, summary = read_synthea(tmp_path, index_date=dt.date(2010, 1, 1))
    by_id = {r["external_id"]: r for r in records}
    assert set(by_id) == {"a", "b"}
    assert summary["excluded"] == {"died before the index date": 1, "outside the age range": 1,
                                   "ADRD before the index date (prevalent)": 1}
    ann, bob = by_id["a"], by_id["b"]
    assert ann["label"] is True and ann["outcome"]["adrd_code"] == "G30.9"
    assert bob["label"] is False
    codes = {(i["code"], i["code_system"]) for i in ann["items"]}
    assert ("I10", "ICD-10") in codes and ("314076", "RxNorm") in codes
    assert not any(i["code"] == "G30.9" for i in ann["items"]), "the outcome stays out of history"
    hba1c = next(i for i in ann["items"] if i["code"] == "4548-4")
    assert hba1c["value"] == "48" and hba1c["unit"] == "mmol/mol"
    ldl = next(i for i in ann["items"] if i["code"] == "18262-6")
    assert ldl["value"] == "3.0"
    assert ("444814009", "SNOMED") in {(i["code"], i["code_system"]) for i in bob["items"]}
    assert all(i["date"] <= "2010-01-01" for i in bob["items"]), "post-index diabetes is dropped"


def test_synthea_missing_column_or_bad_rows_are_rejected_with_locations(tmp_path):
    _synthea(tmp_path, patients=[["a", "1945-02-01", "", "F", "Ann"], ["b", "soon", "", "F", "B"]],
             conditions=[["2001-03-02", "", "zz", "x", "SNOMED-CT", "59621000", "HT"]])
    with pytest.raises(ImportRejected) as caught:
        read_synthea(tmp_path, index_date=dt.date(2010, 1, 1))
    where = [line for line, _ in caught.value.problems]
    assert "patients.csv:3" in where and "conditions.csv:2" in where
    (tmp_path / "observations.csv").write_text("DATE,PATIENT\n")
    with pytest.raises(ImportRejected, match=r"observations.csv:1: missing column\(s\) CODE"):
        read_synthea(tmp_path, index_date=dt.date(2010, 1, 1))


# --- bad input: one line naming the line and the rule, never a traceback ---------------

def _one_bad_line(path, line: str) -> str:
    """The message of importing a file whose only line is ``line``."""
    path.write_text(line + "\n")
    with pytest.raises(ImportRejected) as caught:
        read_jsonl(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_deeply_nested_json_is_a_bad_line_not_a_crash(tmp_path):
    path = tmp_path / "deep.jsonl"
    assert _one_bad_line(path, "[" * 100_000 + "]" * 100_000) == (
        f"{path}: line 1: JSON nested too deeply to be a record (a record is an object whose "
        "items are a list of flat objects); nothing was imported")


@pytest.mark.parametrize("weight", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_a_weight_that_is_not_a_finite_number_is_refused(tmp_path, records, weight):
    line = json.dumps(dict(records[0], weight=2.5)).replace('"weight": 2.5', f'"weight": {weight}')
    path = tmp_path / "w.jsonl"
    assert _one_bad_line(path, line) == (
        f"{path}: line 1: weight: Input should be a finite number; nothing was imported")


@pytest.mark.parametrize("label", ['"yes"', '"true"', "1", '"0"', "null"])
def test_a_label_that_is_not_a_json_boolean_is_refused(tmp_path, records, label):
    line = json.dumps(dict(records[0], label=True)).replace('"label": true', f'"label": {label}')
    path = tmp_path / "l.jsonl"
    assert _one_bad_line(path, line) == (
        f"{path}: line 1: label: Input should be a valid boolean; nothing was imported")


def _bad_synthea(folder, **tables) -> str:
    """The message of importing a small Synthea export with ``tables`` replaced."""
    _synthea(folder, patients=[["a", "1945-02-01", "", "F", "Ann"]])
    for name, content in tables.items():
        (folder / f"{name}.csv").write_bytes(content)
    with pytest.raises(ImportRejected) as caught:
        read_synthea(folder, index_date=dt.date(2010, 1, 1))
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_synthea_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path):
    patients = (b"Id,BIRTHDATE,DEATHDATE,GENDER,FIRST\na,1945-02-01,,F,Ann\n"
                b"b,1950-01-01,,M,J\xf6rg\n")
    assert _bad_synthea(tmp_path, patients=patients) == (
        f"{tmp_path}: patients.csv:3: not UTF-8 text (byte 0xf6 at position 18); save the "
        "file as UTF-8; nothing was imported")


def test_synthea_field_over_the_csv_limit_is_refused_naming_the_line(tmp_path):
    conditions = ("START,PATIENT,CODE,DESCRIPTION\n2001-03-02,a,59621000,HT\n"
                  f"2002-03-02,a,59621000,{'x' * 131_073}\n").encode()
    assert _bad_synthea(tmp_path, conditions=conditions) == (
        f"{tmp_path}: conditions.csv:3: a field is longer than 131,072 characters, the most a "
        "CSV field may hold; nothing was imported")


def test_synthea_patient_id_used_twice_is_refused_naming_both_lines(tmp_path):
    patients = b"Id,BIRTHDATE,DEATHDATE,GENDER\na,1945-02-01,,F\nb,1950-01-01,,M\na,1946-01-01,,M\n"
    assert _bad_synthea(tmp_path, patients=patients) == (
        f"{tmp_path}: patients.csv:4: Id 'a' already used on line 2; nothing was imported")


@pytest.mark.parametrize("value, rule", [
    ("nan", "is not a finite number"), ("inf", "is not a finite number"),
    ("1e308", "is outside the plausible range 50–300 mmHg"),
    ("-120", "is outside the plausible range 50–300 mmHg"),
    ("high", "is not a number")])
def test_synthea_measurement_that_is_not_plausible_is_refused(tmp_path, value, rule):
    observations = ("DATE,PATIENT,CODE,DESCRIPTION,VALUE,UNITS\n"
                    "2009-06-01T10:00:00Z,a,8480-6,Systolic Blood Pressure,128,mm[Hg]\n"
                    f"2009-07-01T10:00:00Z,a,8480-6,Systolic Blood Pressure,{value},mm[Hg]\n"
                    ).encode()
    assert _bad_synthea(tmp_path, observations=observations) == (
        f"{tmp_path}: observations.csv:3: VALUE {value!r} of 8480-6 {rule}; nothing was "
        "imported")
