"""server.extensions.insert_as_loaded: new objects written with one INSERT and kept as
the session's persistent objects, as a flush would have left them."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Table, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.audit.models import AuditEntry
from server.extensions import db, insert_as_loaded
from tests.conftest import QueryCounter


def test_objects_are_written_once_and_persistent_with_their_defaults(
    app: Flask, count_queries: QueryCounter
) -> None:
    with app.app_context():
        first = AuditEntry(action="test.first", object_type="thing", details={"n": 1})
        second = AuditEntry(action="test.second")
        db.session.execute(select(1))  # the transaction (and the test's savepoint) begun
        before = count_queries.count
        written = insert_as_loaded([first, second])
        # One statement for both on PostgreSQL; SQLite returns ids in the rows' order
        # only one row at a time.
        postgres = db.session().get_bind().dialect.name == "postgresql"
        assert count_queries.count - before == (1 if postgres else 2)
        assert written == [first, second]
        assert first.id is not None and second.id is not None and first.id < second.id
        for entry in written:
            state = inspect(entry)
            assert state.persistent and not state.modified
        assert not db.session.new and not db.session.dirty
        # The columns' Python defaults, as a flush would have set them.
        assert second.details == {} and second.at is not None
        assert first.remote_addr is None
        # Every column is known: reading them, and a flush, send nothing.
        before = count_queries.count
        assert (first.action, first.object_type, first.details) == ("test.first", "thing", {"n": 1})
        db.session.flush()
        assert count_queries.count == before
        # What the database holds is what the objects say.
        db.session.expire_all()
        rows = db.session.execute(
            select(AuditEntry.action, AuditEntry.details, AuditEntry.at)
            .where(AuditEntry.id.in_([first.id, second.id]))
            .order_by(AuditEntry.id)
        ).all()
        assert [(r.action, r.details) for r in rows] == [
            ("test.first", {"n": 1}),
            ("test.second", {}),
        ]
        assert all(r.at is not None for r in rows)


def test_a_change_after_the_insert_is_flushed_as_an_update(app: Flask) -> None:
    with app.app_context():
        entry = AuditEntry(action="test.changed", object_type="before")
        insert_as_loaded([entry])
        entry.object_type = "after"
        assert inspect(entry).modified
        # The audit log refuses changes: proof that the object is tracked as persistent.
        from server.audit.service import AuditLogIsAppendOnly

        with pytest.raises(AuditLogIsAppendOnly):
            db.session.flush()


def _conflicting_insert() -> Any:
    table = AuditEntry.__table__
    assert isinstance(table, Table)
    dialect = db.session().get_bind().dialect.name
    build = sqlite_insert if dialect == "sqlite" else pg_insert
    # Any row conflicts on the primary key once its id is given.
    return build(table).on_conflict_do_nothing(index_elements=[table.c.id]).returning(table.c.id)


def test_a_callers_statement_that_writes_nothing_leaves_the_object_new(app: Flask) -> None:
    with app.app_context():
        written = insert_as_loaded([AuditEntry(action="test.kept")], _conflicting_insert())
        assert len(written) == 1
        taken = written[0].id
        clash = AuditEntry(action="test.clash")
        statement = _conflicting_insert().values(id=taken)
        assert insert_as_loaded([clash], statement) == []
        assert inspect(clash).transient and clash.id is None
        assert db.session.get(AuditEntry, taken).action == "test.kept"
        with pytest.raises(ValueError, match="one object"):
            insert_as_loaded([AuditEntry(action="a"), AuditEntry(action="b")], statement)
