"""Who is asking: the one check every screen's handlers make.

Login itself checks the database (argon2 hashes, :func:`auth_checker`). After it,
every handler takes the user from ``gr.Request.username`` and calls :func:`user_of`,
which re-reads the account (a disabled account is refused at once) and checks the
role; an id a browser sends back is only a request, never a permission.
"""

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns
from annotation_db.errors import UserError
from annotation_db.models import Campaign, User
from annotation_db.users import authenticate

REVIEW_ROLES = ("adjudicator", "admin")
ADMIN_ROLES = ("admin",)
RESEARCH_ROLES = ("admin", "researcher")


def user_of(session: Session, request: gr.Request, roles: tuple[str, ...] = ()) -> User:
    """The signed-in, active user, who must hold one of ``roles`` when any are given."""
    name = getattr(request, "username", None)
    user = session.execute(select(User).where(User.username == name)).scalars().first()
    if user is None or not user.active:
        raise gr.Error("Please log in again.")
    if roles and user.role not in roles:
        raise gr.Error("Your role does not allow this.")
    return user


def address_of(request: gr.Request) -> str | None:
    """The client's address, for the audit trail."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def campaign_of(session: Session, name: str | None) -> Campaign:
    """The campaign named in the form, or an error the user can act on."""
    if not name:
        raise gr.Error("Choose a campaign first.")
    try:
        return campaigns.get_campaign(session, name)
    except campaigns.CampaignError as exc:
        raise gr.Error(str(exc)) from None


# Password hashing (argon2, about half a second of CPU each by design) runs on this one
# worker thread, never on the server's event loop: a burst of sign-ins waits its turn
# here while signed-in users' requests go on being answered.
_HASHING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-check")


def auth_checker(engine) -> Callable[[str, str], Awaitable[bool]]:
    """Gradio's login callback: the password checked against the database, on the
    hashing worker (Gradio awaits a coroutine callback)."""
    def check(username: str, password: str) -> bool:
        with Session(engine) as s:
            return authenticate(s, username, password) is not None

    async def check_off_loop(username: str, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(_HASHING, check, username,
                                                                password)

    return check_off_loop


def bound(handler: Callable, *context) -> Callable:
    """``handler`` with its leading arguments (the database engine, …) given.

    Handlers live at module level and take that context first. A :class:`UserError` the
    handler does not catch itself becomes a one-line message on the screen (as the CLI
    prints it as one ``Error:`` line). The returned function
    shows Gradio only the rest of the signature and its type hints, so Gradio still
    recognises the ``gr.Request`` parameter it must fill in, and the handler's name.
    """
    signature = inspect.signature(handler)
    rest = list(signature.parameters.values())[len(context):]

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*context, *args, **kwargs)
        except UserError as exc:  # what the person can fix, shown as a message
            raise gr.Error(str(exc)) from None

    call.__signature__ = signature.replace(parameters=rest)
    call.__annotations__ = {name: hint for name, hint in handler.__annotations__.items()
                            if name in {p.name for p in rest} or name == "return"}
    return call
