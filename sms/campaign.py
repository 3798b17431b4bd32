"""The monthly campaign: open (the 20th), remind (the 23rd), close (end of the window).

Each step works in batches of members, commits each batch, and only does what is still
missing, so a second run does nothing new and a run after a crash finishes the job:

- ``open``: every designated, living member of an active case gets the month's
  proof-of-life record (pending, with its link) and one queued reminder SMS; a member
  without a phone, whose number opted out, or whose number the provider refused gets a
  caseworker task instead;
- ``remind``: a follow-up SMS to members still pending whose reminder did not fail;
- ``close``: pending -> missed, payments suspended (``server.payments``), unsent
  messages of the month cancelled.

Sending is ``sms/sender.py``'s job: these steps only queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, select, update

from server.audit import service as audit
from server.cases.models import CaseState, Household, Member
from server.extensions import bulk_insert, db, rows_changed
from server.payments import service as payments
from server.payments.models import PaymentMonth
from server.proof_of_life import links
from server.proof_of_life.models import ContactReason, ContactTask, MonthStatus, ProofOfLifeMonth
from server.proof_of_life.rules import current_month, local_moment, month_after, window
from server.proof_of_life.service import designated_conditions, link_url
from server.region import region
from sms import optouts, templates
from sms.gateway import RECIPIENT_CODES
from sms.models import CampaignStep, MessageKind, MessageStatus, SmsMessage

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

    def task(self, reason: ContactReason) -> None:
        self.tasks[reason.value] = self.tasks.get(reason.value, 0) + 1


@dataclass(frozen=True)
class Moments:
    opens: datetime
    follow_up: datetime
    closes: datetime


def moments(month: str) -> Moments:
    rules = region()
    opens, closes = window(month, rules.proof_of_life, rules.timezone)
    follow_up = local_moment(
        month, rules.campaign.follow_up_day, rules.timezone, rules.campaign.send_from_hour
    )
    return Moments(opens, follow_up, closes)


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


def _refused_numbers(phones: dict[int, str]) -> dict[int, int]:
    """Members whose current number the provider refused last time (member -> code)."""
    if not phones:
        return {}
    latest = dict(
        db.session.execute(
            select(SmsMessage.member_id, func.max(SmsMessage.id))
            .where(
                SmsMessage.member_id.in_(list(phones)),
                SmsMessage.status.in_(
                    [MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.FAILED]
                ),
            )
            .group_by(SmsMessage.member_id)
        ).all()
    )
    if not latest:
        return {}
    refused = {}
    for message in db.session.scalars(
        select(SmsMessage).where(
            SmsMessage.id.in_(list(latest.values())),
            SmsMessage.status == MessageStatus.FAILED,
            SmsMessage.error_code.in_(RECIPIENT_CODES),
        )
    ):
        same = optouts.normalize_phone(message.to_phone) == optouts.normalize_phone(
            phones[message.member_id]
        )
        if same and message.error_code is not None:
            refused[message.member_id] = message.error_code
    return refused


def _unreachable(
    phones: dict[int, str | None],
) -> dict[int, tuple[ContactReason, int | None]]:
    """Why each member cannot get an SMS this month (absent: they can)."""
    with_phone = {m: p for m, p in phones.items() if p and optouts.normalize_phone(p)}
    reasons: dict[int, tuple[ContactReason, int | None]] = {
        m: (ContactReason.NO_PHONE, None) for m in phones if m not in with_phone
    }
    for member_id in optouts.opted_out(with_phone):
        reasons[member_id] = (ContactReason.OPTED_OUT, None)
    for member_id, code in _refused_numbers(with_phone).items():
        reasons.setdefault(member_id, (ContactReason.WRONG_NUMBER, code))
    return reasons


def _add_tasks(
    month: str,
    unreachable: dict[int, tuple[ContactReason, int | None]],
    households: dict[int, int],
    now: datetime,
    report: StepReport,
) -> None:
    if not unreachable:
        return
    existing = set(
        db.session.scalars(
            select(ContactTask.member_id).where(
                ContactTask.month == month, ContactTask.member_id.in_(list(unreachable))
            )
        )
    )
    rows = []
    for member_id, (reason, code) in unreachable.items():
        if member_id in existing:
            continue
        rows.append(
            {
                "member_id": member_id,
                "household_id": households[member_id],
                "month": month,
                "reason": reason,
                "error_code": code,
                "created_at": now,
            }
        )
        report.task(reason)
    if rows:
        bulk_insert(ContactTask, rows)
        audit.record(
            "pol.contact_tasks",
            actor=None,
            object_type="member",
            object_id=None,
            month=month,
            members=[row["member_id"] for row in rows],
        )


def _text(kind: MessageKind, *, name: str, token: str, closes: datetime) -> str:
    rules = region()
    last_day = (closes - timedelta(seconds=1)).astimezone(ZoneInfo(rules.timezone)).date()
    make = templates.reminder if kind is MessageKind.REMINDER else templates.follow_up
    return make(signature=rules.sms.signature, name=name, last_day=last_day, url=link_url(token))


def _queue(rows: list[dict[str, Any]]) -> None:
    bulk_insert(SmsMessage, rows)


def _message_row(
    kind: MessageKind,
    member_id: int,
    household_id: int,
    month: str,
    phone: str,
    body: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "household_id": household_id,
        "month": month,
        "kind": kind,
        "status": MessageStatus.QUEUED,
        "to_phone": phone,
        "body": body,
        "segments": templates.segments(body),
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def _require_window(month: str, now: datetime, not_before: datetime, what: str) -> None:
    """A step that runs from ``not_before`` until the window closes."""
    closes = moments(month).closes
    if now < not_before:
        raise CampaignError(f"{what} at {not_before.isoformat()}")
    if now >= closes:
        raise CampaignError(f"the {month} window closed at {closes.isoformat()}")


# --------------------------------------------------------------------------- open


def open_month(month: str, *, now: datetime, progress: Progress | None = None) -> StepReport:
    """Create the month's records and reminders (idempotent, resumable)."""
    at = moments(month)
    _require_window(month, now, at.opens, f"the {month} window opens")
    key = links.link_key(current_app.config["SECRET_KEY"])
    report = StepReport()
    designated = (
        select(Member.id, Member.household_id, Member.name, Member.phone)
        .join(Household, Household.id == Member.household_id)
        .where(*designated_conditions())
    )
    with _step(month, "open", now) as counts:
        for rows in _batches(designated, Member.id):
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
            queued = set(
                db.session.scalars(
                    select(SmsMessage.member_id).where(
                        SmsMessage.month == month,
                        SmsMessage.kind == MessageKind.REMINDER,
                        SmsMessage.member_id.between(ids[0], ids[-1]),
                    )
                )
            )
            new_records, messages = [], []
            households = {r[0]: r[1] for r in rows}
            candidates = {
                r[0]: r[3]
                for r in rows
                if r[0] not in queued
                and records.get(r[0], (1, MonthStatus.PENDING))[1] is MonthStatus.PENDING
            }
            unreachable = _unreachable(candidates)
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
                if member_id in queued or status is not MonthStatus.PENDING:
                    report.skipped += 1
                    continue
                if member_id in unreachable:
                    continue
                body = _text(MessageKind.REMINDER, name=name, token=token, closes=at.closes)
                messages.append(
                    _message_row(
                        MessageKind.REMINDER, member_id, household_id, month, phone, body, now
                    )
                )
            if new_records:
                bulk_insert(ProofOfLifeMonth, new_records)
            _queue(messages)
            report.queued += len(messages)
            _add_tasks(month, unreachable, households, now, report)
            db.session.commit()
            if progress is not None:
                progress(len(rows))
        counts.update(asdict(report))
    return report


