"""Verified export: policy, determinism, splits, immutability, tamper detection, TRL."""

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import adjudication, export, users
from annotation_db import campaigns as camp
from annotation_db.models import Assignment, DatasetVersion, Patient, Rationale
from generation.models import history_counter
from tests.helpers import PASSWORD, seed_rationales


def _policy(tmp_path, **overrides) -> Path:
    body = {"campaigns": ["pilot"], "min_ratings": 2, "min_accuracy": 4,
            "min_faithfulness": 4, "min_gold_accuracy": None, **overrides}
    path = tmp_path / f"policy-{len(list(tmp_path.glob('policy-*')))}.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path


@pytest.fixture
def rated(engine):
    """12 rationales rated by two annotators: even patients good, odd ones poor."""
    run_id = seed_rationales(engine, n=12, gold=2)
    with Session(engine) as s:
        raters = [users.create_user(s, username=n, password=PASSWORD, role="annotator")
                  for n in ("ann", "bob")]
        users.create_user(s, username="root", password=PASSWORD, role="admin")
        camp.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann", "bob"], k=2,
                             gold_share=0.2, claim_review=False)
        for user in raters:
            for a in s.execute(select(Assignment).where(Assignment.user_id == user.id)
                               ).scalars().all():
                r = s.get(Rationale, a.rationale_id)
                good = r.patient_id % 2 == 0 and not r.is_gold
                camp.submit(s, assignment_id=a.id, user=user, accuracy=5 if good else 2,
                            faithfulness=4 if good else 2,
                            flags=[] if good else ["hallucinated_fact"])
    return engine


def test_preview_counts_pass_and_fail_per_criterion(rated, tmp_path):
    with Session(rated) as s:
        result = export.preview(s, export.ApprovalPolicy.from_file(_policy(tmp_path))[0])
    assert (result["rationales"], result["approved"], result["rejected"]) == (12, 6, 6)
    assert result["failing_by_criterion"] == {"accuracy below 4": 6, "blocking flag": 6,
                                              "faithfulness below 4": 6}


def test_policy_edge_cases(rated, tmp_path):
    def approved(**kw):
        with Session(rated) as s:
            return export.preview(s, export.ApprovalPolicy.from_file(_policy(tmp_path, **kw))[0]
                                  )["approved"]

    assert approved(min_ratings=3) == 0
    assert approved(min_accuracy=1, min_faithfulness=1, blocking_flags=[]) == 12
    assert approved(min_faithfulness=5) == 0
    assert approved(min_gold_accuracy=1.0) == 6  # both raters caught their gold items
    with Session(rated) as s:
        pid = s.execute(select(Rationale.id).where(Rationale.patient_id == 1,
                                                   Rationale.variant == "original")).scalar()
        adjudication.decide(s, campaign=camp.get_campaign(s, "pilot"), rationale_id=pid,
                            adjudicator=users.require_user(s, "root"), decision="approve",
                            accuracy=4, faithfulness=4, flags=[], reason="raters misread")
    assert approved() == 7
    assert approved(adjudication_overrides=False) == 6
    with pytest.raises(export.ExportError, match="invalid policy"):
        export.ApprovalPolicy.from_file(_policy(tmp_path, min_ratngs=2))
    with Session(rated) as s, pytest.raises(export.ExportError, match="campaign 'nope'"):
        export.preview(s, export.ApprovalPolicy.from_file(_policy(tmp_path,
                                                                   campaigns=["nope"]))[0])


def test_same_state_gives_byte_identical_files_and_a_rating_change_changes_the_hash(rated,
                                                                                     tmp_path):
    policy = export.ApprovalPolicy.from_file(_policy(tmp_path))[0]
    with Session(rated) as s:
        first, _ = export.build(s, policy, counter_for=history_counter)
        second, _ = export.build(s, policy, counter_for=history_counter)
    assert first == second
    with Session(rated) as s:
        a = s.execute(select(Assignment).where(Assignment.status == "submitted")).scalars().first()
        camp.submit(s, assignment_id=a.id, user=s.get(users.User, a.user_id), accuracy=3,
                    faithfulness=3, flags=[])
        third, _ = export.build(s, policy, counter_for=history_counter)
    assert export.content_hash(third) != export.content_hash(first)


