"""The catalog's schema version and the tables that are not pets: accounts, their credentials,
failed logins and the audit log, with the migrations between versions.

Kept apart from :mod:`.db` (pets and photos) so the accounts have their own module, but under the
same ``schema_version``: a catalog is backed up, restored and upgraded as one thing.

- version 1: photos, pets (see :mod:`.db`);
- version 2: users, credentials (sessions and API tokens, stored only as SHA-256 hashes),
  login_failures (rate limiting), audit.
"""

from __future__ import annotations

import contextvars
from datetime import datetime, timezone

from sqlalchemy import DateTime, ForeignKey, Integer, String, func, inspect, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .settings import ServeError

SCHEMA_VERSION = 2
_PG_INIT_LOCK = 0x7472_616E  # advisory lock id: one process creates or migrates the schema at a time


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CredentialRow(Base):
    """A login session (``kind='session'``, expires) or an API token (``kind='token'``). Only the
    SHA-256 of the secret is stored: a copy of the database lets nobody in."""

    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LoginFailureRow(Base):
    """One failed login (never the password), for the per-account and per-address limits. In the
    database rather than in memory so several serve processes and restarts share the count."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditRow(Base):
    """Who did what to which pet or user, and when. ``actor`` is the name as it was (kept when
    the account is removed)."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(120))
    detail: Mapped[str] = mapped_column(String(600))


# The name of the user behind the current request, set by the authentication layer for each
# request (Starlette copies the context into the worker thread that runs a sync route), so the
# catalog's writes record their actor without every route passing it along.
current_actor: contextvars.ContextVar[str] = contextvars.ContextVar("transferlab_actor", default="")


def audit_row(action: str, target: str, detail: str = "", actor: str | None = None) -> AuditRow:
    """An audit line for the caller to add to its own transaction."""
    actor = actor if actor is not None else (current_actor.get() or "(unknown)")
    return AuditRow(at=datetime.now(timezone.utc), actor=actor[:64], action=action[:32], target=target[:120],
                    detail=detail[:600])


def init_schema(engine: Engine) -> int:
    """Create the tables on first use, migrate an older catalog, refuse one from a newer
    transferlab. Returns the version found (0 for a new catalog)."""
    with engine.execution_options(write=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_INIT_LOCK})
        tables = set(inspect(conn).get_table_names())
        if "schema_version" not in tables:
            if tables & {"pets", "photos"}:
                raise ServeError("the database has pets/photos tables but no schema_version: not a transferlab catalog")
            Base.metadata.create_all(conn)
            conn.execute(SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION))
            return 0
        found = conn.scalar(select(func.max(SchemaVersion.version))) or 0
        if found > SCHEMA_VERSION:
            raise ServeError(f"the catalog has schema version {found}, newer than this transferlab understands "
                             f"({SCHEMA_VERSION}): upgrade transferlab")
        if found < SCHEMA_VERSION:
            _migrate(conn, found)
        return found


def _migrate(conn: Connection, found: int) -> None:
    """Bring a catalog from ``found`` to SCHEMA_VERSION inside the caller's transaction."""
    if found < 2:  # 1 -> 2: the account tables are new; nothing existing changes
        Base.metadata.create_all(conn, tables=[t.__table__ for t in (UserRow, CredentialRow, LoginFailureRow,
                                                                      AuditRow)])
    conn.execute(update(SchemaVersion).values(version=SCHEMA_VERSION))


def schema_version(conn: Connection) -> int:
    """The version a catalog is at (0 when it has no schema_version table)."""
    if "schema_version" not in set(inspect(conn).get_table_names()):
        return 0
    return conn.scalar(select(func.max(SchemaVersion.version))) or 0
