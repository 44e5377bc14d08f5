"""Accounts: users with roles, passwords stored only as argon2 hashes.

    rationale-audit users add dr.rao --role annotator
    rationale-audit users list | disable NAME | reset-password NAME | unlock NAME

Every change is recorded in the audit trail in the same transaction (``actor`` and
``address`` say who made it and from where; ``cli`` for the command line). Disabling
an account or resetting its password ends its open sessions.
"""

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import audit
from annotation_db.errors import UserError
from annotation_db.models import Role, User, utcnow

_hasher = PasswordHasher()
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
MIN_PASSWORD = 8


class AccountError(UserError):
    """A user operation that cannot be done; the message is one line."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"passwords need at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def create_user(session: Session, *, username: str, password: str, role: str,
                actor: str | None = None, address: str | None = audit.CLI) -> User:
    if not USERNAME.match(username):
        raise AccountError(f"username {username!r} must be 2–64 letters, digits, '.', '_' or '-'")
    if role not in {r.value for r in Role}:
        raise AccountError(f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}")
    if get_user(session, username) is not None:
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    audit.record(session, "user_created", actor=actor, address=address, target=username,
                 commit=False, role=role)
    session.commit()
    session.refresh(user)
    return user


def get_user(session: Session, username: str) -> User | None:
    return session.execute(select(User).where(User.username == username)).scalars().first()


def require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise AccountError(f"no user named {username!r}")
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this password, or None (same answer for every failure)."""
    user = get_user(session, username)
    if user is None or not user.active:
        _hasher.hash("timing-equaliser")  # do not reveal which usernames exist
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.add(user)
        session.commit()
    return user


def set_active(session: Session, username: str, active: bool, *, actor: str | None = None,
               address: str | None = audit.CLI) -> User:
    """Enable or disable an account; disabling ends its open sessions."""
    user = require_user(session, username)
    user.active = active
    if not active:
        user.sessions_valid_after = utcnow()
    session.add(user)
    audit.record(session, "user_enabled" if active else "user_disabled", actor=actor,
                 address=address, target=username, commit=False)
    session.commit()
    return user


def reset_password(session: Session, username: str, password: str, *,
                   actor: str | None = None, address: str | None = audit.CLI) -> User:
    """A new password; sessions signed in with the old one end."""
    user = require_user(session, username)
    user.password_hash = hash_password(password)
    user.sessions_valid_after = utcnow()
    session.add(user)
    audit.record(session, "password_reset", actor=actor, address=address, target=username,
                 commit=False)
    session.commit()
    return user


def unlock(session: Session, username: str, *, actor: str | None = None,
           address: str | None = audit.CLI) -> None:
    """Clear the login throttle of an account: the running app reads this event at the
    account's next login attempt (it may be another process)."""
    require_user(session, username)
    audit.record(session, "user_unlocked", actor=actor, address=address, target=username)


def session_valid(session: Session, username: str, signed_in_at) -> bool:
    """Whether a session of ``username`` signed in at ``signed_in_at`` may go on."""
    user = get_user(session, username)
    if user is None or not user.active:
        return False
    cutoff = user.sessions_valid_after
    if cutoff is not None and cutoff.tzinfo is None:  # SQLite drops the zone
        cutoff = cutoff.replace(tzinfo=signed_in_at.tzinfo)
    return cutoff is None or signed_in_at > cutoff


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.username)).scalars())
