"""The configs that identify runs keep their hashes where they live now.

A run, a result or an archive is found again by its config's content hash; moving a
config into its ``<step>_config.py`` must not change one (pinned values below, from
before the move). That the config modules load light and every field has help is
checked in ``tests/app/test_cli_options.py``.
"""

import importlib
from pathlib import Path

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


def test_sampled_results_drawn_on_shared_streams_are_scored_again_and_no_other_result_is():
    """Sampled scoring changed how it draws (one stream per run and patient, not one seed
    for all): its results' settings hash moved, so earlier sampled results are scored
    again, while greedy and direct results keep theirs (pinned from before the change)
    and are reused."""
    from training.evaluate_config import EvaluateConfig

    assert EvaluateConfig(scoring="generate").settings_hash() == "c835ae5834e1a061"
    assert EvaluateConfig(scoring="direct", split="validation").settings_hash() \
        == "75e22b5bf52dbe30"
    assert EvaluateConfig(scoring="sampled").settings_hash() != "8bb6a92625a7826a"
    assert "sample_streams" in EvaluateConfig(scoring="sampled").identity_data()
