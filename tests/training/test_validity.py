"""What makes a comparison valid: budgets in real tokens, truncation by whole lines, paired
patients, full-precision scores, rationale caps, a label-blind teacher, and controls."""

import csv
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sqlmodel import Session

from annotation_db.export import get_version
from annotation_db.models import DatasetVersion
from annotation_db.render import HistoryBudgetError, drop_oldest_lines, render_compact
from annotation_db.student_task import history_of, user_message
from generation.models import history_counter, load_tokenizer
from tests.helpers import audited_version
from training.data import (
    DataError,
    fit_prompt,
    patient_of,
    read_view,
    subsample,
    tokenize_row,
    training_rows,
)
from training.evaluate import (
    Scored,
    evaluate_run,
    judge_validity,
    rationale_cap,
    write_outputs,
)
from training.evaluate_config import EvaluateConfig
from training.metrics import joint_paired_difference
from training.precision import resolve_precision
from training.sft import train
from training.sft_config import SFTRunConfig


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("validity")
    return audited_version(f"sqlite:///{root / 'db.sqlite'}", root / "exports", n=120), root


def _version(engine, name="t"):
    with Session(engine) as session:
        return get_version(session, name)


def test_the_history_budget_is_counted_in_the_models_tokens(small_record, bundled_model):
    count = history_counter()
    tokenizer = load_tokenizer(bundled_model.path)
    rendered = render_compact(small_record, 200, count)
    assert rendered.tokens == len(tokenizer(rendered.text, add_special_tokens=False)
                                  ["input_ids"]) <= 200


def test_a_budget_below_the_floor_is_an_error_naming_the_floor(small_record):
    with pytest.raises(HistoryBudgetError, match=r"floor of \d+ tokens") as caught:
        render_compact(small_record, 60, history_counter())
    floor = int(re.search(r"floor of (\d+)", str(caught.value)).group(1))
    assert floor > 60
    render_compact(small_record, floor, history_counter())  # the floor itself fits


@pytest.fixture(scope="module")
def small_record():
    from generation.cohort import generate
    from generation.cohort_config import CohortConfig

    records, _ = generate(CohortConfig(n=20, seed=3))
    return max(records, key=lambda r: len(r["items"]))


def test_truncation_drops_whole_lines_oldest_dated_first(small_record):
    history = render_compact(small_record, None).text
    lines = history.split("\n")
    kept_kinds = ("Demo", "Gene", "FamHx")
    dated = sorted((line.split()[1], int(line.split()[0][1:]), line) for line in lines[1:]
                   if line.split()[2] not in kept_kinds and re.match(r"E\d+ \d{4}-", line))
    short, removed = drop_oldest_lines(history, lambda h: len(h) <= len(history) - 200)
    assert removed > 0 and short.splitlines()[0] == lines[0]
    assert short.endswith(f"({removed} older items omitted)")
    gone = {line for line in lines if line not in short.split("\n")}
    assert gone == {d[2] for d in dated[:removed]}
    for line in lines:  # header and undated facts always stay
        if line == lines[0] or (len(line.split()) > 2 and line.split()[2] in kept_kinds):
            assert line in short
    with pytest.raises(HistoryBudgetError):
        drop_oldest_lines(history, lambda h: False)


