"""Rationales written elsewhere come in checked like generated ones; a bad line refuses the
file (every bad line named, nothing written) unless the good ones are asked for."""

import hashlib
import json

import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from typer.testing import CliRunner

from annotation_db.cohorts import in_memory_batches, store_cohort
from annotation_db.models import Claim, GenerationRun, Rationale
from annotation_db.render import render_text
from app.cli import app
from generation.cohort import generate
from generation.cohort_config import CohortConfig
from generation.import_rationales import RationaleImportError, import_rationales
from generation.import_rationales_config import ImportConfig
from generation.teacher import write

runner = CliRunner()


@pytest.fixture
def cohort(engine):
    records, _ = generate(CohortConfig(n=30, seed=9))
    store_cohort(engine, name="imp", source="t", seed=9, config={}, sampling=None,
                 batches=in_memory_batches(records, render_text))
    return engine, records


def _lines(records, n=20, fmt="free") -> list[str]:
    return [json.dumps({"patient_id": r["external_id"], **write(r, fmt)}) for r in records[:n]]


def _counts(engine) -> tuple[int, int]:
    with Session(engine) as s:
        return (s.execute(select(func.count()).select_from(GenerationRun)).scalar(),
                s.execute(select(func.count()).select_from(Rationale)).scalar())


def test_a_valid_file_is_imported_with_its_provenance_and_claims(cohort, tmp_path):
    engine, records = cohort
    path = tmp_path / "outputs.jsonl"
    path.write_text("\n".join(_lines(records)) + "\n")
    summary = import_rationales(engine, path, ImportConfig(model="lab/model-7b",
                                                           mode="label-conditioned"))
    assert summary.imported == 20 and not summary.refused
    with Session(engine) as s:
        run = s.get(GenerationRun, summary.run_id)
        assert (run.model, run.backend, run.status) == ("lab/model-7b", "import", "finished")
        assert run.selection["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        stored = s.execute(select(Rationale).where(Rationale.run_id == run.id)).scalars().all()
        assert len(stored) == 20 and all(r.grounding and r.grounding_score == 1.0
                                         for r in stored)
        assert s.execute(select(func.count()).select_from(Claim)).scalar() >= 20
    again = import_rationales(engine, path, ImportConfig(model="lab/model-7b",
                                                         mode="label-conditioned"))
    assert (again.imported, again.already, again.run_id) == (0, 20, summary.run_id)


def _planted(records) -> list[str]:
    good = _lines(records, 12)
    other = records[12]
    foreign = write(other, "free")
    bad = [
        "this is not json",
        json.dumps(["a", "list"]),
        json.dumps({k: v for k, v in write(other, "free").items()}),  # no patient_id
        json.dumps({"patient_id": "P9999999", **foreign}),
        good[0],  # the same patient again
        json.dumps({"patient_id": other["external_id"], "evidence": ["E1"],
                    "rationale": "no prediction"}),
        json.dumps({"patient_id": records[13]["external_id"], **write(records[13],
                                                                      "stepwise")}),
        json.dumps({"patient_id": records[14]["external_id"], "prediction": "no",
                    "evidence": ["E999"], "rationale": "Nothing here [E999]."}),
    ]
    return good[:6] + bad[:4] + good[6:] + bad[4:]


def test_planted_bad_lines_are_each_named_and_nothing_is_written(cohort, tmp_path):
    engine, records = cohort
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(_planted(records)) + "\n")
    with pytest.raises(RationaleImportError) as refused:
        import_rationales(engine, path, ImportConfig(model="m"))
    message = str(refused.value)
    assert "8 bad line(s), nothing imported" in message
    for expected in ("line 7: not JSON", "line 8: not a JSON object", "line 9: no patient_id",
                     "line 10: unknown patient 'P9999999'",
                     "line 17: patient P0000001 again (first on line 1)",
                     "line 18: schema: prediction", "line 19: schema: rationale must be text",
                     "line 20: cites ids that are not in the record: E999"):
        assert expected in message
    assert _counts(engine) == (0, 0)


def test_skip_invalid_imports_the_good_lines_and_keeps_the_refused_ones(cohort, tmp_path):
    engine, records = cohort
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(_planted(records)) + "\n")
    summary = import_rationales(engine, path, ImportConfig(model="m", skip_invalid=True))
    assert summary.imported == 12 and len(summary.refused) == 8
    kept = [json.loads(x) for x in (tmp_path / "mixed.jsonl.refused.jsonl").read_text()
            .splitlines()]
    assert [k["line"] for k in kept] == [7, 8, 9, 10, 17, 18, 19, 20]
    assert kept[0]["text"] == "this is not json" and kept[3]["reason"].startswith("unknown")


def test_an_openai_batch_output_file_is_read_from_its_message_content(cohort, tmp_path):
    engine, records = cohort
    path = tmp_path / "batch_output.jsonl"
    lines = [json.dumps({"id": f"batch_req_{k}", "custom_id": r["external_id"], "error": None,
                         "response": {"status_code": 200, "body": {"choices": [{
                             "index": 0, "message": {"role": "assistant",
                                                     "content": json.dumps(write(r, "stepwise"))
                                                     }}]}}})
             for k, r in enumerate(records[:5])]
    lines.append(json.dumps({"id": "batch_req_x", "custom_id": records[5]["external_id"],
                             "response": None, "error": {"code": "rate_limit"}}))
    path.write_text("\n".join(lines) + "\n")
    summary = import_rationales(engine, path, ImportConfig(
        model="gpt", file_format="openai-batch", format="stepwise", skip_invalid=True))
    assert summary.imported == 5 and summary.refused == [
        "line 6: the batch request failed: {'code': 'rate_limit'}"]
    with Session(engine) as s:
        steps = s.execute(select(Rationale.steps).where(Rationale.run_id == summary.run_id)
                          ).scalars().first()
    assert steps and "step" in steps[0]


def test_the_cli_says_what_it_imported_and_refuses_in_one_line(cohort, tmp_path, monkeypatch):
    engine, records = cohort
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_lines(records, 3)) + "\n")
    result = runner.invoke(app, ["generate", "import", str(good), "--model", "lab/x"])
    assert result.exit_code == 0, result.output
    assert "3 rationales imported from good.jsonl" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("nope\n")
    result = runner.invoke(app, ["generate", "import", str(bad), "--model", "lab/x"])
    assert result.exit_code == 1 and "line 1: not JSON" in result.output
    assert "Traceback" not in result.output
