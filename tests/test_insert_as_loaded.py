"""server.extensions.insert_as_loaded and write_as_loaded: new objects (and changes to
loaded ones) written without the unit of work and kept in the session as a flush would
have left them."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Table, func, inspect, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from server.audit import service as audit
from server.audit.models import AuditEntry
from server.cases.models import CaseEvent, CaseState, Household
from server.cases.workflow import review_rows
from server.extensions import db, insert_as_loaded, write_as_loaded
from server.public.models import PublicDirty
from tests import factories
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


# ---------------------------------------------------------------- write_as_loaded


def _review_of(household: Household, day: date) -> tuple[list[Any], dict[str, Any]]:
    """A visit's review rows: a case event, two audit rows and the review dates."""
    rows = review_rows(
        household,
        day + timedelta(days=180),
        actor=factories.user("caseworker_a"),
        action="periodic_review",
        reason="visit test",
        reviewed_on=day,
    )
    received = audit.entry(
        "survey.received",
        actor=factories.user("caseworker_a"),
        object_type="survey",
        object_id=7,
        household_id=household.id,
    )
    return [*rows.new, received], rows.household


def _written_rows(household: Household) -> dict[str, Any]:
    """What the database holds for the household's review, ids and times left out."""
    db.session.expire_all()
    fresh = db.session.get(Household, household.id)
    assert fresh is not None
    events = db.session.scalars(
        select(CaseEvent).where(CaseEvent.household_id == household.id).order_by(CaseEvent.id)
    ).all()
    # The audit rows, the household's id in them written as "self".
    entries = db.session.scalars(
        select(AuditEntry).where(
            or_(
                (AuditEntry.action == "survey.received")
                & (AuditEntry.details["household_id"].as_integer() == household.id),
                (AuditEntry.action == "case.periodic_review")
                & (AuditEntry.object_id == str(household.id)),
            )
        )
    ).all()
    for entry in entries:
        db.session.expunge(entry)
        entry.details = {
            key: "self" if key == "household_id" and value == household.id else value
            for key, value in entry.details.items()
        }
    dirty = db.session.scalars(
        select(PublicDirty.household_id).where(PublicDirty.household_id == household.id)
    ).all()
    return {
        "review": (fresh.next_review_on, fresh.last_reviewed_on),
        "events": [(e.action, e.from_state, e.to_state, e.reason, e.actor_id) for e in events][-1:],
        "audit": sorted(
            (a.action, a.object_type, a.actor_id, a.remote_addr, sorted(a.details.items()))
            for a in entries
        ),
        "dirty": sorted(set(dirty)),
    }


def test_one_statement_leaves_the_rows_and_the_session_a_flush_would(
    app: Flask, count_queries: QueryCounter
) -> None:
    with app.app_context():
        day = date(2026, 11, 20)
        by_flush = factories.make_household(state=CaseState.APPROVED)
        by_write = factories.make_household(state=CaseState.APPROVED)
        db.session.flush()
        db.session.execute(select(PublicDirty.id).limit(1))  # the transaction begun

        new, columns = _review_of(by_flush, day)
        db.session.add_all(new)
        for key, value in columns.items():
            setattr(by_flush, key, value)
        db.session.flush()

        new, columns = _review_of(by_write, day)
        before = count_queries.count
        write_as_loaded(new, [(by_write, columns)])
        postgres = db.session().get_bind().dialect.name == "postgresql"
        # PostgreSQL: the case event, both audit rows, the household's dates and the
        # case's public_dirty row in one statement. SQLite: a statement a row.
        assert count_queries.count - before == (1 if postgres else 5)
        # The session holds them as a flush would: persistent, nothing left to write.
        for obj in new:
            state = inspect(obj)
            assert state.persistent and not state.modified and obj.id is not None
        assert not db.session.new and not db.session.dirty
        assert (by_write.next_review_on, by_write.last_reviewed_on) == (
            day + timedelta(days=180),
            day,
        )
        assert new[1].id < new[2].id  # the ids in the objects' order
        before = count_queries.count
        db.session.flush()
        assert count_queries.count == before

        written, flushed = _written_rows(by_write), _written_rows(by_flush)
        assert written["dirty"] == [by_write.id]
        assert flushed["dirty"] == [by_flush.id]
        for part in ("review", "events", "audit"):
            assert written[part] == flushed[part], part
        assert written["events"] and len(written["audit"]) == 2