def test_training_and_test_prompts_are_cut_by_the_same_rule(study, small_record,
                                                             bundled_model):
    from annotation_db.student_task import SYSTEM

    engine, _ = study
    tokenizer = load_tokenizer(bundled_model.path)
    history = render_compact(small_record, None, history_counter()).text
    row = {"id": "P1-r1", "label": 1,
           "prompt": [{"role": "system", "content": SYSTEM},
                      {"role": "user", "content": user_message(history)}],
           "completion": [{"role": "assistant", "content": "The record shows memory "
                           "complaints [E3].\nFinal answer: yes"}]}
    full = tokenize_row(tokenizer, row, max_length=4096)
    target = len(full["input_ids"]) - 200
    short = tokenize_row(tokenizer, row, max_length=target)
    assert short["truncated"] and len(short["input_ids"]) <= target
    loss = sum(t != -100 for t in full["labels"])
    assert short["labels"][-loss:] == full["labels"][-loss:]  # the answer is kept whole
    with pytest.raises(DataError, match="completion alone"):
        tokenize_row(tokenizer, row, max_length=loss - 1)
    text = tokenizer.decode(short["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are a clinical prediction assistant")
    assert "older items omitted)" in text
    # scoring applies fit_prompt with the same rule: same history as the training row
    budget = target - loss
    fitted, removed = fit_prompt(tokenizer, row["prompt"], budget)
    assert removed > 0 and history_of(fitted[-1]["content"]) in text
    assert fitted[0] == row["prompt"][0]


def test_every_target_of_a_cell_trains_on_the_same_patients(study):
    engine, _ = study
    version = _version(engine)
    targets = ["label", "rationale-free", "rationale-stepwise"]
    drawn = {t: [patient_of(r) for r in training_rows(version, t, 20, 3, targets)]
             for t in targets}
    assert len(drawn["label"]) == 20 and drawn["label"] == drawn["rationale-free"] \
        == drawn["rationale-stepwise"]
    assert drawn["label"] != [patient_of(r) for r in training_rows(version, "label", 20, 4,
                                                                    targets)]
    with pytest.raises(DataError, match="asks for more patients than the"):
        training_rows(version, "label", 10_000, 0, targets)
    with pytest.raises(DataError, match="more than the 3 rows available"):
        subsample([{"id": i, "label": i % 2} for i in range(3)], 4, seed=0)


def test_predictions_keep_full_precision(tmp_path):
    p = np.array([0.123456789012345678, 0.25781234567, 1 / 3])
    scored = Scored(ids=["a", "b", "c"], labels=np.array([1, 0, 1]), p_yes=p,
                    label_mass=np.ones(3), reached_answer=[None] * 3, rationales=[None] * 3,
                    seconds=0.0)
    path = write_outputs(tmp_path, scored, {"n": 3})
    with path.open() as handle:
        stored = [float(r["p_yes"]) for r in csv.DictReader(handle)]
    assert stored == p.tolist()


def test_the_rationale_cap_covers_the_taught_rationales(bundled_model):
    tokenizer = load_tokenizer(bundled_model.path)
    texts = [" ".join(["word"] * n) + "\nFinal answer: yes" for n in range(10, 110)]
    cap = rationale_cap(tokenizer, texts, None)
    lengths = sorted(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
                     for t in texts)
    assert cap["cap"] > cap["completion_p99"] >= lengths[int(0.98 * len(lengths))]
    with pytest.raises(DataError, match="below the 99th percentile"):
        rationale_cap(tokenizer, texts, 64)
    metrics = judge_validity({"reached_answer_share": 0.5, "rationale_token_cap": cap}, 0.95)
    assert metrics["valid"] is False and "50%" in metrics["invalid_reason"]
    assert judge_validity({"reached_answer_share": 0.96}, 0.95)["valid"] is True


def test_label_blind_generation_never_shows_the_label(study):
    from generation.rationales import generate_rationales
    from generation.rationales_config import GenerateConfig
    from generation.teacher import TemplateBackend

    engine, _ = study
    seen = []

    class Spy(TemplateBackend):
        def complete(self, requests, params):
            seen.extend(r.record for r in requests)
            return super().complete(requests, params)

    cfg = GenerateConfig(cohort="c", split="validation", n=6, mode="label-blind",
                         backend="template", history_budget=200)
    summary = generate_rationales(engine, cfg, backend=Spy())
    assert summary.generated == 6 and len(seen) == 6
    assert all("label" not in r and "outcome" not in r for r in seen)


def test_joint_bootstrap_pairs_share_one_resample():
    rng = np.random.default_rng(0)
    y = np.array([1] * 40 + [0] * 40)
    good = y + rng.normal(0, 0.4, y.size)
    noise = [rng.normal(0, 1, y.size) for _ in range(3)]
    result = joint_paired_difference(y, [(good, n) for n in noise], n_resamples=500)
    expected = np.mean([roc_auc_score(y, good) - roc_auc_score(y, n) for n in noise])
    assert result["difference"] == pytest.approx(expected)
    assert result["low"] > 0 and result["p_value"] < 0.01 and result["pairs"] == 3
    same = joint_paired_difference(y, [(good, good)], n_resamples=200)
    assert same["difference"] == 0 and same["low"] == same["high"] == 0
    # one resample for all pairs: a pair repeated adds no information, so the interval
    # is the single pair's (independent resamples per pair would narrow it)
    one = joint_paired_difference(y, [(good, noise[0])], n_resamples=500, seed=5)
    twice = joint_paired_difference(y, [(good, noise[0])] * 2, n_resamples=500, seed=5)
    assert (twice["low"], twice["high"]) == pytest.approx((one["low"], one["high"]))


def test_bf16_autocast_only_where_the_cpu_has_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="emulated"):
        resolve_precision("bf16")
    # a config meant for another machine still hashes: as what bf16 means on a CPU
    assert resolve_precision("bf16", strict=False) == "bf16-autocast"
    cfg = SFTRunConfig(dataset="v1", precision="bf16")
    assert cfg.identity("x") != cfg.model_copy(update={"precision": "fp32"}).identity("x")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto") == "bf16-autocast"
    assert resolve_precision("fp32") == "fp32"


