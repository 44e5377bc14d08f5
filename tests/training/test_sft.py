"""LoRA SFT from a verified dataset version: masking, bookkeeping, resume, CLI."""

import json
from pathlib import Path

import pytest
from sqlmodel import Session
from transformers import TrainerCallback

from annotation_db.export import get_version
from annotation_db.models import TrainingRun
from annotation_db.provenance import code_version
from tests.helpers import audited_version
from training import runs
from training.data import IGNORE, DataError, prompt_text, read_view, subsample, tokenize_row
from training.evaluate_config import EvaluateConfig
from training.grid.results import trained_under
from training.sft import latest_checkpoint, load_tokenizer, train
from training.sft_config import SFTRunConfig


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One small audited version on SQLite, shared by this module's tests."""
    root = tmp_path_factory.mktemp("study")
    return audited_version(f"sqlite:///{root / 'db.sqlite'}", root / "exports"), root


def _rows(engine, view="rationale_free", split="train"):
    with Session(engine) as session:
        return read_view(get_version(session, "t"), view, split)


def test_only_the_assistant_turn_carries_loss(study, bundled_model):
    engine, _ = study
    tokenizer = load_tokenizer(bundled_model.path)
    for view in ("label_only", "rationale_free", "rationale_stepwise"):
        row = _rows(engine, view)[0]
        tokens = tokenize_row(tokenizer, row, max_length=4096)
        trained = [t for t, label in zip(tokens["input_ids"], tokens["labels"], strict=True)
                   if label != IGNORE]
        # the prompt's length, measured apart from tokenize_row: the rendered text's tokens
        n_prompt = len(tokenizer(prompt_text(tokenizer, row["prompt"]),
                                 add_special_tokens=False)["input_ids"])
        assert 0 < n_prompt < len(tokens["labels"])
        assert all(label == IGNORE for label in tokens["labels"][:n_prompt])
        assert tokens["labels"][n_prompt:] == tokens["input_ids"][n_prompt:]
        text = tokenizer.decode(trained)
        assert text == row["completion"][0]["content"] + "<|im_end|>\n"
        assert text.rstrip().endswith(("Final answer: yes<|im_end|>", "Final answer: no<|im_end|>"))
        assert "Patient record" not in text and "<|im_start|>" not in text


def test_subsample_keeps_the_label_mix_and_is_seeded():
    rows = [{"id": i, "label": int(i < 30)} for i in range(100)]
    part = subsample(rows, 20, seed=1)
    assert len(part) == 20 and sum(r["label"] for r in part) == 6
    assert part == subsample(rows, 20, seed=1) and part != subsample(rows, 20, seed=2)
    assert subsample(rows, None, seed=1) == rows
    with pytest.raises(DataError, match="more than the 100 rows available"):
        subsample(rows, 101, seed=1)


def test_a_tampered_view_is_refused(study):
    engine, _ = study
    with Session(engine) as session:
        version = get_version(session, "t")
        path = Path(version.path) / "label_only/train.jsonl"
        original = path.read_bytes()
        path.chmod(0o644)
        path.write_bytes(original.replace(b'"label": 1', b'"label": 0', 1))
        try:
            with pytest.raises(DataError, match="does not match the version's manifest"):
                read_view(version, "label_only", "train")
        finally:
            path.write_bytes(original)
            path.chmod(0o444)