def test_splits_follow_the_cohort_and_test_has_every_test_patient(rated, tmp_path):
    policy = export.ApprovalPolicy.from_file(_policy(tmp_path))[0]
    with Session(rated) as s:
        files, data = export.build(s, policy, counter_for=history_counter)
        split_of = {p.external_id: p.split for p in s.execute(select(Patient)).scalars()}
    for view in ("label_only", "rationale_free"):
        for split in ("train", "validation", "test"):
            for line in files[f"{view}/{split}.jsonl"].decode().splitlines():
                row = json.loads(line)
                assert split_of[row["id"].split("-r")[0]] == split
                assert row["completion"][0]["content"].endswith(
                    "Final answer: " + ("yes" if row["label"] else "no"))
    tests = [pid for pid, split in split_of.items() if split == "test"]
    assert data["counts"]["label_only"]["test"] == len(tests)
    ratings = [json.loads(x) for x in files["ratings_long/all.jsonl"].decode().splitlines()]
    assert ratings and all(r["rater"].startswith("rater-") for r in ratings)
    assert not {"ann", "bob"} & {r["rater"] for r in ratings}, "raters are pseudonymized"


def test_created_version_is_immutable_verifiable_and_deletable_by_admins_only(rated, tmp_path):
    from datasets import load_dataset

    with Session(rated) as s:
        version = export.create(s, policy_path=_policy(tmp_path), name="v1",
                                root=tmp_path / "exports", counter_for=history_counter)
        assert export.verify(version) == []
        with pytest.raises(export.ExportError, match="already exists"):
            export.create(s, policy_path=_policy(tmp_path), name="v1", root=tmp_path / "x",
                          counter_for=history_counter)
        with pytest.raises(export.ExportError, match="identical to version 'v1'"):
            export.create(s, policy_path=_policy(tmp_path), name="v2", root=tmp_path / "x",
                          counter_for=history_counter)
    folder = Path(version.path)
    data = load_dataset("json", data_files=str(folder / "label_only/train.jsonl"))["train"]
    assert data.num_rows == version.manifest["counts"]["label_only"]["train"]
    parquet = load_dataset("parquet", data_files=str(folder / "rationale_free/train.parquet"))
    assert parquet["train"].num_rows == version.manifest["counts"]["rationale_free"]["train"]
    target = folder / "label_only/train.jsonl"
    target.chmod(0o644)
    target.write_text(target.read_text().replace("yes", "no", 1))
    with Session(rated) as s:
        assert export.verify(export.get_version(s, "v1")) == [
            "label_only/train.jsonl: content changed"]
        with pytest.raises(export.ExportError, match="only an admin"):
            export.delete(s, name="v1", admin=users.require_user(s, "ann"))
        export.delete(s, name="v1", admin=users.require_user(s, "root"))
        gone = export.get_version(s, "v1")
        assert gone.deleted_at is not None and gone.manifest["content_sha256"]
    assert (folder / "manifest.json").is_file() and not target.exists()


def test_a_database_rebuilt_beside_its_old_exports_writes_the_version_again(rated, tmp_path):
    """A database rebuilt from nothing (a fresh machine, a deleted file) finds the folder
    its predecessor wrote for the same data under the same name: it is replaced by this
    write, verified; a folder of that name holding other data is refused and kept."""
    root = tmp_path / "exports"
    with Session(rated) as s:
        first = export.create(s, policy_path=_policy(tmp_path), name="v1", root=root,
                              counter_for=history_counter)
        folder, digest = Path(first.path), first.content_hash
        s.delete(first)  # the database forgets it; the folder stays
        s.commit()
        again = export.create(s, policy_path=_policy(tmp_path), name="v1", root=root,
                              counter_for=history_counter)
        assert (Path(again.path), again.content_hash) == (folder, digest)
        assert export.verify(again) == []
        on_disk = json.loads((folder / "manifest.json").read_text())
        assert on_disk == json.loads(json.dumps(again.manifest))
        assert [p.name for p in root.iterdir()] == [folder.name]  # nothing left aside
        s.delete(again)
        s.commit()
        target = folder / "label_only/train.jsonl"
        target.chmod(0o644)
        target.write_text(target.read_text().replace("yes", "no", 1))
        with pytest.raises(export.ExportError,
                           match="already exists and does not hold these data "
                                 r"\(label_only/train.jsonl changed\)"):
            export.create(s, policy_path=_policy(tmp_path), name="v1", root=root,
                          counter_for=history_counter)
        target.unlink()  # as `export delete` leaves it: the manifest alone
        with pytest.raises(export.ExportError, match=r"\(label_only/train.jsonl missing\)"):
            export.create(s, policy_path=_policy(tmp_path), name="v1", root=root,
                          counter_for=history_counter)
        assert s.execute(select(func.count()).select_from(DatasetVersion)).scalar() == 0
    assert [p.name for p in root.iterdir()] == [folder.name]


