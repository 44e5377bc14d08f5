"""`rationale-audit users`: accounts for annotators, adjudicators and admins."""

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from annotation_db import users as crud
from annotation_db.users_config import UserAddConfig
from app.commands.db import open_engine
from app.common import cli_actor, config_options, user_errors

app = typer.Typer(help="Accounts: add, list, disable, reset passwords, clear a sign-in "
                  "throttle. Every change is in the audit trail.", no_args_is_help=True)
console = Console(soft_wrap=True)

PasswordOption = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                              help="Asked for when not given (at least 8 characters).")


@app.command()
@user_errors
@config_options(UserAddConfig)
def add(cfg: UserAddConfig, username: str, password: str = PasswordOption,
        db: str | None = None) -> None:
    """Add a user.

    Example:

        rationale-audit users add dr.rao --role annotator
    """
    with Session(open_engine(db)) as session:
        user = crud.create_user(session, username=username, password=password, role=cfg.role,
                                actor=cli_actor())
    console.print(f"added {user.username} ({user.role})", highlight=False)


@app.command("list")
@user_errors
@config_options(None)
def list_(db: str | None = None) -> None:
    """List users, their roles and whether they can log in.

    Example:

        rationale-audit users list
    """
    table = Table("username", "role", "active", "created")
    with Session(open_engine(db)) as session:
        for user in crud.list_users(session):
            table.add_row(user.username, user.role, "yes" if user.active else "no",
                          user.created_at.strftime("%Y-%m-%d"))
    console.print(table)


@app.command()
@user_errors
@config_options(None)
def disable(username: str, db: str | None = None) -> None:
    """Stop a user from logging in and end their open sessions (their ratings are kept).

    Example:

        rationale-audit users disable dr.rao
    """
    _change(db, f"disabled {username}", crud.set_active, username, False)


@app.command("reset-password")
@user_errors
@config_options(None)
def reset_password(username: str, password: str = PasswordOption, db: str | None = None) -> None:
    """Set a new password for a user; sessions signed in with the old one end.

    Example:

        rationale-audit users reset-password dr.rao
    """
    _change(db, f"password of {username} changed", crud.reset_password, username, password)


@app.command()
@user_errors
@config_options(None)
def enable(username: str, db: str | None = None) -> None:
    """Let a disabled user log in again.

    Example:

        rationale-audit users enable dr.rao
    """
    _change(db, f"enabled {username}", crud.set_active, username, True)


@app.command()
@user_errors
@config_options(None)
def unlock(username: str, db: str | None = None) -> None:
    """Clear the sign-in throttle of a user after failed passwords.

    The running app reads the unlock at the account's next sign-in attempt.

    Example:

        rationale-audit users unlock dr.rao
    """
    _change(db, f"unlocked {username}", crud.unlock, username)


def _change(db: str | None, done: str, change, *args) -> None:
    """Apply one account change as the command line's user (audited), then say so."""
    with Session(open_engine(db)) as session:
        change(session, *args, actor=cli_actor())
    console.print(done, highlight=False)