class StopAt(TrainerCallback):
    """Simulates a crash: training stops right after the checkpoint at ``step``."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _short(version: str) -> str:
    return version[:12] + ("+dirty" if version.endswith("+dirty") else "")


def _adapter_tensors(run_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(study, tmp_path, tiny_model,
                                                               model_cache):
    """Resuming is a property of the trainer, not of the model: a 2-layer model shows it."""
    engine, root = study
    common = dict(dataset="t", target="label", train_size=8, max_steps=4, save_steps=2,
                  per_device_train_batch_size=2, max_length=256, seed=3, lora_r=4,
                  learning_rate=1e-3, cache_dir=str(model_cache), logging_steps=1,
                  base_model=tiny_model)
    # An uninterrupted run in a second database (same data, same config).
    other = audited_version(f"sqlite:///{tmp_path / 'b.sqlite'}", tmp_path / "exports")
    straight = train(other, SFTRunConfig(runs_dir=str(tmp_path / "a"), **common))

    cfg = SFTRunConfig(runs_dir=str(tmp_path / "b"), **common)
    with pytest.raises(InterruptedError, match="stopped at step 2 of 4"):
        train(engine, cfg, callbacks=[StopAt(2)])
    with Session(engine) as session:
        row = session.query(TrainingRun).filter_by(config_hash=cfg.identity(
            get_version(session, "t").content_hash)).one()
        assert row.status == "failed" and "step 2 of 4" in row.error
    # The interrupted session's record, as if older code had begun the run.
    record_path = Path(row.run_dir) / "provenance.json"
    first = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**first, "code_version": "a" * 40}))
    resumed = train(engine, cfg)
    summary = json.loads((Path(resumed.run_dir) / "train_summary.json").read_text())
    assert resumed.status == "finished" and summary["resumed_from"] == "checkpoint-2"

    a, b = _adapter_tensors(straight.run_dir), _adapter_tensors(resumed.run_dir)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-6, name
    moved = [n for n in a if "lora_B" in n and a[n].abs().max().item() > 0]
    assert moved, "training changed no LoRA weight"

    # The run folder says what it trained on and how.
    folder = Path(resumed.run_dir)
    dataset = json.loads((folder / "dataset.json").read_text())
    with Session(engine) as session:
        assert dataset["content_sha256"] == get_version(session, "t").content_hash
    assert dataset["examples"] == 8 and dataset["loss_tokens"] > 0
    assert (folder / "DONE").exists() and (folder / "config.yaml").exists()
    # ... and under which code: the session that began it is kept, then the resume.
    record = json.loads((folder / "provenance.json").read_text())
    assert [s["code_version"] for s in record["earlier"]] == ["a" * 40]
    assert trained_under(folder) == "aaaaaaaaaaaa resumed under " + _short(code_version())
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text()
             .splitlines()]
    assert steps[-1] == 4
    # Same config again: reused, not retrained.
    assert train(engine, cfg).id == resumed.id
    # --force retrains from step 0: old checkpoints are not resumed from.
    forced = train(engine, cfg, force=True)
    summary = json.loads((Path(forced.run_dir) / "train_summary.json").read_text())
    assert forced.id == resumed.id and summary["resumed_from"] is None
    assert "earlier" not in json.loads((folder / "provenance.json").read_text())
    assert summary["global_step"] == 4
    again = _adapter_tensors(forced.run_dir)
    assert all((a[n] - again[n]).abs().max().item() < 1e-6 for n in a)


def test_an_incomplete_checkpoint_is_never_resumed_from(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):  # killed while saving step 6
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"
    assert latest_checkpoint(tmp_path / "none") is None


def test_run_rows_record_status_and_errors(engine, tmp_path):
    with Session(engine) as session:
        run = runs.begin(session, kind="sft", target="label", base_model="m", config={},
                         config_hash="a" * 64, run_dir=tmp_path / "r", dataset_version_id=None)
        assert run.status == "running"
        runs.fail(session, run, RuntimeError("out of memory"))
        assert (run.status, run.error) == ("failed", "RuntimeError: out of memory")
        again = runs.begin(session, kind="sft", target="label", base_model="m", config={},
                           config_hash="a" * 64, run_dir=tmp_path / "r",
                           dataset_version_id=None)
        assert again.id == run.id and again.status == "running" and again.error is None
        (tmp_path / "r").mkdir()
        runs.finish(session, again)
        assert again.status == "finished" and (tmp_path / "r" / "DONE").exists()
        assert runs.find_run(session, "a" * 8).id == run.id
        assert runs.find_run(session, str(run.id)).id == run.id
        with pytest.raises(runs.RunError, match="no training run matches"):
            runs.find_run(session, "zzzzzzzz")
        # A result counts as done only for the evaluation settings it was made with.
        full, quick = EvaluateConfig(), EvaluateConfig(limit=4, batch_size=2)
        assert full.settings_hash() == EvaluateConfig(batch_size=32).settings_hash()
        metric = {"value": 0.7, "low": 0.6, "high": 0.8}
        runs.record_evaluation(session, run, split="test", predictions_path=tmp_path / "p.csv",
                               metrics={"n": 4, "auroc": metric, "auprc": metric,
                                        "brier": metric, "settings_hash": quick.settings_hash()})
        assert runs.result_for(session, run.id, "test").n == 4
        assert runs.result_for(session, run.id, "test", quick.settings_hash()).n == 4
        assert runs.result_for(session, run.id, "test", full.settings_hash()) is None
        runs.forget_evaluations(session, "a" * 64)
        assert runs.result_for(session, run.id, "test") is None


def test_config_validation_and_equivalent_command():
    cfg = SFTRunConfig(dataset="v1", target="rationale-free", lora_r=8, learning_rate=6e-4)
    assert cfg.lora_alpha == 16
    assert cfg.cli() == ("rationale-audit train sft --dataset v1 --target rationale-free "
                         "--lora-r 8 --learning-rate 0.0006")
    assert "--config run.yaml  # with lora_target_modules" in SFTRunConfig(
        dataset="v1", lora_target_modules=["q_proj"]).cli()
    assert SFTRunConfig(dataset="v1", group_by_length=False).cli().endswith(
        "--no-group-by-length")  # a boolean is a flag pair on the command line
    assert cfg.identity("x") == SFTRunConfig(dataset="v1", target="rationale-free", lora_r=8,
                                             learning_rate=6e-4, runs_dir="elsewhere"
                                             ).identity("x")
    assert cfg.identity("x") != cfg.identity("y")
    # bookkeeping does not change the weights, so it does not change the run
    assert cfg.identity("x") == cfg.model_copy(update={
        "save_steps": 7, "logging_steps": 1, "save_total_limit": 9}).identity("x")
    # "auto" precision is hashed as what it resolves to here: bf16 on a GPU or on a CPU
    # with native bf16 (autocast), else fp32
    import torch

    from generation.engine import cpu_has_native_bf16

    resolved = "bf16" if torch.cuda.is_available() or cpu_has_native_bf16() else "fp32"
    assert cfg.identity("x") == cfg.model_copy(update={"precision": resolved}).identity("x")
    assert cfg.identity("x") != cfg.model_copy(update={
        "precision": "fp32" if resolved == "bf16" else "bf16"}).identity("x")
    from annotation_db.command_config import ConfigError

    with pytest.raises(ConfigError, match="target"):
        SFTRunConfig.load(None, dataset="v1", target="rationale")



def test_the_cpu_trainer_computes_trls_loss(study, tiny_model):
    """On CPU the loss comes from the model's own cross-entropy instead of TRL's fused
    LM-head kernel (much slower without Triton); on the same batch the loss is TRL's."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from training.sft import logits_loss_trainer

    engine, root = study
    tokenizer = load_tokenizer(tiny_model)
    rows = [tokenize_row(tokenizer, row, 384) for row in _rows(engine)[:4]]
    for row in rows:
        row.pop("truncated")
    losses = []
    for cls in (SFTTrainer, logits_loss_trainer()):
        torch.manual_seed(0)
        args = SFTConfig(output_dir=str(root / cls.__name__), max_length=None,
                         completion_only_loss=True, loss_type="nll", report_to="none",
                         use_cpu=True, per_device_train_batch_size=4, disable_tqdm=True)
        trainer = cls(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args,
                      processing_class=tokenizer, train_dataset=Dataset.from_list(rows))
        batch = next(iter(trainer.get_train_dataloader()))
        n_items = int((batch["labels"][:, 1:] != IGNORE).sum())
        with torch.no_grad():
            losses.append(float(trainer.compute_loss(trainer.model, batch,
                                                     num_items_in_batch=n_items)))
    assert losses[0] > 0 and losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_the_cpu_loss_skips_prompt_logits_but_keeps_loss_and_gradients(study, tiny_model):
    """Logits are computed only where a completion token is predicted; on a padded
    batch of unequal rows the loss and the LoRA gradients are the model's own."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.sft import completion_loss

    engine, _ = study
    tokenizer = load_tokenizer(tiny_model)
    rows = [tokenize_row(tokenizer, row, 384) for row in _rows(engine)[:3]]
    width = max(len(r["input_ids"]) for r in rows)
    assert len({len(r["input_ids"]) for r in rows}) > 1, "rows of unequal length"
    batch = {"input_ids": torch.full((3, width), tokenizer.pad_token_id),
             "labels": torch.full((3, width), IGNORE),
             "attention_mask": torch.zeros((3, width), dtype=torch.long)}
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        batch["labels"][i, :n] = torch.tensor(r["labels"])
        batch["attention_mask"][i, :n] = 1
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    grads = []
    for fast in (False, True):
        model.zero_grad()
        if fast:
            loss, out = completion_loss(model, batch)
            assert out.logits.shape[1] < width  # the prompt's logits were never computed
        else:
            loss = model(**batch).loss
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()
                                    if p.requires_grad]))
    (slow_loss, slow), (fast_loss, fast) = grads
    assert fast_loss == pytest.approx(slow_loss, rel=1e-5)
    for a, b in zip(slow, fast, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
