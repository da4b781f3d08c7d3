"""Accounts of the catalog: users with a role, their passwords (argon2), login sessions and API
tokens, and the failed-login counts that rate limiting reads.

Why the secrets are stored as they are:
- passwords are low-entropy, so they get a slow, salted, memory-hard hash (argon2id through
  argon2-cffi, its RFC 9106 defaults);
- session ids and API tokens are 256 random bits the server made, so a plain SHA-256 is enough
  to make a copied database useless, and it is fast enough to check on every request (argon2 on
  every API call would cost ~50 ms of CPU each).

Every check reads the database, with no cache: removing a user or ending a session takes effect
on the next request of every running serve process.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import delete, exc, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .db import _utc, utcnow
from .schema import CredentialRow, LoginFailureRow, UserRow
from .settings import ServeError

MAX_USER_NAME = 64
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
FAILURE_LIMIT = 5  # failed logins per account, and per client address, within FAILURE_WINDOW
FAILURE_WINDOW = timedelta(minutes=15)
TOKEN_PREFIX = "tl_"


class Role(str, Enum):
    volunteer = "volunteer"
    staff = "staff"
    admin = "admin"


# What each role may do; each role has everything of the roles before it.
PERMISSIONS: dict[str, frozenset[str]] = {
    "volunteer": frozenset({"browse", "identify", "add"}),
    "staff": frozenset({"browse", "identify", "add", "edit", "delete", "export"}),
    "admin": frozenset({"browse", "identify", "add", "edit", "delete", "export", "admin"}),
}


class AccountError(ServeError):
    """A user operation refused (unknown name, name taken, weak password); ``status`` is the HTTP
    code the web answer gets, the CLI exits 2."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class User:
    """Who a request comes from. ``open`` is the account-less mode (no user exists yet and the
    server is bound to loopback): everything is allowed, as before accounts existed."""

    name: str
    role: str
    open: bool = False

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, ())


OPEN_USER = User("(no accounts yet)", "admin", open=True)


@dataclass
class UserInfo:
    name: str
    role: str
    created_at: datetime
    sessions: int
    tokens: int


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def clean_user_name(name: str | None) -> str:
    """Trimmed, inner whitespace collapsed, no control characters, 1-64 characters. Anything else
    printable is allowed (the pages escape it)."""
    name = " ".join((name or "").split())
    if not name:
        raise AccountError("give a user name")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise AccountError("the user name contains control characters")
    if len(name) > MAX_USER_NAME:
        raise AccountError(f"the user name is longer than {MAX_USER_NAME} characters")
    return name


def check_password(password: str | None) -> str:
    if not password or len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters")
    return password


def check_role(role: str) -> str:
    role = str(getattr(role, "value", role))
    if role not in PERMISSIONS:
        raise AccountError(f"unknown role '{role[:20]}': choose admin, staff or volunteer")
    return role


