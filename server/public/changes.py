"""Keep the public snapshot current: which cases changed (``public_dirty``), absorbing
them in place (``server.public.incremental``), and a full build when that cannot be
done or after ``[public] rebuild_hours``.

The ORM records the changed cases: an ``after_flush`` hook for objects (the household
of each changed case, member, event, proof-of-life month, payment month, objection; the
village a case left; a deleted case's code), a ``do_orm_execute`` hook for bulk
statements run through a session (the households of an INSERT's rows; a full build
for a bulk UPDATE or DELETE, whose cases are not known), ``bulk_insert``'s COPY path
through ``server.extensions.BULK_INSERT_LISTENERS`` and ``write_as_loaded``'s rows
through ``WRITE_LISTENERS`` (their public_dirty rows go in with them, in the same
statement). Writers around all of these (the seeder's COPY) ask for a full build with
``full_build_needed()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import delete, event, exists, func, insert, inspect, select
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from server.cases.models import CaseEvent, Household, Member
from server.cases.objection_models import Objection
from server.clock import utcnow
from server.extensions import BULK_INSERT_LISTENERS, WRITE_LISTENERS, db
from server.months import current_month
from server.payments.models import PaymentMonth
from server.proof_of_life.models import ProofOfLifeMonth
from server.public import incremental
from server.public import snapshot as builder
from server.public.models import PublicDirty, PublicSnapshot
from server.public.snapshot import STALE_BUILD
from server.region import region
from server.transactions import commits_per_batch

logger = logging.getLogger(__name__)

WATCHED = (Household, Member, CaseEvent, ProofOfLifeMonth, PaymentMonth, Objection)
WATCHED_TABLES = frozenset(model.__tablename__ for model in WATCHED)
# A bulk INSERT of more cases than this asks for a full build instead of naming them.
MANY = 10_000
# More changed cases than this share of all cases: a full build is cheaper.
FULL_BUILD_SHARE = 0.05
FEW = 1000  # ...but this many are always absorbed
# The PostgreSQL advisory lock that absorbs and full builds take (one at a time).
LOCK_KEY = 0x64696261  # "diba"
_build_lock = threading.Lock()
_FULL = "dibao.public_full_build"  # session.info: this transaction asked for one


class Ready(NamedTuple):
    id: int
    finished_at: datetime | None
    source_mark: int


def _household_ids(instance: Any, deleted: bool) -> Iterable[dict[str, Any]]:
    """The public_dirty rows a flushed object asks for."""
    state = inspect(instance)
    if isinstance(instance, Household):
        yield {"household_id": instance.id}
        if deleted:
            yield {"case_code": instance.case_code, "village_id": instance.village_id}
        for old in state.attrs.village_id.history.deleted or ():
            if old is not None:
                yield {"village_id": old}
        return
    if instance.household_id is not None:
        yield {"household_id": instance.household_id}
    for old in state.attrs.household_id.history.deleted or ():
        if old is not None:
            yield {"household_id": old}


def _dirty_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The public_dirty rows naming these cases (each once), every column given."""
    at = utcnow()
    unique = {tuple(sorted(row.items())): row for row in rows}
    return [
        {"household_id": None, "village_id": None, "case_code": None, **row, "at": at}
        for row in unique.values()
    ]


