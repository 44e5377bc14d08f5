"""Every command's flags come from its config class or a shared option group.

The config classes (one per command, in a ``<step>_config.py`` beside the step) are
the single source of each command's flags, YAML keys and help; the option groups of
:mod:`app.options` (database, verbosity, model cache, API key) are written once.
"""

import ast
import inspect
from pathlib import Path

import click
import typer

from annotation_db.command_config import CommandConfig
from app.cli import app
from app.options import GROUPS

ROOT = Path(__file__).resolve().parents[2]


def _leaf_commands(group: click.Command, path: tuple = ()) -> list[tuple[str, click.Command]]:
    if hasattr(group, "commands"):
        return [leaf for name, sub in group.commands.items()
                for leaf in _leaf_commands(sub, (*path, name))]
    return [(" ".join(path), group)]


def _config_classes() -> list[type[CommandConfig]]:
    found, todo = [], list(CommandConfig.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if not c.__module__.startswith("tests.")]


def _import_everything() -> None:
    """Import every module so every config class is defined (the CLI imports lazily)."""
    import importlib

    for floor in ("annotation_db", "generation", "training", "app"):
        for path in [*(ROOT / floor).rglob("*_config.py"), *(ROOT / floor).rglob("config.py")]:
            importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))


def test_every_option_of_every_command_is_a_config_field_or_a_shared_group_option():
    shared = {f"--{name.replace('_', '-')}" for group in GROUPS for name in group.model_fields}
    leaves = _leaf_commands(typer.main.get_command(app))
    assert len(leaves) > 40
    stray = []
    for name, command in leaves:
        config = getattr(command.callback, "config_class", "absent")
        if config == "absent":
            stray.append(f"{name}: not built by app.common.config_options")
            continue
        fields = {f"--{n.replace('_', '-')}" for group in command.callback.option_groups
                  for n in group.model_fields}
        if config is not None:
            for field in config.option_fields():
                fields.update(config.flag(field, v) for v in (True, False)
                              if config.option_fields()[field][0] is bool)
                fields.add(config.flag(field))
            fields.discard("")
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            flags = {f for f in param.opts + param.secondary_opts}
            if not flags & (fields | shared | {"--config", "--preset"}):
                stray.append(f"{name}: {sorted(flags)}")
    assert not stray, "options written by hand, not from a config:\n" + "\n".join(stray)


def test_every_option_has_help():
    missing = [f"{name} {param.opts[0]}" for name, command in
               _leaf_commands(typer.main.get_command(app)) for param in command.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert not missing, missing


def test_every_config_field_has_help():
    _import_everything()
    classes = _config_classes() + list(GROUPS)
    assert len(classes) > 20
    missing = [f"{cls.__module__}.{cls.__name__}.{name}" for cls in classes
               for name, field in cls.model_fields.items() if not (field.description or "")]
    assert not missing, missing


def test_config_modules_load_no_heavy_library():
    """A config module is cheap to import: the CLI, the forms and the docs read it
    without loading torch, vLLM, the database layer or numpy."""
    import subprocess
    import sys

    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts)
               for floor in ("annotation_db", "generation", "training", "app")
               for p in [*(ROOT / floor).rglob("*_config.py"),
                         *(ROOT / floor).rglob("config.py")]]
    assert len(modules) > 10
    script = ("import sys, importlib\n"
              f"for m in {modules!r}: importlib.import_module(m)\n"
              "heavy = ('torch', 'vllm', 'transformers', 'gradio', 'sqlmodel', 'sqlalchemy',"
              " 'numpy', 'peft')\n"
              "print(sorted(h for h in heavy if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]", f"importing the config modules loads {out}"


def test_hand_written_options_are_few():
    calls = 0
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "Option"
                    and getattr(node.func.value, "id", "") == "typer"):
                calls += 1
    assert calls < 20, f"{calls} hand-written typer.Option calls"


def test_config_options_marks_the_command_with_its_config():
    from app.common import config_options

    class Toy(CommandConfig):
        n: int = 1

    @config_options(Toy)
    def command(cfg: Toy, db: str | None = None) -> None:
        return None

    assert command.config_class is Toy
    names = list(inspect.signature(command).parameters)
    assert names[:2] == ["config", "n"] and "db" in names