class UserStore:
    """The account operations on a catalog's engine, each one transaction."""

    def __init__(self, engine: Engine):
        from argon2 import PasswordHasher

        self.engine = engine
        self._writer = engine.execution_options(write=True)
        self._hasher = PasswordHasher()
        self._dummy: str | None = None

    # -- users ----------------------------------------------------------------------------------
    def count(self) -> int:
        with Session(self.engine) as s:
            return s.scalar(select(func.count(UserRow.id))) or 0

    def add(self, name: str, role: str, password: str) -> str:
        name, role = clean_user_name(name), check_role(role)
        hashed = self._hasher.hash(check_password(password))
        try:
            with Session(self._writer) as s, s.begin():
                if s.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
                    raise AccountError(f"a user named '{name}' already exists", 409)
                s.add(UserRow(name=name, role=role, password_hash=hashed, created_at=utcnow()))
        except exc.IntegrityError:  # added at the same moment by another process
            raise AccountError(f"a user named '{name}' already exists", 409) from None
        return name

    def remove(self, name: str) -> None:
        """Delete the user and, in the same transaction, every session and token of theirs."""
        with Session(self._writer) as s, s.begin():
            row = self._user(s, name)
            s.execute(delete(CredentialRow).where(CredentialRow.user_id == row.id))
            s.delete(row)

    def set_password(self, name: str, password: str) -> None:
        """New password; the user's login sessions end (their API tokens stay)."""
        hashed = self._hasher.hash(check_password(password))
        with Session(self._writer) as s, s.begin():
            row = self._user(s, name)
            row.password_hash = hashed
            s.execute(delete(CredentialRow).where(CredentialRow.user_id == row.id, CredentialRow.kind == "session"))

    def list(self) -> list[UserInfo]:
        counts = (select(CredentialRow.user_id, CredentialRow.kind, func.count(CredentialRow.id))
                  .group_by(CredentialRow.user_id, CredentialRow.kind))
        with Session(self.engine) as s:
            n = {(u, k): c for u, k, c in s.execute(counts).all()}
            rows = s.scalars(select(UserRow).order_by(UserRow.name)).all()
            return [UserInfo(r.name, r.role, _utc(r.created_at), n.get((r.id, "session"), 0), n.get((r.id, "token"), 0))
                    for r in rows]

    def _user(self, s: Session, name: str) -> UserRow:
        row = s.scalars(select(UserRow).where(UserRow.name == name).with_for_update()).first()
        if row is None:
            raise AccountError(f"no user named '{(name or '')[:MAX_USER_NAME]}'", 404)
        return row

    # -- passwords, sessions, tokens --------------------------------------------------------------
    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is theirs. An unknown name costs the same hash as a known
        one, so timing does not tell which names exist."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with Session(self.engine) as s:
            row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
            user = User(row.name, row.role) if row else None
            stored = row.password_hash if row else self._dummy_hash()
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is not None and self._hasher.check_needs_rehash(stored):
            self._rehash(user.name, password)
        return user

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def _rehash(self, name: str, password: str) -> None:
        with Session(self._writer) as s, s.begin():
            row = s.scalars(select(UserRow).where(UserRow.name == name)).first()
            if row is not None:
                row.password_hash = self._hasher.hash(password)

    def new_session(self, name: str, lifetime: timedelta) -> str:
        """A session id for the cookie; expired sessions of everyone are cleared on the way."""
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        with Session(self._writer) as s, s.begin():
            s.execute(delete(CredentialRow).where(CredentialRow.kind == "session", CredentialRow.expires_at < now))
            row = self._user(s, name)
            s.add(CredentialRow(user_id=row.id, kind="session", token_hash=digest(secret), created_at=now,
                                expires_at=now + lifetime))
        return secret

    def new_token(self, name: str) -> str:
        """An API token (shown once; only its hash is kept). Tokens do not expire: remove the user
        or run ``users token`` again and revoke with ``users remove``."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with Session(self._writer) as s, s.begin():
            row = self._user(s, name)
            s.add(CredentialRow(user_id=row.id, kind="token", token_hash=digest(secret), created_at=utcnow()))
        return secret

    def resolve(self, secret: str) -> User | None:
        """The user a session id or token belongs to, if it is current."""
        q = (select(UserRow.name, UserRow.role, CredentialRow.expires_at)
             .join(UserRow, UserRow.id == CredentialRow.user_id).where(CredentialRow.token_hash == digest(secret)))
        with Session(self.engine) as s:
            hit = s.execute(q).first()
        if hit is None or (hit.expires_at is not None and _utc(hit.expires_at) <= utcnow()):
            return None
        return User(hit.name, hit.role)

    def end_session(self, secret: str) -> None:
        with Session(self._writer) as s, s.begin():
            s.execute(delete(CredentialRow).where(CredentialRow.token_hash == digest(secret),
                                                  CredentialRow.kind == "session"))

    # -- failed logins ----------------------------------------------------------------------------
    def failure_wait(self, username: str, client: str) -> int:
        """Seconds until this account and this address may try again (0: now)."""
        now = utcnow()
        cutoff = now - FAILURE_WINDOW
        wait = 0.0
        with Session(self.engine) as s:
            for col, value in ((LoginFailureRow.username, username[:MAX_USER_NAME]), (LoginFailureRow.client, client)):
                times = s.scalars(select(LoginFailureRow.at).where(col == value, LoginFailureRow.at > cutoff)
                                  .order_by(LoginFailureRow.at.desc()).limit(FAILURE_LIMIT)).all()
                if len(times) >= FAILURE_LIMIT:
                    wait = max(wait, (_utc(times[-1]) + FAILURE_WINDOW - now).total_seconds())
        return math.ceil(wait) if wait > 0 else 0

    def record_failure(self, username: str, client: str) -> None:
        now = utcnow()
        with Session(self._writer) as s, s.begin():
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.at < now - FAILURE_WINDOW))
            s.add(LoginFailureRow(username=username[:MAX_USER_NAME], client=client[:64], at=now))

    def clear_failures(self, username: str) -> None:
        """After a successful login: that account's count starts again (the address's does not)."""
        with Session(self._writer) as s, s.begin():
            s.execute(delete(LoginFailureRow).where(LoginFailureRow.username == username))
