"""Named SFT recipes: a researcher starts from one and changes what they need.

    rationale-audit train sft --dataset study-v1 --preset cpu-scale --target rationale-free

A preset is a set of :class:`training.sft.SFTRunConfig` fields; the command line (and a
``--config`` file) override it, the config's defaults fill the rest. On the Runs screen
choosing a preset fills the SFT form; every field stays editable. Each preset fits the
machine it names: the memory estimate (:mod:`training.memory`) is checked against it in
``tests/training/test_presets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from annotation_db.errors import UserError


@dataclass(frozen=True)
class Preset:
    summary: str
    settings: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "quick-check": Preset(
        "does the path work: 16 patients, 4 steps of 4 rows, 512 tokens (about a minute "
        "on 2 CPU cores with the bundled model)",
        {"train_size": 16, "max_steps": 4, "per_device_train_batch_size": 4,
         "max_length": 512, "lora_r": 8, "learning_rate": 1e-3, "logging_steps": 1,
         "save_steps": 1000, "validate_each_epoch": False}),
    "cpu-scale": Preset(
        "the reproduction's cpu scale (experiments/reproduce.yaml): 400 patients, batch 8 of "
        "768 tokens in bf16 autocast, 4 epochs at 1e-3; fits a 2-core, 24 GiB machine",
        {"train_size": 400, "per_device_train_batch_size": 8, "max_length": 768,
         "learning_rate": 1e-3, "num_train_epochs": 4, "lora_r": 16, "precision": "bf16",
         "save_steps": 25, "logging_steps": 5}),
    "gpu-scale": Preset(
        "the reproduction's gpu scale: 2,000 patients, batch 32 of 768 tokens, 2 epochs at "
        "1e-3, no per-epoch validation (one H100 or H200)",
        {"train_size": 2000, "per_device_train_batch_size": 32, "max_length": 768,
         "learning_rate": 1e-3, "num_train_epochs": 2, "lora_r": 16, "save_steps": 200,
         "logging_steps": 10, "validate_each_epoch": False}),
}


class PresetError(UserError):
    """An unknown preset; the message lists the known ones."""


def preset_settings(name: str | None) -> dict:
    """The fields of preset ``name`` (none for None)."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise PresetError(f"no preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name].settings)


def described() -> str:
    """Every preset with what it is for, as ``--help`` and the Runs screen list them."""
    return "; ".join(f"{name}: {p.summary}" for name, p in PRESETS.items())
