"""Presets: named SFT recipes under the command line's and the file's settings."""

from typer.testing import CliRunner

from app.cli import app
from app.screens.runs import NO_PRESET, fill_preset, launch_forms
from training.presets import PRESETS, preset_settings
from training.sft_config import SFTRunConfig


def test_a_preset_sits_under_the_file_and_the_options(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("dataset: v1\nlearning_rate: 0.003\n")
    cfg = SFTRunConfig.load(config, base=preset_settings("cpu-scale"), seed=2, lora_r=None)
    assert (cfg.train_size, cfg.per_device_train_batch_size, cfg.max_length) == (400, 8, 768)
    assert cfg.learning_rate == 0.003  # the file over the preset
    assert cfg.seed == 2 and cfg.lora_r == 16  # an option over both; an unset one leaves it


def test_every_preset_is_a_valid_config_and_an_unknown_one_is_named():
    for name in PRESETS:
        SFTRunConfig.load(base=preset_settings(name), dataset="v1")
    result = CliRunner().invoke(app, ["train", "sft", "--dataset", "v1", "--preset", "fast"])
    assert result.exit_code != 0
    assert "no preset 'fast'; known: quick-check, cpu-scale, gpu-scale" in result.output


def test_choosing_a_preset_on_the_runs_screen_fills_the_sft_form_and_none_resets_it():
    forms = launch_forms()
    fields = forms.sft.fields
    filled = dict(zip(fields, fill_preset(forms, "quick-check"), strict=True))
    assert (filled["max_steps"], filled["train_size"], filled["validate_each_epoch"]) == (
        "4", "16", False)
    assert filled["lora_dropout"] == "0.05"  # not in the preset: its default
    reset = dict(zip(fields, fill_preset(forms, NO_PRESET), strict=True))
    assert (reset["max_steps"], reset["train_size"]) == ("-1", "")
    assert forms.sft.overrides(fill_preset(forms, "quick-check"))["max_steps"] == 4


def test_settings_that_fit_keep_the_effective_batch_even_from_an_odd_split(bundled_model):
    from training.memory import fitting, for_config

    config = SFTRunConfig(dataset="v1", target="rationale-free", per_device_train_batch_size=6,
                          gradient_accumulation_steps=1, max_length=768)
    need = for_config(config, bundled_model.path, "bf16-autocast").total
    fit = fitting(config, bundled_model.path, "bf16-autocast", available=need - 0.5)
    assert fit["per_device_train_batch_size"] * fit["gradient_accumulation_steps"] == 6
    assert fit["per_device_train_batch_size"] in (3, 2, 1) and fit["max_length"] == 768
    assert fitting(config, bundled_model.path, "bf16-autocast", available=0.5) is None