def test_several_rows_of_a_table_get_their_own_ids(app: Flask) -> None:
    with app.app_context():
        dirty = db.session.scalar(select(func.count()).select_from(PublicDirty))
        entries = [AuditEntry(action=f"test.row{n}", details={"n": n}) for n in range(5)]
        write_as_loaded(entries)
        assert [e.id for e in entries] == sorted(e.id for e in entries)
        db.session.expire_all()
        for n, entry in enumerate(entries):
            stored = db.session.get(AuditEntry, entry.id)
            assert stored is not None and stored.details == {"n": n}
        # Rows of a table outside the public page name no case to refresh.
        assert db.session.scalar(select(func.count()).select_from(PublicDirty)) == dirty


def test_a_write_it_cannot_do_is_refused_before_anything_is_written(app: Flask) -> None:
    with app.app_context():
        household = factories.make_household(state=CaseState.APPROVED)
        entry = AuditEntry(action="test.refused")
        with pytest.raises(ValueError, match="no column"):
            write_as_loaded([entry], [(household, {"no_such_column": 1})])
        with pytest.raises(ValueError, match="no column"):
            write_as_loaded([entry], [(household, {"id": 5})])
        with pytest.raises(ValueError, match="not persistent"):
            write_as_loaded([entry], [(Household(), {"next_review_on": date(2027, 1, 1)})])
        assert inspect(entry).transient and entry.id is None
        assert not db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == "test.refused")
        ).all()


def test_an_update_that_finds_no_row_fails_the_write(app: Flask) -> None:
    with app.app_context():
        household = factories.make_household(state=CaseState.APPROVED)
        gone = Household()
        gone.id = household.id + 10_000
        with pytest.raises(RuntimeError, match="0 rows updated"), db.session.begin_nested():
            write_as_loaded([], [(gone, {"next_review_on": date(2027, 1, 1)})])


def test_a_households_move_to_another_village_asks_for_a_full_build(app: Flask) -> None:
    with app.app_context():
        household = factories.make_household(state=CaseState.APPROVED)
        db.session.flush()
        full_builds = (
            select(func.count())
            .select_from(PublicDirty)
            .where(
                PublicDirty.household_id.is_(None),
                PublicDirty.village_id.is_(None),
                PublicDirty.case_code.is_(None),
            )
        )
        before = db.session.scalar(full_builds)
        other = factories.areas().village_b
        write_as_loaded([], [(household, {"village_id": other.id})])
        assert household.village_id == other.id
        # A row naming no case: the next refresh builds everything.
        assert db.session.scalar(full_builds) == before + 1


def test_nothing_to_write_sends_nothing(app: Flask, count_queries: QueryCounter) -> None:
    with app.app_context():
        db.session.execute(select(1))
        before = count_queries.count
        write_as_loaded([], [])
        assert count_queries.count == before


def test_a_listeners_rows_are_bound_by_column_name(app: Flask) -> None:
    """A listener's rows may list their columns in any order; each value goes to its
    own column."""
    from server.clock import utcnow
    from server.extensions import WRITE_LISTENERS

    at = utcnow()
    table = PublicDirty.__table__
    asked = [
        {"household_id": None, "village_id": None, "case_code": "T-0001", "at": at},
        {"at": at, "case_code": "T-0002", "village_id": None, "household_id": None},
    ]

    def listener(inserts: Any, updates: Any) -> Any:
        return [(table, asked)]

    with app.app_context():
        WRITE_LISTENERS.append(listener)
        try:
            write_as_loaded([AuditEntry(action="test.listener")])
        finally:
            WRITE_LISTENERS.remove(listener)
        stored = db.session.execute(
            select(PublicDirty.case_code, PublicDirty.household_id, PublicDirty.at)
            .where(PublicDirty.case_code.like("T-%"))
            .order_by(PublicDirty.case_code)
        ).all()
        assert [(row.case_code, row.household_id) for row in stored] == [
            ("T-0001", None),
            ("T-0002", None),
        ]
        assert all(row.at is not None for row in stored)
