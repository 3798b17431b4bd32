"""The monthly cycle: open (the 20th), remind (the follow-up day), close (the end of the
window); the back-pay of a month passed late is ``server.payments.service.settle``.

Each step works in batches of members, commits each batch, and only does what is still
missing, so a second run does nothing new and a run after a crash finishes the job:

- ``open_month``: every member who must prove life (``who_must_prove_life``) gets the
  month's record (pending, with its link), and those pending are told (a reminder);
- ``remind``: members still pending are told again (the follow-up);
- ``close``: what was not told yet is dropped, pending -> missed, payments suspended
  (``server.payments``).

Telling is the notifier's job (``server.monthly.notices``): these steps decide who must
be told what, and when.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import (
    ColumnElement,
    Connection,
    LargeBinary,
    Text,
    cast,
    column,
    func,
    literal,
    select,
    table,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import StatementError

from server.cases.models import Household, Member
from server.extensions import bulk_insert, db
from server.monthly.models import CampaignStep
from server.monthly.notices import Notice, NoticeKind, Told, notifier
from server.months import current_month, local_moment, month_after, parse_month, window
from server.payments import service as payments
from server.payments.models import PaymentMonth
from server.proof_of_life import links
from server.proof_of_life.models import (
    IN_CARE,
    ContactTask,
    MonthStatus,
    ProofOfLifeMonth,
    who_must_prove_life,
)
from server.region import local_iso, region
from server.transactions import commits_per_batch
from server.types import EncryptedText, field_cipher

BATCH = 1000
Progress = Callable[[int], None]


class CampaignError(ValueError):
    """A step asked for at the wrong time (the message says when it can run)."""


@dataclass
class StepReport:
    members: int = 0
    queued: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # already done by an earlier run, or the month already settled

    def merge(self, other: StepReport) -> None:
        """Add another range's counts."""
        self.members += other.members
        self.queued += other.queued
        self.skipped += other.skipped
        for reason, count in other.tasks.items():
            self.tasks[reason] = self.tasks.get(reason, 0) + count

    def add(self, told: Told) -> None:
        self.queued += told.queued
        self.skipped += told.already
        for reason, count in told.tasks.items():
            self.tasks[reason] = self.tasks.get(reason, 0) + count


@dataclass(frozen=True)
class Moments:
    opens: datetime
    follow_up: datetime
    closes: datetime


def moments(month: str) -> Moments:
    """When the month's window opens, when the follow-up is due, when the window closes."""
    rules = region()
    opens, closes = window(month, rules.proof_of_life, rules.timezone)
    follow_up = local_moment(
        month, rules.campaign.follow_up_day, rules.timezone, rules.campaign.send_from_hour
    )
    return Moments(opens, follow_up, closes)


def month_or_current(month: str | None, *, now: datetime) -> str:
    """``month`` checked (ValueError), or the region's current month at ``now``."""
    chosen = month or current_month(now, region().timezone)
    parse_month(chosen)
    return chosen


@commits_per_batch
@contextmanager
def _step(month: str, name: str, now: datetime) -> Iterator[dict[str, Any]]:
    """Record a step's runs; ``finished_at`` is set only when a run completes."""
    step = db.session.scalar(
        select(CampaignStep).where(CampaignStep.month == month, CampaignStep.step == name)
    )
    if step is None:
        step = CampaignStep(month=month, step=name, started_at=now, runs=0, counts="{}")
        db.session.add(step)
    step.runs += 1
    db.session.commit()
    step_id = step.id
    counts: dict[str, Any] = {}
    yield counts
    step = db.session.get_one(CampaignStep, step_id)
    step.finished_at = now
    step.counts = json.dumps(counts, sort_keys=True)
    db.session.commit()


def _batches(query: Any, key: Any) -> Iterator[list[Any]]:
    """Keyset pagination over ``query`` by the integer column ``key``."""
    after = 0
    while True:
        rows = list(db.session.execute(query.where(key > after).order_by(key).limit(BATCH)))
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _require_window(month: str, now: datetime, not_before: datetime, what: str) -> None:
    """A step that runs from ``not_before`` until the window closes."""
    closes = moments(month).closes
    if now < not_before:
        raise CampaignError(f"{what} at {not_before.isoformat()}")
    if now >= closes:
        raise CampaignError(f"the {month} window closed at {closes.isoformat()}")


# --------------------------------------------------------------------------- open


