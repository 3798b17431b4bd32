"""Writing the audit log. Functions add rows to the session; the caller commits
with the unit of work they belong to.
"""

from __future__ import annotations

from typing import Any, Protocol

from flask import has_request_context, request
from sqlalchemy import event
from sqlalchemy.orm import Session

from server.audit.models import AuditEntry
from server.extensions import db


class Actor(Protocol):
    """Who did it (a user): the audit log needs only the id, so it depends on no
    account model (auth records its own events here)."""

    @property
    def id(self) -> int: ...


def record(
    action: str,
    *,
    actor: Actor | None,
    object_type: str | None = None,
    object_id: object = None,
    **details: Any,
) -> AuditEntry:
    """Append one audit row. ``details`` must never hold personal data itself."""
    row = entry(action, actor=actor, object_type=object_type, object_id=object_id, **details)
    db.session.add(row)
    return row


def entry(
    action: str,
    *,
    actor: Actor | None,
    object_type: str | None = None,
    object_id: object = None,
    **details: Any,
) -> AuditEntry:
    """The audit row :func:`record` appends, not yet in the session: for a caller that
    writes it with its other rows (server.extensions.write_as_loaded)."""
    return AuditEntry(
        action=action,
        actor_id=actor.id if actor is not None else None,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        remote_addr=request.remote_addr if has_request_context() else None,
        details=details,
    )


class AuditLogIsAppendOnly(RuntimeError):
    pass


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, flush_context: object, instances: object) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry):
            raise AuditLogIsAppendOnly("audit log rows cannot be changed or deleted")