@pytest.mark.slow
def test_trl_sft_trainer_accepts_the_views_unchanged(rated, tmp_path, tiny_model):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    if rated.dialect.name != "sqlite":
        pytest.skip("the trainer reads the exported files; the SQLite variant covers them")
    with Session(rated) as s:
        version = export.create(s, policy_path=_policy(tmp_path), name="trl",
                                root=tmp_path / "exports", counter_for=history_counter)
    for view in ("label_only", "rationale_free"):
        data = load_dataset("json", data_files=str(Path(version.path) / f"{view}/train.jsonl"))
        trainer = SFTTrainer(
            model=tiny_model, train_dataset=data["train"],
            args=SFTConfig(output_dir=str(tmp_path / view), max_steps=2,
                           per_device_train_batch_size=2, report_to="none", use_cpu=True,
                           logging_steps=1, save_strategy="no", max_length=1024))
        result = trainer.train()
        assert result.global_step == 2 and result.training_loss > 0


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "", "x" * 65,
                                  "v1 final", "v1\n"])
def test_a_version_name_that_could_leave_the_exports_folder_is_refused(rated, tmp_path, name):
    with Session(rated) as s, pytest.raises(export.ExportError, match="must be 1–64 letters"):
        export.create(s, policy_path=_policy(tmp_path), name=name, root=tmp_path / "exports",
                      counter_for=history_counter)
    assert not (tmp_path / "exports").exists(), "nothing is written"
    assert not list(tmp_path.parent.rglob("escaped*"))


@pytest.mark.parametrize("elsewhere", ["outside/v", "exports/sibling"])
def test_a_version_folder_that_is_a_link_is_refused(rated, tmp_path, elsewhere):
    """A link planted under the exports root cannot carry a version elsewhere, outside the
    root or into another folder inside it."""
    root, other = tmp_path / "exports", tmp_path / elsewhere
    other.mkdir(parents=True)
    root.mkdir(exist_ok=True)
    with Session(rated) as s:
        files, _ = export.build(s, export.ApprovalPolicy.from_file(_policy(tmp_path))[0],
                                counter_for=history_counter)
        (root / f"v1-{export.content_hash(files)[:12]}").symlink_to(other)
        with pytest.raises(export.ExportError, match="is a link"):
            export.create(s, policy_path=_policy(tmp_path), name="v1", root=root,
                          counter_for=history_counter)
    assert list(other.iterdir()) == []


def _nothing_exported(rated, tmp_path) -> bool:
    with Session(rated) as s:
        versions = s.execute(select(func.count()).select_from(DatasetVersion)).scalar()
    return versions == 0 and not (tmp_path / "exports").exists()


def test_a_negative_history_budget_is_refused_by_preview_and_create_alike(rated, tmp_path):
    policy = _policy(tmp_path, history_budget=-5)
    message = (f"invalid policy {policy}: 1 validation error for ApprovalPolicy history_budget"
               "   Input should be greater than or equal to 40 [type=greater_than_equal, "
               "input_value=-5, input_type=int]")
    with pytest.raises(export.ExportError) as caught:
        export.ApprovalPolicy.from_file(policy)  # what `export preview` reads
    assert str(caught.value) == message
    with Session(rated) as s, pytest.raises(export.ExportError) as caught:
        export.create(s, policy_path=policy, name="v1", root=tmp_path / "exports",
                      counter_for=history_counter)
    assert str(caught.value) == message
    assert _nothing_exported(rated, tmp_path)