@commits_per_batch
def open_month(month: str, *, now: datetime, progress: Progress | None = None) -> StepReport:
    """Create the month's records and tell the pending members (idempotent, resumable).

    On PostgreSQL the records are written set-based (:func:`open_month_by_sets`), on
    SQLite row by row (:func:`open_month_by_rows`); both leave the same rows."""
    if db.session.get_bind().dialect.name == "postgresql":
        return open_month_by_sets(month, now=now, progress=progress)
    return open_month_by_rows(month, now=now, progress=progress)


@commits_per_batch
def open_month_by_rows(
    month: str, *, now: datetime, progress: Progress | None = None
) -> StepReport:
    """:func:`open_month` row by row: the links made in Python (any database)."""
    at = moments(month)
    _require_window(month, now, at.opens, f"the {month} window opens")
    key = links.link_key(current_app.config["SECRET_KEY"])
    tell = notifier()
    report = StepReport()
    members = who_must_prove_life(Member.id, Member.household_id, Member.name, Member.phone)
    with _step(month, "open", now) as counts:
        for rows in _batches(members, Member.id):
            ids = [r[0] for r in rows]
            records = {
                member_id: (generation, status)
                for member_id, generation, status in db.session.execute(
                    select(
                        ProofOfLifeMonth.member_id,
                        ProofOfLifeMonth.link_generation,
                        ProofOfLifeMonth.status,
                    ).where(
                        # A range, not IN (1,000 ids): PostgreSQL's generic plan for a
                        # prepared IN list scanned the whole month (benchmarks/README.md).
                        ProofOfLifeMonth.member_id.between(ids[0], ids[-1]),
                        ProofOfLifeMonth.month == month,
                    )
                )
            }
            new_records, notices = [], []
            for member_id, household_id, name, phone in rows:
                report.members += 1
                generation, status = records.get(member_id, (1, MonthStatus.PENDING))
                token = links.make_token(key, member_id, month, generation)
                if member_id not in records:
                    new_records.append(
                        {
                            "member_id": member_id,
                            "household_id": household_id,
                            "month": month,
                            "status": MonthStatus.PENDING,
                            "window_closes_at": at.closes,
                            "link_generation": 1,
                            "link_hash": links.token_hash(token),
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                if status is not MonthStatus.PENDING:
                    report.skipped += 1
                    continue
                notices.append(
                    Notice(
                        NoticeKind.REMINDER,
                        member_id,
                        household_id,
                        month,
                        name,
                        phone,
                        token,
                        at.closes,
                    )
                )
            if new_records:
                bulk_insert(ProofOfLifeMonth, new_records)
            report.add(tell.tell(notices, now=now))
            db.session.commit()
            if progress is not None:
                progress(len(rows))
        counts.update(asdict(report))
    return report


# A temporary table of the open's transaction holding the HMAC pads of the link key
# (dropped at commit): the statements that make links read the key from it, so the key
# is in no statement text and no bound parameter (nothing a log of statements shows).
_PADS = table("dibao_link_pads", column("ipad", LargeBinary), column("opad", LargeBinary))
_HMAC_BLOCK = 64  # SHA-256's block size


def _load_link_pads(key: bytes) -> None:
    """HMAC(key, m) = sha256(opad || sha256(ipad || m)) (RFC 2104): the pads go into the
    temporary table by COPY (PostgreSQL only)."""
    padded = key.ljust(_HMAC_BLOCK, b"\0")
    ipad = bytes(b ^ 0x36 for b in padded)
    opad = bytes(b ^ 0x5C for b in padded)
    driver = db.session.connection().connection.driver_connection
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        # IF NOT EXISTS and TRUNCATE: a caller's outer transaction (a test's) may still
        # hold the table of an earlier range, whose "commit" was a savepoint's release.
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS dibao_link_pads (ipad bytea, opad bytea) "
            "ON COMMIT DROP"
        )
        cursor.execute("TRUNCATE dibao_link_pads")
        with cursor.copy("COPY dibao_link_pads (ipad, opad) FROM STDIN") as copy:
            copy.write_row([ipad, opad])


def _token_sql(member_id: Any, month: str, generation: Any) -> ColumnElement[str]:
    """``links.make_token`` in SQL (PostgreSQL 11+: the built-in ``sha256``), reading the
    key's pads from ``_PADS``: the same 24 characters, byte for byte."""
    message = (
        func.convert_to(cast(member_id, Text), "UTF8")
        .op("||", return_type=LargeBinary)(
            literal(b"\0" + month.encode("ascii") + b"\0", LargeBinary)
        )
        .op("||", return_type=LargeBinary)(func.convert_to(cast(generation, Text), "UTF8"))
    )
    inner = func.sha256(_PADS.c.ipad.op("||", return_type=LargeBinary)(message))
    digest = func.sha256(_PADS.c.opad.op("||", return_type=LargeBinary)(inner))
    encoded = func.encode(func.substring(digest, 1, 18), "base64")
    return func.translate(encoded, "+/", "-_", type_=Text)


def _hash_sql(token: ColumnElement[str]) -> ColumnElement[str]:
    """``links.token_hash`` in SQL."""
    return func.encode(func.sha256(func.convert_to(token, "UTF8")), "hex", type_=Text)


def cast_type(value: Any) -> EncryptedText:
    """A column type known to be EncryptedText (for its context)."""
    if not isinstance(value, EncryptedText):  # pragma: no cover - the models say so
        raise TypeError(f"{value!r} is not an encrypted column")
    return value


def set_batch() -> int:
    """Member ids per set-based statement (DIBAO_MONTH_OPEN_BATCH)."""
    return int(current_app.config.get("DIBAO_MONTH_OPEN_BATCH") or 50_000)


@commits_per_batch
def open_month_by_sets(
    month: str, *, now: datetime, progress: Progress | None = None
) -> StepReport:
    """:func:`open_month` on PostgreSQL: per range of DIBAO_MONTH_OPEN_BATCH member ids,
    one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` writes the missing records with
    their link hashes computed in SQL, then one query reads the range's pending members
    with their tokens (computed in SQL too) and the notifier is told in batches of
    BATCH. One transaction per range; memory stays that of one range."""
    at = moments(month)
    _require_window(month, now, at.opens, f"the {month} window opens")
    key = links.link_key(current_app.config["SECRET_KEY"])
    tell = notifier()
    report = StepReport()
    step = set_batch()
    bounds = db.session.execute(who_must_prove_life(func.min(Member.id), func.max(Member.id))).one()
    with _step(month, "open", now) as counts:
        if bounds[0] is not None:
            ranges = [(lo, lo + step) for lo in range(bounds[0] - 1, bounds[1], step)]
            workers = min(open_workers(), len(ranges))
            if workers > 1 and not isinstance(db.session.get_bind(), Connection):
                _open_ranges_at_once(month, at, key, ranges, now, report, progress, workers)
            else:  # one range after the other (or a caller's own connection: a test's)
                for lo, hi in ranges:
                    _open_range(month, at, key, lo, hi, now, tell, report, progress)
                    db.session.commit()  # a range without pending members has no batch
        counts.update(asdict(report))
    return report


def open_workers() -> int:
    """Ranges opened at once on PostgreSQL (DIBAO_MONTH_OPEN_WORKERS)."""
    return int(current_app.config.get("DIBAO_MONTH_OPEN_WORKERS") or 1)


@commits_per_batch
def _open_ranges_at_once(
    month: str,
    at: Moments,
    key: bytes,
    ranges: list[tuple[int, int]],
    now: datetime,
    report: StepReport,
    progress: Progress | None,
    workers: int,
) -> None:
    """The ranges on ``workers`` threads, each range in its own app context, session
    and connection: while one range waits for PostgreSQL (the insert, the links'
    hashes, the COPY of its reminders) another decrypts, renders and encrypts in
    Python. The ranges share no row, so they do not wait for each other; a range that
    fails stops nothing already committed and the next open finishes the job (the
    first error is raised once every range has ended)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    lock = threading.Lock()

    def reported(count: int) -> None:
        if progress is not None:
            with lock:
                progress(count)

    def one(bounds: tuple[int, int]) -> StepReport:
        part = StepReport()
        with app.app_context():
            try:
                _open_range(month, at, key, bounds[0], bounds[1], now, notifier(), part, reported)
                db.session.commit()
            finally:
                db.session.remove()
        return part

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dibao-open") as pool:
        parts = [pool.submit(one, bounds) for bounds in ranges]
        wait(parts)
    for part in parts:
        report.merge(part.result())  # raises the first range's error, if any


@commits_per_batch
def _open_range(
    month: str,
    at: Moments,
    key: bytes,
    lo: int,
    hi: int,
    now: datetime,
    tell: Any,
    report: StepReport,
    progress: Progress | None,
) -> None:
    """Records and reminders of the designated members with ``lo < id <= hi`` (no
    link material in an error's message)."""
    try:
        _load_link_pads(key)
        _insert_records(month, at, lo, hi, now)
        _tell_range(month, at, lo, hi, now, tell, report, progress)
    except StatementError as exc:
        exc.hide_parameters = True
        raise


def _insert_records(month: str, at: Moments, lo: int, hi: int, now: datetime) -> None:
    """The missing records of the range, their link hashes computed in SQL."""
    in_range = (Member.id > lo, Member.id <= hi)
    token = _token_sql(Member.id, month, 1)
    new_records = (
        who_must_prove_life(
            Member.id,
            Member.household_id,
            literal(month, ProofOfLifeMonth.month.type),
            literal(MonthStatus.PENDING, ProofOfLifeMonth.status.type),
            literal(at.closes, ProofOfLifeMonth.window_closes_at.type),
            literal(1),
            _hash_sql(token),
            literal(now, ProofOfLifeMonth.created_at.type),
            literal(now, ProofOfLifeMonth.updated_at.type),
        )
        .join(_PADS, true())
        .where(*in_range)
    )
    db.session.execute(
        pg_insert(ProofOfLifeMonth)
        .from_select(
            [
                "member_id",
                "household_id",
                "month",
                "status",
                "window_closes_at",
                "link_generation",
                "link_hash",
                "created_at",
                "updated_at",
            ],
            new_records,
        )
        .on_conflict_do_nothing()
    )


@commits_per_batch
def _tell_range(
    month: str,
    at: Moments,
    lo: int,
    hi: int,
    now: datetime,
    tell: Any,
    report: StepReport,
    progress: Progress | None,
) -> None:
    """Tell the range's pending members (their tokens computed in SQL), committing per
    BATCH as the row path does."""
    in_range = (Member.id > lo, Member.id <= hi)
    # Name and phone read as stored and decrypted here with the cipher looked up once
    # (the column type would look it up for every value).
    cipher = field_cipher()
    name_context = cast_type(Member.name.type).context
    phone_context = cast_type(Member.phone.type).context
    rows = db.session.execute(
        who_must_prove_life(
            Member.id,
            Member.household_id,
            type_coerce(Member.name, LargeBinary),
            type_coerce(Member.phone, LargeBinary),
            ProofOfLifeMonth.status,
            _token_sql(Member.id, month, ProofOfLifeMonth.link_generation),
        )
        .join(
            ProofOfLifeMonth,
            (ProofOfLifeMonth.member_id == Member.id) & (ProofOfLifeMonth.month == month),
        )
        .join(_PADS, true())
        .where(*in_range)
        .order_by(Member.id)
    ).all()
    for start in range(0, len(rows), BATCH):
        notices = []
        chunk = rows[start : start + BATCH]
        for member_id, household_id, name, phone, status, member_token in chunk:
            report.members += 1
            if status is not MonthStatus.PENDING:
                report.skipped += 1
                continue
            notices.append(
                Notice(
                    NoticeKind.REMINDER,
                    member_id,
                    household_id,
                    month,
                    cipher.decrypt(name, name_context),
                    None if phone is None else cipher.decrypt(phone, phone_context),
                    member_token,
                    at.closes,
                )
            )
        report.add(tell.tell(notices, now=now))
        db.session.commit()  # as the row path: a crash loses one batch of reminders
        if progress is not None:
            progress(len(chunk))


# --------------------------------------------------------------------------- remind


@commits_per_batch
def remind(month: str, *, now: datetime, progress: Progress | None = None) -> StepReport:
    """Tell the members still pending again (the follow-up). A notifier may leave some
    alone (the SMS adapter: those its reminder could not reach, who have a caseworker
    task instead); they are not counted."""
    at = moments(month)
    _require_window(month, now, at.follow_up, f"the {month} follow-up is due")
    key = links.link_key(current_app.config["SECRET_KEY"])
    tell = notifier()
    report = StepReport()
    pending = (
        select(
            ProofOfLifeMonth.member_id,
            ProofOfLifeMonth.household_id,
            ProofOfLifeMonth.link_generation,
            Member.name,
            Member.phone,
        )
        .join(Member, Member.id == ProofOfLifeMonth.member_id)
        .where(ProofOfLifeMonth.month == month, ProofOfLifeMonth.status == MonthStatus.PENDING)
    )
    with _step(month, "remind", now) as counts:
        for rows in _batches(pending, ProofOfLifeMonth.member_id):
            notices = [
                Notice(
                    NoticeKind.FOLLOW_UP,
                    member_id,
                    household_id,
                    month,
                    name,
                    phone,
                    links.make_token(key, member_id, month, generation),
                    at.closes,
                )
                for member_id, household_id, generation, name, phone in rows
            ]
            told = tell.tell(notices, now=now)
            report.members += len(notices) - told.ignored - told.already
            report.add(told)
            db.session.commit()
            if progress is not None:
                progress(len(rows))
        counts.update(asdict(report))
    return report


# --------------------------------------------------------------------------- close


@commits_per_batch
def close(month: str, *, now: datetime, progress: Progress | None = None) -> payments.CloseReport:
    """End the window: notices not sent dropped, pending -> missed, payments settled."""
    at = moments(month)
    if now < at.closes:
        raise CampaignError(f"the {month} window closes at {at.closes.isoformat()}")
    with _step(month, "close", now) as counts:
        cancelled = notifier().close(month, now=now)
        db.session.commit()
        report = payments.close_month(month, now=now, progress=progress)
        counts.update(
            cancelled=cancelled,
            missed=report.missed,
            payable=report.payable,
            suspended=report.suspended,
            to_review=len(report.to_review),
        )
    return report


# --------------------------------------------------------------------------- status


def grouped(*columns: Any, where: Any) -> dict[str, int]:
    """Counts by the values of ``columns`` (joined with "/"), for people."""
    rows = db.session.execute(select(*columns, func.count()).where(where).group_by(*columns)).all()
    return {"/".join(str(getattr(v, "value", v)) for v in row[:-1]): row[-1] for row in rows}


def status(month: str) -> dict[str, Any]:
    """Counts for people: records by status, the notifier's counts (messages), tasks,
    payments, and each step's runs."""
    steps = {
        step.step: {
            "runs": step.runs,
            "started_at": local_iso(step.started_at),
            "finished_at": local_iso(step.finished_at) if step.finished_at else None,
            "counts": json.loads(step.counts),
        }
        for step in db.session.scalars(select(CampaignStep).where(CampaignStep.month == month))
    }
    at = moments(month)
    return {
        "month": month,
        "opens": local_iso(at.opens),
        "follow_up": local_iso(at.follow_up),
        "closes": local_iso(at.closes),
        "steps": steps,
        "proof_of_life": grouped(ProofOfLifeMonth.status, where=ProofOfLifeMonth.month == month),
        **notifier().status(month),
        "contact_tasks": grouped(ContactTask.reason, where=ContactTask.month == month),
        "payments": grouped(PaymentMonth.status, where=PaymentMonth.month == month),
    }


# --------------------------------------------------------------------------- tick


def _finished(month: str, name: str) -> bool:
    return (
        db.session.scalar(
            select(CampaignStep.id).where(
                CampaignStep.month == month,
                CampaignStep.step == name,
                CampaignStep.finished_at.is_not(None),
            )
        )
        is not None
    )


def tick(*, now: datetime) -> list[str]:
    """Every step that is due and has not finished, for this month and the last one
    (a close that fell while the scheduler was down still happens). Returns what ran,
    as ``"open 2026-11"`` etc. Safe to call as often as you like."""
    current = current_month(now, region().timezone)
    ran = []
    for month in (month_after(current, -1), current):
        at = moments(month)
        if at.opens <= now < at.closes and not _finished(month, "open"):
            open_month(month, now=now)
            ran.append(f"open {month}")
        if at.follow_up <= now < at.closes and not _finished(month, "remind"):
            remind(month, now=now)
            ran.append(f"remind {month}")
        if now >= at.closes and _finished(month, "open") and not _finished(month, "close"):
            close(month, now=now)
            ran.append(f"close {month}")
    return ran


def size(step: str, month: str) -> int:
    """How many items a step goes through (for a progress bar)."""
    if step == "open":
        query = who_must_prove_life(func.count(Member.id))
    elif step == "remind":
        query = select(func.count(ProofOfLifeMonth.id)).where(
            ProofOfLifeMonth.month == month, ProofOfLifeMonth.status == MonthStatus.PENDING
        )
    else:
        query = select(func.count(Household.id)).where(Household.state == IN_CARE)
    return db.session.scalar(query) or 0
