"""Each command's config lives in a light ``<step>_config.py`` beside its step.

The CLI, the Runs screen and grids read a command's flags, YAML keys and help from
these modules, so loading one must not load the step's heavy dependencies, and every
field must say what it is for (its description is the option's help).
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from annotation_db.command_config import CommandConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in ("annotation_db", "generation", "training", "app")
    for path in (ROOT / package).rglob("*_config.py"))
HEAVY = ("torch", "transformers", "vllm", "gradio", "sqlmodel")


def _configs(module_name: str) -> list[type[CommandConfig]]:
    module = importlib.import_module(module_name)
    return [value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, CommandConfig)
            and value is not CommandConfig and value.__module__ == module_name]


@pytest.mark.parametrize("module_name", CONFIG_MODULES)
def test_a_config_module_loads_without_the_heavy_libraries(module_name):
    probe = (f"import sys, {module_name}; "
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "[]", f"{module_name} loads {loaded}"


@pytest.mark.parametrize("module_name", CONFIG_MODULES)
def test_every_config_field_says_what_it_is_for(module_name):
    undescribed = [f"{config.__name__}.{name}" for config in _configs(module_name)
                   for name, field in config.model_fields.items() if not field.description]
    assert undescribed == []


def test_the_moved_configs_keep_their_identity():
    """Moving a class to its config module changes no hash (pinned from before the move):
    runs, results and archives made earlier are still found."""
    from generation.import_rationales_config import ImportConfig
    from generation.judge_config import JudgeConfig
    from generation.rationales_config import GenerateConfig
    from training.evaluate_config import EvaluateConfig
    from training.evidence_ablation_config import FaithfulnessConfig
    from training.fewshot_config import FewShotConfig
    from training.sft_config import SFTRunConfig

    assert JudgeConfig(campaign="p").content_hash().startswith("555213167b4f")
    assert GenerateConfig().content_hash().startswith("9ec0e8565149")
    assert ImportConfig(model="m").content_hash().startswith("f5229ecf02fb")
    assert FaithfulnessConfig(run=1).content_hash().startswith("f64edf37e7f7")
    assert EvaluateConfig().settings_hash() == "cd3f33306ddece6f"
    assert FewShotConfig(dataset="v1").identity("y").startswith("260a55e47ef3")
    assert SFTRunConfig(dataset="v1", target="multitask", precision="fp32").identity(
        "x").startswith("0321f700d09b")
