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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, select

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
    """Create the month's records and tell the pending members (idempotent, resumable)."""
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
