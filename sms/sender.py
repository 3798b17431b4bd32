"""The sender: hands due messages to the provider, throttled, each exactly once.

A worker claims a small batch of due rows (``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL, then a compare-and-set update that works on any database), marking them
``uncertain`` with a lease, and commits that claim *before* any request goes out. If the
worker dies mid-request, the row is still ``uncertain`` when its lease runs out, and the
next sender asks the provider whether the message exists before sending it again
(``sms.service.send_message``): a reminder is never sent twice, and never lost.

Before sending, a message that is no longer wanted is cancelled: the member passed (or
was exempted, or the window closed), or their number opted out since it was queued.
Messages go out only between the region's sending hours (local time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, update

from server.extensions import db, rows_changed
from server.proof_of_life.models import ContactReason, MonthStatus, ProofOfLifeMonth
from server.proof_of_life.service import contact_task
from server.region import region
from server.transactions import commits_per_batch
from sms import optouts
from sms.gateway import RECIPIENT_CODES, SmsGateway
from sms.models import MessageStatus, SmsMessage
from sms.service import look_up, send_message

if TYPE_CHECKING:
    from sms.shared_rate import SharedThrottle

logger = logging.getLogger(__name__)

CLAIM_BATCH = 20
# Results are committed at least this often (web requests wait for SQLite's lock, and
# for the rows' locks on PostgreSQL, while a sender holds them).
COMMIT_EVERY_S = 0.5
_WAITING = (MessageStatus.QUEUED, MessageStatus.UNCERTAIN)


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    cancelled: int = 0
    outside_hours: bool = False

    @property
    def handled(self) -> int:
        return self.sent + self.failed + self.retrying + self.cancelled


class Throttle:
    """At most ``rate`` calls per second, evenly spaced (0: no limit)."""

    def __init__(
        self,
        rate: float,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.sleep = sleep
        self.monotonic = monotonic
        self.next_at = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.monotonic()
        if self.next_at > now:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = max(self.next_at, now) + self.interval


def sending_hours(now: datetime) -> bool:
    rules = region()
    hour = now.astimezone(ZoneInfo(rules.timezone)).hour
    return rules.campaign.send_from_hour <= hour < rules.campaign.send_until_hour


def due(now: datetime) -> int:
    """How many messages are waiting to be sent now."""
    return (
        db.session.scalar(
            select(func.count(SmsMessage.id)).where(
                SmsMessage.status.in_(_WAITING),
                or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now),
            )
        )
        or 0
    )


@commits_per_batch
def _claim(now: datetime, lease: timedelta) -> list[tuple[int, bool]]:
    """Claim up to CLAIM_BATCH due messages; returns (id, fresh) and commits."""
    candidates = db.session.execute(
        select(SmsMessage.id, SmsMessage.status)
        .where(
            SmsMessage.status.in_(_WAITING),
            or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now),
        )
        .order_by(SmsMessage.id)
        .limit(CLAIM_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for message_id, status in candidates:
        won = rows_changed(
            update(SmsMessage)
            .where(
                SmsMessage.id == message_id,
                SmsMessage.status == status,
                or_(SmsMessage.next_attempt_at.is_(None), SmsMessage.next_attempt_at <= now),
            )
            .values(status=MessageStatus.UNCERTAIN, next_attempt_at=now + lease)
            .execution_options(synchronize_session=False)
        )
        if won:
            claimed.append((message_id, status is MessageStatus.QUEUED))
    db.session.commit()
    return claimed


def _unwanted(messages: list[SmsMessage], now: datetime) -> set[int]:
    """Claimed messages that must not go out: the month is settled or closed, or the
    number opted out."""
    candidates = messages
    if not candidates:
        return set()
    months = {
        (member_id, month): (status, closes)
        for member_id, month, status, closes in db.session.execute(
            select(
                ProofOfLifeMonth.member_id,
                ProofOfLifeMonth.month,
                ProofOfLifeMonth.status,
                ProofOfLifeMonth.window_closes_at,
            ).where(
                ProofOfLifeMonth.member_id.in_({m.member_id for m in candidates}),
                ProofOfLifeMonth.month.in_({m.month for m in candidates}),
            )
        )
    }
    out = set()
    stopped = optouts.opted_out({m.id: m.to_phone for m in candidates})  # one query
    for message in candidates:
        status, closes = months.get((message.member_id, message.month), (MonthStatus.PENDING, None))
        if status is not MonthStatus.PENDING or (closes is not None and now >= closes):
            out.add(message.id)
        elif message.id in stopped:
            out.add(message.id)
            contact_task(
                member_id=message.member_id,
                household_id=message.household_id,
                month=message.month,
                reason=ContactReason.OPTED_OUT,
                now=now,
            )
    return out


def _send_one(
    message: SmsMessage,
    sender: SmsGateway,
    clock: Callable[[], datetime],
    fresh: bool,
    report: SendReport,
) -> None:
    send_message(message, sender, now=clock(), fresh=fresh)
    if message.status is MessageStatus.FAILED:
        report.failed += 1
        if message.error_code in RECIPIENT_CODES:
            contact_task(
                member_id=message.member_id,
                household_id=message.household_id,
                month=message.month,
                reason=ContactReason.WRONG_NUMBER
                if message.error_code != 21610
                else ContactReason.OPTED_OUT,
                now=clock(),
                error_code=message.error_code,
            )
    elif message.status in (MessageStatus.SENT, MessageStatus.DELIVERED):
        report.sent += 1
    else:
        report.retrying += 1


@commits_per_batch
def send_due(
    sender: SmsGateway,
    *,
    clock: Callable[[], datetime],
    rate_per_s: float,
    budget_s: float | None = None,
    limit: int | None = None,
    lease: timedelta = timedelta(minutes=5),
    throttle: Throttle | SharedThrottle | None = None,
) -> SendReport:
    """Send what is due until nothing is, ``budget_s`` seconds pass or ``limit``
    messages are handled. Commits after each message. ``throttle``: this worker's own
    at ``rate_per_s`` by default, or one shared by every worker (``sms.shared_rate``)."""
    report = SendReport()
    throttle = throttle or Throttle(rate_per_s)
    started = time.monotonic()
    while True:
        if budget_s is not None and time.monotonic() - started >= budget_s:
            break
        if limit is not None and report.handled >= limit:
            break
        now = clock()
        if not sending_hours(now):
            report.outside_hours = True
            break
        claimed = _claim(now, lease)
        if not claimed:
            break
        fresh = dict(claimed)
        messages = list(
            db.session.scalars(
                select(SmsMessage).where(SmsMessage.id.in_(list(fresh))).order_by(SmsMessage.id)
            )
        )
        unwanted = _unwanted(messages, now)
        # Results are committed at most COMMIT_EVERY_S apart and at the end of the
        # claim: the claim itself is already committed, so a sender dying before a
        # result is committed leaves the row uncertain, looked up before any resend.
        committed_at = time.monotonic()
        for message in messages:
            # An unwanted message that may have gone out before a sender died: ask the
            # provider before cancelling it.
            maybe_out = message.id in unwanted and not fresh[message.id]
            if maybe_out and look_up(message, sender, now=now) is not False:
                report.sent += message.status is MessageStatus.SENT
            elif message.id in unwanted:
                message.status = MessageStatus.CANCELLED
                message.next_attempt_at = None
                report.cancelled += 1
            else:
                throttle.wait()
                _send_one(message, sender, clock, fresh[message.id], report)
            if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                db.session.commit()
                committed_at = time.monotonic()
        db.session.commit()
    return report
