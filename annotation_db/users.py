"""Accounts: users with roles, passwords stored only as argon2 hashes.

    rationale-audit users add dr.rao --role annotator
    rationale-audit users list | disable NAME | reset-password NAME
"""

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.models import Role, User

_hasher = PasswordHasher()
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
MIN_PASSWORD = 8


class UserError(ValueError):
    """A user operation that cannot be done; the message is one line."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"passwords need at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    if not USERNAME.match(username):
        raise UserError(f"username {username!r} must be 2–64 letters, digits, '.', '_' or '-'")
    if role not in {r.value for r in Role}:
        raise UserError(f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}")
    if get_user(session, username) is not None:
        raise UserError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def get_user(session: Session, username: str) -> User | None:
    return session.execute(select(User).where(User.username == username)).scalars().first()


def require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise UserError(f"no user named {username!r}")
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


def set_active(session: Session, username: str, active: bool) -> User:
    user = require_user(session, username)
    user.active = active
    session.add(user)
    session.commit()
    return user


def reset_password(session: Session, username: str, password: str) -> User:
    user = require_user(session, username)
    user.password_hash = hash_password(password)
    session.add(user)
    session.commit()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.username)).scalars())