def test_a_history_budget_below_the_renderings_floor_is_one_error_and_writes_nothing(rated,
                                                                                     tmp_path):
    with Session(rated) as s, pytest.raises(export.ExportError) as caught:
        export.create(s, policy_path=_policy(tmp_path, history_budget=40), name="v1",
                      root=tmp_path / "exports", counter_for=history_counter)
    assert re.fullmatch(
        r"the policy's history_budget is too small: history budget 40 is below the "
        r"rendering's floor of \d+ tokens for patient P\d+ \(header, demographics, genotype "
        r"and family history are always shown\); raise the budget to at least that",
        str(caught.value))
    assert _nothing_exported(rated, tmp_path)


def _correct(s, rated_patient_split: str, text: str, decide: str | None,
             against_outcome: bool = False) -> int:
    """ann proposes ``text`` for one of her items whose patient is in the given split,
    keeping its source's conclusion (as the app does; ``against_outcome``: the contrary
    of the patient's outcome); root then accepts or rejects it (``decide``) or leaves it
    proposed."""
    from annotation_db import corrections

    ann, root = users.require_user(s, "ann"), users.require_user(s, "root")
    taken = {c.source_rationale_id for c in s.execute(select(corrections.Correction)).scalars()}
    assignment = next(
        a for a in s.execute(select(Assignment).where(Assignment.user_id == ann.id)
                             .order_by(Assignment.id)).scalars()
        if a.rationale_id not in taken
        and s.get(Patient, s.get(Rationale, a.rationale_id).patient_id).split
        == rated_patient_split and not s.get(Rationale, a.rationale_id).is_gold)
    label = s.get(Patient, s.get(Rationale, assignment.rationale_id).patient_id).label
    made = corrections.propose(s, assignment_id=assignment.id, user=ann, text=text, steps=None,
                               cited_ids=["E1"], predicted_label=label != against_outcome,
                               grounding={"score": 1.0, "passed": True, "checks": []},
                               raw_output="{}")
    if decide:
        corrections.decide(s, correction_id=made.id, user=root, accept=decide == "accept",
                           reason="" if decide == "accept" else "not better")
    return made.id


def test_only_accepted_corrections_become_sft_targets_and_preference_pairs(rated, tmp_path):
    with Session(rated) as s:
        _correct(s, "train", "The corrected reading [E1].", "accept")
        _correct(s, "train", "A proposal nobody decided [E1].", None)
        _correct(s, "train", "A rejected proposal [E1].", "reject")
        _correct(s, "test", "A test patient's correction [E1].", "accept")
        _correct(s, "train", "A correction concluding against the outcome [E1].", "accept",
                 against_outcome=True)
        version = export.create(s, policy_path=_policy(tmp_path), name="corrected",
                                root=tmp_path / "exports", counter_for=history_counter)
    folder = Path(version.path)
    corrected = [json.loads(line) for line in
                 (folder / "rationale_corrected/train.jsonl").read_text().splitlines()]
    pairs = [json.loads(line) for line in
             (folder / "preference/train.jsonl").read_text().splitlines()]
    assert len(corrected) == len(pairs) == 1
    assert "The corrected reading [E1]." in corrected[0]["completion"][0]["content"]
    pair = pairs[0]
    assert "The corrected reading [E1]." in pair["chosen"][0]["content"]
    assert pair["rejected"][0]["content"].startswith("rationale ")  # the seeded original
    assert pair["prompt"] == corrected[0]["prompt"]
    assert not (folder / "preference/test.jsonl").exists()
    everything = "".join(p.read_text() for p in folder.rglob("*.jsonl"))
    assert "nobody decided" not in everything and "rejected proposal" not in everything
    assert "test patient's correction" not in everything
    assert "concluding against the outcome" not in everything


