"""The audit log: written for state changes, logins and reads; never changed."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from server.audit import service as audit
from server.audit.models import AuditEntry
from server.audit.service import AuditLogIsAppendOnly
from server.extensions import db
from tests import factories
from tests.conftest import login


def test_the_database_refuses_to_update_or_delete_audit_rows(app: object) -> None:
    entry = audit.record("test.event", actor=None, object_type="thing", object_id=1)
    db.session.flush()
    for statement in (
        "UPDATE audit_log SET action = 'forged' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
    ):
        nested = db.session.begin_nested()
        with pytest.raises(DatabaseError, match="append-only"):
            db.session.execute(text(statement), {"id": entry.id})
        nested.rollback()
    assert (
        db.session.scalar(text("SELECT action FROM audit_log WHERE id = :id"), {"id": entry.id})
        == "test.event"
    )


def test_the_application_refuses_to_change_an_audit_row(app: object) -> None:
    entry = audit.record("test.event", actor=None)
    db.session.flush()
    entry.action = "forged"
    with pytest.raises(AuditLogIsAppendOnly):
        db.session.flush()


@pytest.mark.slow
def test_logins_are_audited_whether_they_succeed_or_fail(client: object, app: object) -> None:
    assert login(client, "reviewer_a", "wrong password").status_code == 401
    assert login(client, "nobody", "wrong password").status_code == 401
    assert login(client, "reviewer_a").status_code == 302
    reviewer = factories.user("reviewer_a")
    actions = db.session.execute(
        select(AuditEntry.action, AuditEntry.actor_id)
        .where(AuditEntry.action.like("auth.%"))
        .order_by(AuditEntry.id)
    ).all()
    assert actions == [
        ("auth.login_failed", reviewer.id),
        ("auth.login_failed", None),
        ("auth.login", reviewer.id),
    ]
