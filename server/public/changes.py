"""When to rebuild the snapshot: a row in ``public_changes`` per transaction that changed
published data, and a rebuild at least every ``[public] refresh_minutes``.

The ORM records the changes: an ``after_flush`` hook for objects, a ``do_orm_execute``
hook for bulk UPDATE/DELETE/INSERT statements run through a session. Rows written
around the ORM (PostgreSQL COPY in ``bulk_insert``, raw SQL) are caught by the periodic
rebuild instead.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import event, exists, insert, select
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from server.cases.models import CaseEvent, Household, Member
from server.cases.objection_models import Objection
from server.clock import utcnow
from server.extensions import db
from server.payments.models import PaymentMonth
from server.proof_of_life.models import ProofOfLifeMonth
from server.public import snapshot as builder
from server.public.models import PublicChange, PublicSnapshot
from server.public.snapshot import STALE_BUILD
from server.region import region
from server.transactions import commits_per_batch

logger = logging.getLogger(__name__)

WATCHED = (Household, Member, CaseEvent, ProofOfLifeMonth, PaymentMonth, Objection)
WATCHED_TABLES = frozenset(model.__tablename__ for model in WATCHED)
_FLAG = "dibao.public_changed"
_build_lock = threading.Lock()


class Ready(NamedTuple):
    id: int
    finished_at: datetime | None
    source_mark: int


def _record(session: Session) -> None:
    if session.info.get(_FLAG):
        return
    session.info[_FLAG] = True
    session.connection().execute(insert(PublicChange).values(at=utcnow()))


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, flush_context: Any) -> None:
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, WATCHED):
            _record(session)
            return


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in WATCHED_TABLES:
        _record(state.session)


@event.listens_for(Session, "after_transaction_end")
def _transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # Any end, savepoints included: a rolled-back savepoint may have taken the row with
    # it; at worst a transaction records two rows.
    session.info.pop(_FLAG, None)


def current_ready() -> Ready | None:
    """The newest ready snapshot's id, finish time and change mark (not its stats)."""
    row = db.session.execute(
        select(PublicSnapshot.id, PublicSnapshot.finished_at, PublicSnapshot.source_mark)
        .where(PublicSnapshot.state == "ready")
        .order_by(PublicSnapshot.id.desc())
        .limit(1)
    ).first()
    return Ready(row.id, row.finished_at, row.source_mark) if row else None


def is_stale(snapshot: Ready | None) -> bool:
    """No snapshot yet, a change recorded after it started, or older than refresh_minutes."""
    if snapshot is None or snapshot.finished_at is None:
        return True
    if snapshot.finished_at < utcnow() - timedelta(minutes=region().public.refresh_minutes):
        return True
    newer = db.session.scalar(select(exists().where(PublicChange.id > snapshot.source_mark)))
    return bool(newer)


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


@commits_per_batch
def refresh(*, force: bool = False) -> PublicSnapshot | None:
    """Rebuild when stale (or ``force``); None when nothing was built."""
    with _build_lock:
        if not force:
            if not is_stale(current_ready()):
                return None
            if _building_elsewhere():
                logger.info("public snapshot: another build is running")
                return None
        started = builder.start()
        try:
            return builder.build(started)
        except BaseException:
            db.session.rollback()
            builder.abandon(started.id)
            raise


def refresh_inline_if_stale() -> None:
    """The embedded default (no Celery broker): a page view rebuilds a stale snapshot
    itself. With a broker the beat task does it (``server.public.tasks``)."""
    if current_app.config["DIBAO_PUBLIC_REFRESH"] != "inline":
        return
    if is_stale(current_ready()):
        refresh()