def _record(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    if session.info.get(_FULL):
        return  # this transaction already asked for a full build
    dirty = _dirty_rows(rows)
    if dirty:
        session.connection().execute(insert(PublicDirty), dirty)


def _full_build_row(session: Session) -> None:
    if session.info.get(_FULL):
        return
    session.connection().execute(insert(PublicDirty).values(at=utcnow()))
    session.info[_FULL] = True


@event.listens_for(Session, "after_transaction_end")
def _transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # Any end, savepoints included: a rolled-back savepoint may have taken the row with
    # it; at worst a transaction asks twice.
    session.info.pop(_FULL, None)


def _inserted(table: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The rows naming the cases of an INSERT into a watched table; None when they are
    not known (new households) or too many."""
    if getattr(table, "name", None) == Household.__tablename__ or len(rows) > MANY:
        return None
    if any("household_id" not in row for row in rows):
        return None
    return [{"household_id": row["household_id"]} for row in rows]


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context: Any) -> None:
    deleted = set(map(id, session.deleted))
    rows = [
        row
        for instance in (*session.new, *session.dirty, *session.deleted)
        if isinstance(instance, WATCHED)
        for row in _household_ids(instance, id(instance) in deleted)
    ]
    _record(session, rows)


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) not in WATCHED_TABLES:
        return
    parameters = state.parameters
    if state.is_insert and parameters:
        many: list[Any] = parameters if isinstance(parameters, list) else [parameters]
        named = _inserted(table, [dict(p) for p in many])
        if named is not None:
            _record(state.session, named)
            return
    _full_build_row(state.session)


def _bulk_inserted(table: Any, rows: list[dict[str, Any]]) -> None:
    if table.name not in WATCHED_TABLES:
        return
    named = _inserted(table, rows)
    if named is None:
        _full_build_row(db.session())
    else:
        _record(db.session(), named)


BULK_INSERT_LISTENERS.append(_bulk_inserted)


def _written(
    inserts: list[tuple[Any, list[dict[str, Any]]]], updates: list[tuple[Any, dict[str, Any]]]
) -> list[tuple[Any, list[dict[str, Any]]]]:
    """The public_dirty rows for what ``write_as_loaded`` writes, to go in with it: the
    cases of rows inserted into a watched table and of households updated; a full build
    when they are not known (new households, a case moved to another village, another
    watched table's row updated)."""
    session = db.session()
    if session.info.get(_FULL):
        return []
    named: list[dict[str, Any]] = []
    for table, rows in inserts:
        if table.name in WATCHED_TABLES:
            cases = _inserted(table, rows)
            if cases is None:
                return _full_build_rows(session)
            named += cases
    for table, row in updates:
        if table.name == Household.__tablename__ and "village_id" not in row:
            named.append({"household_id": row["id"]})
        elif table.name in WATCHED_TABLES:
            return _full_build_rows(session)
    dirty = _dirty_rows(named)
    return [(PublicDirty.__table__, dirty)] if dirty else []


def _full_build_rows(session: Session) -> list[tuple[Any, list[dict[str, Any]]]]:
    session.info[_FULL] = True
    return [(PublicDirty.__table__, _dirty_rows([{}]))]


WRITE_LISTENERS.append(_written)


def full_build_needed() -> None:
    """Ask for a full build at the next refresh (for writes around the ORM)."""
    _full_build_row(db.session())


def current_ready() -> Ready | None:
    """The newest ready snapshot's id, finish time and change mark (not its stats)."""
    row = db.session.execute(
        select(PublicSnapshot.id, PublicSnapshot.finished_at, PublicSnapshot.source_mark)
        .where(PublicSnapshot.state == "ready")
        .order_by(PublicSnapshot.id.desc())
        .limit(1)
    ).first()
    return Ready(row.id, row.finished_at, row.source_mark) if row else None


def _full_build_due(snapshot: Ready) -> bool:
    """Older than ``[public] rebuild_hours``, or built in another month (the figures
    cover the last twelve months and this year)."""
    if snapshot.finished_at is None:
        return True
    now = utcnow()
    if snapshot.finished_at < now - timedelta(hours=region().public.rebuild_hours):
        return True
    zone = region().timezone
    return current_month(snapshot.finished_at, zone) != current_month(now, zone)


def is_stale(snapshot: Ready | None) -> bool:
    """No snapshot yet, a change recorded and not absorbed, or a full build due."""
    if snapshot is None or _full_build_due(snapshot):
        return True
    return bool(db.session.scalar(select(exists().where(PublicDirty.id > 0))))


def _building_elsewhere() -> bool:
    return bool(
        db.session.scalar(
            select(
                exists().where(
                    PublicSnapshot.state == "building",
                    PublicSnapshot.started_at > utcnow() - STALE_BUILD,
                )
            )
        )
    )


def _postgresql() -> bool:
    return db.engine.dialect.name == "postgresql"


@contextmanager
def _held_for_build() -> Any:
    """On PostgreSQL, the advisory lock for the whole of a full build, on a connection
    of its own (the build commits per batch): absorbs skip meanwhile."""
    if not _postgresql():
        yield
        return
    with db.engine.connect() as connection:
        connection.execute(select(func.pg_advisory_lock(LOCK_KEY)))
        connection.commit()
        try:
            yield
        finally:
            connection.execute(select(func.pg_advisory_unlock(LOCK_KEY)))
            connection.commit()


@commits_per_batch
def _full_build() -> PublicSnapshot | None:
    if _building_elsewhere():
        logger.info("public snapshot: another build is running")
        return None
    with _held_for_build():
        started = builder.start()
        try:
            return builder.build(started)
        except BaseException:
            db.session.rollback()
            builder.abandon(started.id)
            raise


@commits_per_batch
def refresh(*, force: bool = False) -> PublicSnapshot | None:
    """A full build when ``force``; otherwise absorb the recorded changes (a full build
    when due or when they cannot be absorbed). None when nothing was done."""
    with _build_lock:
        if force:
            started = builder.start()
            with _held_for_build():
                try:
                    return builder.build(started)
                except BaseException:
                    db.session.rollback()
                    builder.abandon(started.id)
                    raise
        return _absorb()


def absorb() -> PublicSnapshot | None:
    """Absorb the recorded changes into the current snapshot in place; a full build when
    there is none yet, one is due, or the changes need one. None when nothing was done
    (nothing changed, or another process is absorbing or building)."""
    return refresh()


@commits_per_batch
def _absorb() -> PublicSnapshot | None:
    ready = current_ready()
    if ready is None or _full_build_due(ready):
        return _full_build()
    if _building_elsewhere():
        return None
    pending, unknown = db.session.execute(
        select(func.count(), func.count().filter(_unknown())).select_from(PublicDirty)
    ).one()
    db.session.rollback()  # SQLite: the claim below must open the transaction
    if not pending:
        return None
    snapshot = db.session.get(PublicSnapshot, ready.id)
    if snapshot is None:
        return None
    if unknown or pending > max(FULL_BUILD_SHARE * (snapshot.cases + snapshot.withheld), FEW):
        db.session.rollback()
        return _full_build()
    db.session.rollback()
    if _postgresql():
        locked = db.session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY)))
        if not locked:
            db.session.rollback()
            return None
    claimed = db.session.execute(
        delete(PublicDirty).returning(
            PublicDirty.household_id, PublicDirty.village_id, PublicDirty.case_code
        )
    ).all()
    snapshot = db.session.get(PublicSnapshot, ready.id)
    if snapshot is None or snapshot.state != "ready" or not claimed:
        db.session.rollback()
        return None
    households = {row.household_id for row in claimed if row.household_id is not None}
    villages = {row.village_id for row in claimed if row.village_id is not None}
    codes = {row.case_code for row in claimed if row.case_code is not None}
    try:
        if any(r.household_id is None and r.village_id is None for r in claimed):
            raise incremental.FullBuildNeeded("a bulk change of unknown cases")
        rules = region().public
        done = incremental.apply(
            snapshot,
            households=households,
            villages=villages,
            deleted_codes=codes,
            rules=rules,
            zone=ZoneInfo(region().timezone),
        )
    except incremental.FullBuildNeeded as reason:
        db.session.rollback()
        logger.info("public snapshot: full build (%s)", reason)
        return _full_build()
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()
    logger.info(
        "public snapshot %s: %d changed cases absorbed, %d groups regrouped, %d cases "
        "recomputed, %d rows written",
        snapshot.id,
        done.changed_cases,
        done.groups,
        done.recomputed,
        done.rows_written,
    )
    _drop_previous(snapshot)
    return snapshot


def _unknown() -> Any:
    return PublicDirty.household_id.is_(None) & PublicDirty.village_id.is_(None)


@commits_per_batch
def _drop_previous(current: PublicSnapshot) -> None:
    """The snapshot before the current one stays while requests may still read it; the
    first absorb more than a few minutes after the full build drops it (one copy)."""
    if current.finished_at is None or current.finished_at > utcnow() - timedelta(minutes=5):
        return
    older = db.session.scalars(
        select(PublicSnapshot.id).where(PublicSnapshot.id < current.id)
    ).all()
    for snapshot_id in older:
        builder.abandon(snapshot_id)


def refresh_inline_if_stale() -> None:
    """The embedded default (no Celery broker): a page view absorbs pending changes
    itself (a full build when none exists or one is due). With a broker the beat task
    does it every few seconds (``server.public.tasks``)."""
    if current_app.config["DIBAO_PUBLIC_REFRESH"] != "inline":
        return
    if is_stale(current_ready()):
        refresh()
