"""`rationale-audit export`: verified, versioned datasets of approved rationales."""

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import export as crud
from annotation_db.export_config import (
    ExportCreateConfig,
    ExportDeleteConfig,
    ExportPreviewConfig,
)
from annotation_db.models import DatasetVersion
from annotation_db.users import require_user
from app.commands.db import open_engine
from app.common import cli_actor, config_options, user_errors
from generation.models import history_counter

app = typer.Typer(help="Verified dataset versions: preview, create, list, show, verify, delete.",
                  no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command()
@user_errors
@config_options(ExportPreviewConfig)
def preview(cfg: ExportPreviewConfig, db: str | None = None) -> None:
    """How many rationales pass the policy, and how many fail each criterion.

    Example:

        rationale-audit export preview --policy policy.yaml
    """
    rules, _ = crud.ApprovalPolicy.from_file(Path(cfg.policy))
    with Session(open_engine(db)) as session:
        result = crud.preview(session, rules)
    console.print(f"{result['approved']} of {result['rationales']} rationales pass "
                  f"({result['adjudicated']} decided by adjudication)", highlight=False)
    for reason, count in result["failing_by_criterion"].items():
        console.print(f"  {count} fail: {reason}", highlight=False)


@app.command()
@user_errors
@config_options(ExportCreateConfig)
def create(cfg: ExportCreateConfig, db: str | None = None) -> None:
    """Write an immutable, content-addressed dataset version and register it.

    Example:

        rationale-audit export create --policy policy.yaml --name v1
    """
    with Session(open_engine(db)) as session:
        version = crud.create(session, policy_path=Path(cfg.policy), name=cfg.name,
                              root=Path(cfg.root), counter_for=history_counter,
                              actor=cli_actor(), address="cli")
    console.print(f"{version.name}: sha256 {version.content_hash} → {version.path}",
                  highlight=False)
    for view, counts in version.manifest["counts"].items():
        console.print(f"  {view}: " + ", ".join(f"{s} {n}" for s, n in counts.items()),
                      highlight=False)


@app.command("list")
@user_errors
@config_options(None)
def list_(db: str | None = None) -> None:
    """List dataset versions.

    Example:

        rationale-audit export list
    """
    table = Table("name", "sha256", "created", "approved", "status")
    with Session(open_engine(db)) as session:
        for v in session.execute(select(DatasetVersion).order_by(DatasetVersion.id)).scalars():
            table.add_row(v.name, v.content_hash[:12], v.created_at.strftime("%Y-%m-%d %H:%M"),
                          str(v.manifest["decisions"]["approved"]),
                          "deleted" if v.deleted_at else "published")
    console.print(table)


@app.command()
@user_errors
@config_options(None)
def show(name: str, db: str | None = None) -> None:
    """Print a version's manifest (policy, counts, agreement, provenance, hashes).

    Example:

        rationale-audit export show v1
    """
    with Session(open_engine(db)) as session:
        manifest = crud.get_version(session, name).manifest
    console.print_json(json.dumps(manifest))


@app.command()
@user_errors
@config_options(None)
def verify(name: str, db: str | None = None) -> None:
    """Re-hash a version's files and compare them with its manifest (exit 1 if they differ).

    Example:

        rationale-audit export verify v1
    """
    with Session(open_engine(db)) as session:
        problems = crud.verify(crud.get_version(session, name))
    if problems:
        for problem in problems:
            console.print(f"[red]✗[/] {problem}", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"[green]✓[/] {name}: every file matches its recorded hash", highlight=False)


@app.command()
@user_errors
@config_options(ExportDeleteConfig)
def delete(cfg: ExportDeleteConfig, name: str, db: str | None = None) -> None:
    """Delete a version's data files (admins only); its manifest is kept.

    Example:

        rationale-audit export delete v1 --admin root
    """
    with Session(open_engine(db)) as session:
        crud.delete(session, name=name, admin=require_user(session, cfg.admin), address="cli")
    console.print(f"deleted the data of {name}; its manifest is kept", highlight=False)