# --------------------------------------------------------------------------- remind


def remind(month: str, *, now: datetime, progress: Progress | None = None) -> StepReport:
    """Queue the follow-up for members still pending whose reminder did not fail."""
    at = moments(month)
    _require_window(month, now, at.follow_up, f"the {month} follow-up is due")
    key = links.link_key(current_app.config["SECRET_KEY"])
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
        .join(
            SmsMessage,
            (SmsMessage.member_id == ProofOfLifeMonth.member_id)
            & (SmsMessage.month == month)
            & (SmsMessage.kind == MessageKind.REMINDER),
        )
        .where(
            ProofOfLifeMonth.month == month,
            ProofOfLifeMonth.status == MonthStatus.PENDING,
            SmsMessage.status.in_(
                [
                    MessageStatus.SENT,
                    MessageStatus.DELIVERED,
                    MessageStatus.UNCERTAIN,
                    MessageStatus.QUEUED,
                ]
            ),
        )
    )
    with _step(month, "remind", now) as counts:
        for rows in _batches(pending, ProofOfLifeMonth.member_id):
            ids = [r[0] for r in rows]
            done = set(
                db.session.scalars(
                    select(SmsMessage.member_id).where(
                        SmsMessage.month == month,
                        SmsMessage.kind == MessageKind.FOLLOW_UP,
                        SmsMessage.member_id.in_(ids),
                    )
                )
            )
            todo = [r for r in rows if r[0] not in done]
            report.skipped += len(rows) - len(todo)
            unreachable = _unreachable({r[0]: r[4] for r in todo})
            messages = []
            for member_id, household_id, generation, name, phone in todo:
                report.members += 1
                if member_id in unreachable:
                    continue
                token = links.make_token(key, member_id, month, generation)
                body = _text(MessageKind.FOLLOW_UP, name=name, token=token, closes=at.closes)
                messages.append(
                    _message_row(
                        MessageKind.FOLLOW_UP, member_id, household_id, month, phone, body, now
                    )
                )
            _queue(messages)
            report.queued += len(messages)
            _add_tasks(month, unreachable, {r[0]: r[1] for r in todo}, now, report)
            db.session.commit()
            if progress is not None:
                progress(len(rows))
        counts.update(asdict(report))
    return report


