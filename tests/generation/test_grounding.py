"""Grounding checks: planted faults are each caught; a faithful rationale passes."""

import pytest

from generation.grounding import check_rationale
from generation.mutator import MUTATIONS, flawed_copies


def _item(id_, kind, date, description, code=None, system=None, value=None, unit=None,
          role="context"):
    return {"id": id_, "kind": kind, "date": date, "code": code, "code_system": system,
            "description": description, "value": value, "unit": unit, "role": role}


RECORD = {
    "external_id": "P1", "sex": "F", "birth_date": "1945-03-01", "index_date": "2009-06-01",
    "label": True,
    "items": [
        _item("E1", "genotype", None, "APOE genotype ε3/ε4", "APOE", "genotype", "e3/e4",
              role="risk_factor"),
        _item("E2", "diagnosis", "2001-04-02", "Essential (primary) hypertension", "I10",
              "ICD-10", role="risk_factor"),
        _item("E3", "medication", "2001-05-10", "Ramipril 5 mg daily", "C09AA05", "ATC"),
        _item("E4", "diagnosis", "2004-09-15", "Depressive episode, unspecified", "F32.9",
              "ICD-10", role="risk_factor"),
        _item("E5", "measurement", "2006-02-01", "HbA1c 39 mmol/mol", "4548-4", "LOINC", "39",
              "mmol/mol"),
        _item("E6", "measurement", "2009-06-01", "Systolic blood pressure 152 mmHg", "8480-6",
              "LOINC", "152", "mmHg"),
        _item("E7", "measurement", "2009-06-01", "Diastolic blood pressure 88 mmHg", "8462-4",
              "LOINC", "88", "mmHg"),
        _item("E8", "measurement", "2009-06-01", "Body mass index 31.4 kg/m2", "39156-5",
              "LOINC", "31.4", "kg/m2"),
        _item("E9", "demographic", "2009-06-01", "Female, aged 64 at the index date",
              value="64", unit="years"),
    ],
}
CLEAN = ("A 64-year-old woman carrying APOE ε4 [E1] with hypertension (I10) since 2001 [E2], "
         "treated with ramipril [E3], and depression (F32.9) [E4]. Her systolic blood pressure "
         "was 152 mmHg and BMI 31.4 at the index date [E6, E8]; blood pressure 152/88 [E6] [E7]. "
         "HbA1c 39 mmol/mol [E5] shows no diabetes.")


def _failed_kinds(text, cited=("E1",), prediction="yes"):
    report = check_rationale(text, list(cited), prediction, RECORD, mode="label-conditioned")
    return {c["kind"] for c in report.failed}, report


def test_a_faithful_rationale_passes_every_check():
    failed, report = _failed_kinds(CLEAN, cited=["E1", "E2", "E3", "E4", "E5", "E6", "E8"])
    assert failed == set(), report.failed
    kinds = {c["kind"] for c in report.checks}
    assert {"cited_id", "icd10", "drug", "value", "date", "age", "absence", "label"} <= kinds
    assert report.score == 1.0


@pytest.mark.parametrize("text, kind", [
    ("She has type 2 diabetes (E11.9) [E2].", "icd10"),
    ("Her HbA1c was 58 mmol/mol [E5].", "value"),
    ("Her BMI of 27.0 is reassuring [E8].", "value"),
    ("Blood pressure 120/70 [E6].", "value"),
    ("Hypertension is documented in [E42].", "cited_id"),
    ("There is no history of hypertension.", "absence"),
    ("She has no depression.", "absence"),
    ("She is not an APOE e4 carrier.", "absence"),
    ("She takes metformin [E3].", "drug"),
    ("Diagnosed on 2003-01-01 [E2].", "date"),
    ("Hypertension since 1990 [E2].", "date"),
    ("A 71-year-old woman [E9].", "age"),
])
def test_each_planted_fault_is_flagged(text, kind):
    failed, report = _failed_kinds(text)
    assert kind in failed, report.checks
    assert report.score < 1.0


def test_a_cited_id_missing_from_the_record_is_flagged_even_outside_the_text():
    failed, _ = _failed_kinds("Hypertension [E2].", cited=["E2", "E77"])
    assert failed == {"cited_id"}


def test_wrong_prediction_is_flagged_only_in_label_conditioned_mode():
    report = check_rationale("Hypertension [E2].", ["E2"], "no", RECORD, mode="label-conditioned")
    assert [c["kind"] for c in report.failed] == ["label"]
    blind = check_rationale("Hypertension [E2].", ["E2"], "no", RECORD, mode="label-blind")
    assert blind.failed == []


def test_every_mutation_of_a_clean_rationale_is_caught():
    copies = flawed_copies(CLEAN, ["E1", "E2"], "yes", RECORD, seed=3)
    assert {c["variant"] for c in copies} == set(MUTATIONS)
    for copy in copies:
        assert copy["grounding"]["failed"] >= 1, copy
        assert copy["text"] != CLEAN or copy["prediction"] != "yes"