def _derived_version(engine, base_name: str, name: str, transform) -> None:
    """A copy of a version's label-only view with its rows transformed (a control)."""
    base = _version(engine, base_name)
    folder = Path(base.path).parent / name
    files = {}
    for split in ("train", "validation", "test"):
        rows = transform(read_view(base, "label_only", split), split)
        blob = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        (folder / "label_only").mkdir(parents=True, exist_ok=True)
        (folder / "label_only" / f"{split}.jsonl").write_bytes(blob)
        files[f"label_only/{split}.jsonl"] = hashlib.sha256(blob).hexdigest()
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    with Session(engine) as session:
        session.add(DatasetVersion(name=name, content_hash=digest, path=str(folder),
                                   manifest={**base.manifest, "files": files}))
        session.commit()


def _short(row: dict, extra: str = "") -> dict:
    history = history_of(row["prompt"][-1]["content"]).split("\n")[0]
    return {**row, "prompt": [row["prompt"][0],
                              {"role": "user", "content": user_message(history + extra)}]}


def _train_and_score(engine, name: str, tmp_path) -> dict:
    cfg = SFTRunConfig(dataset=name, target="label", train_size=None, seed=0, lora_r=8,
                       learning_rate=3e-3, num_train_epochs=1, per_device_train_batch_size=8,
                       max_length=256, save_steps=1000, runs_dir=str(tmp_path / "runs"),
                       validate_each_epoch=False, probe_rows=1)  # diagnostics nobody reads here
    run = train(engine, cfg)
    result = evaluate_run(engine, str(run.id), EvaluateConfig(engine="transformers",
                                                              n_bootstrap=200))
    return result.metrics


@pytest.mark.slow
def test_oracle_and_shuffled_label_controls(study, tmp_path):
    """Through the real training and scoring path: a prompt that states the answer is
    learned (AUROC near 1); the same short prompts without the statement, trained on
    shuffled labels, stay at chance (CI holds 0.5), far below the oracle. (Answer-stating
    prompts with shuffled labels are no negative control here: the base model copies a
    stated answer zero-shot, AUROC 1.0 after 3 epochs of shuffled labels.)"""
    engine, _ = study

    def oracle(rows, split):
        return [_short(r, f"\nE0 The answer is {'yes' if r['label'] else 'no'}.")
                for r in (rows[:24] if split == "train" else rows)]

    def shuffled(rows, split):
        rows = [_short(r) for r in (rows[:24] if split == "train" else rows)]
        if split == "train":
            labels = [r["label"] for r in rows]
            random.Random(0).shuffle(labels)
            rows = [{**r, "label": y, "completion": [
                {"role": "assistant", "content": f"Final answer: {'yes' if y else 'no'}"}]}
                for r, y in zip(rows, labels, strict=True)]
        return rows

    _derived_version(engine, "t", "oracle", oracle)
    _derived_version(engine, "t", "shuffled", shuffled)
    positive = _train_and_score(engine, "oracle", tmp_path)
    assert positive["auroc"]["value"] >= 0.95
    negative = _train_and_score(engine, "shuffled", tmp_path)
    assert negative["auroc"]["low"] <= 0.5 <= negative["auroc"]["high"]
    assert negative["auroc"]["value"] < positive["auroc"]["value"] - 0.2


def test_committed_reports_hold_no_machine_paths():
    reports = Path(__file__).resolve().parents[2] / "docs" / "reports"
    leaks = [str(f.relative_to(reports)) for f in reports.rglob("*") if f.is_file()
             and f.suffix in (".md", ".csv", ".json", ".html")
             and re.search(r"(/tmp/|/root/|/home/|/work/)", f.read_text(errors="ignore"))]
    assert leaks == []
