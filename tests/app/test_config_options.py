"""`config_options` beyond one config class: a command's own option group (options that
must stay out of a hashed config) and a command's usual config file."""

from pathlib import Path

import typer
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from annotation_db.command_config import CommandConfig
from app.common import config_options, user_errors

runner = CliRunner()


class _Recipe(CommandConfig):
    size: int = Field(3, description="How big.")


class _Bookkeeping(BaseModel):
    workers: int = Field(2, description="Processes that share the work.")
    dry_run: bool = Field(False, description="Say what would run.",
                          json_schema_extra={"flag": "--dry-run"})


def _app(command) -> typer.Typer:
    app = typer.Typer()
    app.command()(user_errors(command))
    app.command("other")(lambda: None)  # two commands: typer keeps the command's name
    return app


def test_a_commands_own_group_gives_typed_options_with_their_help_and_defaults():
    seen = {}

    @config_options(_Recipe, _Bookkeeping)
    def go(cfg: _Recipe, workers: int = 2, dry_run: bool = False) -> None:
        seen.update(size=cfg.size, workers=workers, dry_run=dry_run)

    app = _app(go)
    assert runner.invoke(app, ["go", "--workers", "5", "--dry-run"]).exit_code == 0
    assert seen == {"size": 3, "workers": 5, "dry_run": True}
    assert runner.invoke(app, ["go"]).exit_code == 0
    assert seen == {"size": 3, "workers": 2, "dry_run": False}
    assert runner.invoke(app, ["go", "--workers", "many"]).exit_code == 2  # an int option
    help_text = runner.invoke(app, ["go", "--help"], terminal_width=200).output
    assert "Processes that share the work (default 2)" in help_text


def test_a_commands_config_parameter_names_its_usual_file_and_receives_the_path(tmp_path,
                                                                                monkeypatch):
    seen = {}

    @config_options(_Recipe)
    def go(cfg: _Recipe, config: Path = Path("recipe.yaml")) -> None:
        seen.update(size=cfg.size, config=config)

    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_text("size: 7\n")
    Path("other.yaml").write_text("size: 9\n")
    app = _app(go)
    assert runner.invoke(app, ["go"]).exit_code == 0
    assert seen == {"size": 7, "config": Path("recipe.yaml")}
    assert runner.invoke(app, ["go", "--config", "other.yaml", "--size", "4"]).exit_code == 0
    assert seen == {"size": 4, "config": Path("other.yaml")}
    assert "(default recipe.yaml)" in runner.invoke(app, ["go", "--help"],
                                                    terminal_width=200).output