def test_without_an_accepted_correction_a_version_holds_no_correction_views(rated, tmp_path):
    """A version's files (and so its content hash, and every run identity built on it)
    do not move because the product gained views its audit gives no rows to."""
    with Session(rated) as s:
        _correct(s, "train", "A proposal nobody decided [E1].", None)
        _correct(s, "train", "A rejected proposal [E1].", "reject")
        _correct(s, "test", "A test patient's correction [E1].", "accept")
        version = export.create(s, policy_path=_policy(tmp_path), name="uncorrected",
                                root=tmp_path / "exports", counter_for=history_counter)
    folder = Path(version.path)
    written = {p.parent.name for p in folder.rglob("*.jsonl")}
    assert written == {"label_only", "rationale_free", "rationale_stepwise", "fewshot_pool",
                       "ratings_long"}
    assert not [f for f in version.manifest["files"] if f.startswith(export.CORRECTION_VIEWS)]
    assert export.verify(version) == []


def test_trl_dpo_trainer_trains_two_steps_on_the_preference_view(rated, tmp_path, tiny_model):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    if rated.dialect.name != "sqlite":
        pytest.skip("the trainer reads the exported files; the SQLite variant covers them")
    with Session(rated) as s:
        for text in ("The APOE genotype is recorded [E1].", "The record shows [E1].",
                     "Age and genotype [E1]."):
            _correct(s, "train", text, "accept")
        version = export.create(s, policy_path=_policy(tmp_path), name="dpo",
                                root=tmp_path / "exports", counter_for=history_counter)
    data = load_dataset("json",
                        data_files=str(Path(version.path) / "preference/train.jsonl"))["train"]
    assert len(data) == 3
    trainer = DPOTrainer(
        model=tiny_model, train_dataset=data,
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2,
                       per_device_train_batch_size=2, report_to="none", use_cpu=True,
                       logging_steps=1, save_strategy="no", max_length=1024))
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0


def test_a_rationale_concluding_against_the_recorded_outcome_is_never_exported(rated,
                                                                                 tmp_path):
    """A label-blind teacher (or an imported rationale) can conclude "unlikely" for a
    patient who was diagnosed. Its training row would end with the recorded answer, the
    opposite of its own conclusion, so it is refused with that reason however well it
    was rated, and even when an adjudicator approved it."""
    with Session(rated) as s:
        good = s.execute(select(Rationale).join(Patient, Patient.id == Rationale.patient_id)
                         .where(Rationale.variant == "original",
                                Rationale.is_gold.is_(False),
                                Rationale.patient_id % 2 == 0)).scalars().first()
        patient, good_id = s.get(Patient, good.patient_id), good.id
        good.predicted_label = not patient.label
        s.add(good)
        s.commit()
        adjudication.decide(s, campaign=camp.get_campaign(s, "pilot"),
                            rationale_id=good.id, adjudicator=users.require_user(s, "root"),
                            decision="approve", accuracy=5, faithfulness=5, flags=[],
                            reason="reads well")
        policy = export.ApprovalPolicy.from_file(_policy(tmp_path))[0]
        result = export.preview(s, policy)
        files, _ = export.build(s, policy, counter_for=history_counter)
    assert result["approved"] == 5
    assert result["failing_by_criterion"][export.CONTRADICTS_OUTCOME] == 1
    ids = {json.loads(line)["id"] for path, body in files.items()
           if path.endswith(".jsonl") and not path.startswith("ratings_long")
           for line in body.decode().splitlines()}
    assert not any(i.endswith(f"-r{good_id}") for i in ids)
    assert sum("-r" in i for i in ids) > 0  # the approved rationales' rows are there


def test_each_view_has_its_own_hash_so_two_versions_can_share_one_view():
    """Two versions that differ only in their rationales keep label-only's hash."""
    a = {"files": {"label_only/train.jsonl": "1" * 64, "label_only/test.jsonl": "2" * 64,
                   "rationale_free/train.jsonl": "3" * 64}}
    b = {"files": {**a["files"], "rationale_free/train.jsonl": "4" * 64}}
    ha, hb = export.view_hashes(a), export.view_hashes(b)
    assert set(ha) == {"label_only", "rationale_free"}
    assert ha["label_only"] == hb["label_only"] and ha["rationale_free"] != hb["rationale_free"]
    moved = {"files": {"label_only/validation.jsonl": "1" * 64,
                       "label_only/test.jsonl": "2" * 64}}
    assert export.view_hashes(moved)["label_only"] != ha["label_only"]  # names count
