"""The audit log: who created, edited or deleted which pet, and every change to the accounts.

Pet changes are written by :class:`.db.Catalog` in the same transaction as the change (see
:func:`.schema.audit_row`); this module adds the account changes and reads the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .db import _utc
from .schema import AuditRow, audit_row, current_actor

__all__ = ["AuditEntry", "AuditLog", "current_actor"]


@dataclass
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


class AuditLog:
    def __init__(self, engine: Engine):
        self._writer = engine.execution_options(write=True)
        self.engine = engine

    def record(self, action: str, target: str, detail: str = "", actor: str | None = None) -> None:
        with Session(self._writer) as s, s.begin():
            s.add(audit_row(action, target, detail, actor))

    def entries(self, limit: int = 200, offset: int = 0) -> list[AuditEntry]:
        """Newest first."""
        q = select(AuditRow).order_by(AuditRow.at.desc(), AuditRow.id.desc()).offset(offset).limit(limit)
        with Session(self.engine) as s:
            return [AuditEntry(r.id, _utc(r.at), r.actor, r.action, r.target, r.detail) for r in s.scalars(q).all()]

    def count(self) -> int:
        with Session(self.engine) as s:
            return s.scalar(select(func.count(AuditRow.id))) or 0