# --------------------------------------------------------------------------- close


def close(month: str, *, now: datetime, progress: Progress | None = None) -> payments.CloseReport:
    """End the window: unsent messages cancelled, pending -> missed, payments settled."""
    at = moments(month)
    if now < at.closes:
        raise CampaignError(f"the {month} window closes at {at.closes.isoformat()}")
    with _step(month, "close", now) as counts:
        cancelled = rows_changed(
            update(SmsMessage)
            .where(SmsMessage.month == month, SmsMessage.status == MessageStatus.QUEUED)
            .values(status=MessageStatus.CANCELLED, next_attempt_at=None, updated_at=now)
        )
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


def status(month: str) -> dict[str, Any]:
    """Counts for people: records by status, messages by kind and status, tasks,
    payments, and each step's runs."""

    def grouped(*columns: Any, where: Any) -> dict[str, int]:
        rows = db.session.execute(
            select(*columns, func.count()).where(where).group_by(*columns)
        ).all()
        return {"/".join(str(getattr(v, "value", v)) for v in row[:-1]): row[-1] for row in rows}

    steps = {
        step.step: {
            "runs": step.runs,
            "started_at": step.started_at.isoformat(timespec="seconds"),
            "finished_at": step.finished_at.isoformat(timespec="seconds")
            if step.finished_at
            else None,
            "counts": json.loads(step.counts),
        }
        for step in db.session.scalars(select(CampaignStep).where(CampaignStep.month == month))
    }
    at = moments(month)
    return {
        "month": month,
        "opens": at.opens.isoformat(),
        "follow_up": at.follow_up.isoformat(),
        "closes": at.closes.isoformat(),
        "steps": steps,
        "proof_of_life": grouped(ProofOfLifeMonth.status, where=ProofOfLifeMonth.month == month),
        "messages": grouped(SmsMessage.kind, SmsMessage.status, where=SmsMessage.month == month),
        # What the provider bills: segments of the messages handed over.
        "segments_sent": db.session.scalar(
            select(func.coalesce(func.sum(SmsMessage.segments), 0)).where(
                SmsMessage.month == month,
                SmsMessage.status.in_([MessageStatus.SENT, MessageStatus.DELIVERED]),
            )
        ),
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
        query = (
            select(func.count(Member.id))
            .join(Household, Household.id == Member.household_id)
            .where(*designated_conditions())
        )
    elif step == "remind":
        query = select(func.count(ProofOfLifeMonth.id)).where(
            ProofOfLifeMonth.month == month, ProofOfLifeMonth.status == MonthStatus.PENDING
        )
    else:
        query = select(func.count(Household.id)).where(Household.state == CaseState.APPROVED)
    return db.session.scalar(query) or 0
