"""The audit log of operators' actions (admin API, dashboard, CLI): every change is one entry.

Beside the database layer, below the domains and the job faces that write to it.
"""

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, mapped_column

from rideshare.db import Base, get_db, utcnow

log = logging.getLogger("rideshare.admin")


class AuditEntry(Base):
    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def audit(actor: str, action: str, target: str, **details: Any) -> None:
    """Write one operator's action to the audit log."""
    with get_db().session() as session:
        session.add(AuditEntry(actor=actor, action=action, target=target, details=details))
    log.info("admin.action", extra={"actor": actor, "action": action, "target": target})


def audit_entries(limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
    """Newest audit entries first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    with get_db().session() as session:
        return list(session.scalars(query))
