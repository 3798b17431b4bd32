"""The SMS side of the monthly cycle (``server.monthly``): the notifier that turns
"this member must be told X" into queued messages.

- a reminder (the window opened) or a follow-up (still pending) is queued once per
  member, month and kind; a member without a phone, whose number opted out, or whose
  number the provider refused gets a caseworker task instead;
- the follow-up goes only to members whose reminder did not fail (the others have
  their caseworker task);
- when the window closes, unsent messages of the month are cancelled.

Sending is ``sms/sender.py``'s job: this only queues.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update

from server.areas.models import Area
from server.audit import service as audit
from server.cases.events import PhoneCorrected, phone_corrected
from server.cases.models import Household, Member
from server.crypto import normalize_phone
from server.extensions import bulk_insert, db, rows_changed
from server.monthly.cycle import grouped
from server.monthly.notices import Notice, NoticeKind, PastMessage, Reach, Told, Undelivered
from server.months import last_local_day
from server.proof_of_life.models import ContactReason, ContactTask
from server.proof_of_life.service import link_url
from server.region import region
from server.types import field_cipher
from sms import optouts, templates
from sms.gateway import RECIPIENT_CODES
from sms.models import MessageKind, MessageStatus, SmsMessage

PHONE_CONTEXT = "sms_messages.to_phone"  # the columns' encryption contexts (sms.models)
BODY_CONTEXT = "sms_messages.body"
KINDS = {
    NoticeKind.REMINDER: MessageKind.REMINDER,
    NoticeKind.FOLLOW_UP: MessageKind.FOLLOW_UP,
    NoticeKind.RESEND: MessageKind.RESEND,
}
# A follow-up goes to members whose reminder is in one of these (it did not fail).
REMINDER_REACHED = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNCERTAIN,
    MessageStatus.QUEUED,
)


def _refused_numbers(phones: dict[int, str]) -> dict[int, int]:
    """Members whose current number the provider refused last time (member -> code)."""
    if not phones:
        return {}
    # Only a member with a refused message can have a refused number: those first, from
    # the small partial index of failed messages (a range, not an IN list: see
    # _members_told), then their latest message only.
    candidates = {
        member_id
        for member_id in db.session.scalars(
            select(SmsMessage.member_id).where(
                SmsMessage.status == MessageStatus.FAILED,
                SmsMessage.member_id.between(min(phones), max(phones)),
                SmsMessage.error_code.in_(RECIPIENT_CODES),
            )
        )
        if member_id in phones
    }
    if not candidates:
        return {}
    latest = dict(
        db.session.execute(
            select(SmsMessage.member_id, func.max(SmsMessage.id))
            .where(
                SmsMessage.member_id.in_(sorted(candidates)),
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
        same = normalize_phone(message.to_phone) == normalize_phone(phones[message.member_id])
        if same and message.error_code is not None:
            refused[message.member_id] = message.error_code
    return refused


def _unreachable(
    phones: dict[int, str | None],
) -> dict[int, tuple[ContactReason, int | None]]:
    """Why each member cannot get an SMS this month (absent: they can)."""
    with_phone = {m: p for m, p in phones.items() if p and normalize_phone(p)}
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
    told: Told,
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
        told.tasks[reason.value] = told.tasks.get(reason.value, 0) + 1
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


def _renderer(kind: MessageKind, closes: datetime) -> Callable[[str, str], str]:
    """The text of ``kind`` for a window closing at ``closes``, as a function of the
    member's name and token: what does not change from member to member (the region's
    signature, the last day, the public address) is looked up once."""
    rules = region()
    last_day = last_local_day(closes, rules.timezone)
    signature = rules.sms.signature
    base = link_url("")
    make = templates.follow_up if kind is MessageKind.FOLLOW_UP else templates.reminder

    def render(name: str, token: str) -> str:
        return make(signature=signature, name=name, last_day=last_day, url=base + token)

    return render


def _text(kind: MessageKind, *, name: str, token: str, closes: datetime) -> str:
    return _renderer(kind, closes)(name, token)


def _queue(rows: list[dict[str, Any]]) -> None:
    """Insert the messages; the phone and the text are encrypted here with the cipher
    looked up once (not once per value by the column type)."""
    if not rows:
        return
    cipher = field_cipher()
    for row in rows:
        row["to_phone"] = cipher.encrypt(row["to_phone"], PHONE_CONTEXT)
        row["body"] = cipher.encrypt(row["body"], BODY_CONTEXT)
    bulk_insert(SmsMessage, rows, stored=("to_phone", "body"))


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


def _members_told(
    month: str,
    kind: MessageKind,
    member_ids: list[int],
    statuses: Sequence[MessageStatus] | None = None,
) -> set[int]:
    """Those of ``member_ids`` with a message of ``kind`` for ``month`` (in one of
    ``statuses``, when given)."""
    if not member_ids:
        return set()
    query = select(SmsMessage.member_id).where(
        SmsMessage.month == month,
        SmsMessage.kind == kind,
        # A range, not IN (1,000 ids): PostgreSQL's generic plan for a prepared IN
        # list scanned the whole month (benchmarks/README.md).
        SmsMessage.member_id.between(min(member_ids), max(member_ids)),
    )
    if statuses is not None:
        query = query.where(SmsMessage.status.in_(statuses))
    return set(db.session.scalars(query))


@phone_corrected.connect
def _readdress_queued(event: PhoneCorrected) -> None:
    """A corrected phone: the member's messages not handed to the provider yet go to the
    new number (a message already handed over, or in flight, is left as it is)."""
    member = db.session.get(Member, event.member_id)
    if member is None or not member.phone:  # pragma: no cover - a correction sets one
        return
    waiting = list(
        db.session.scalars(
            select(SmsMessage).where(
                SmsMessage.member_id == event.member_id,
                SmsMessage.status == MessageStatus.QUEUED,
            )
        )
    )
    for message in waiting:
        message.to_phone = member.phone
        message.updated_at = event.now
    if waiting:
        audit.record(
            "sms.readdressed",
            actor=None,
            object_type="member",
            object_id=event.member_id,
            household_id=event.household_id,
            messages=[m.id for m in waiting],
        )


class SmsNotifier:
    """``server.monthly.notices.Notifier`` by SMS (registered by ``sms.init_app``)."""

    def tell(self, notices: Sequence[Notice], *, now: datetime) -> Told:
        told = Told()
        by_month: dict[tuple[str, NoticeKind], list[Notice]] = {}
        for notice in notices:
            by_month.setdefault((notice.month, notice.kind), []).append(notice)
        for (month, kind), batch in by_month.items():
            self._tell(month, KINDS[kind], batch, now, told)
        return told

    def _tell(
        self, month: str, kind: MessageKind, notices: list[Notice], now: datetime, told: Told
    ) -> None:
        ids = [n.member_id for n in notices]
        if kind is MessageKind.FOLLOW_UP:
            reached = _members_told(month, MessageKind.REMINDER, ids, REMINDER_REACHED)
            told.ignored += sum(1 for n in notices if n.member_id not in reached)
            notices = [n for n in notices if n.member_id in reached]
            ids = [n.member_id for n in notices]
        done = _members_told(month, kind, ids)
        told.already += sum(1 for n in notices if n.member_id in done)
        todo = [n for n in notices if n.member_id not in done]
        unreachable = _unreachable({n.member_id: n.phone for n in todo})
        messages = []
        renderers: dict[datetime, Callable[[str, str], str]] = {}
        for notice in todo:
            if notice.member_id in unreachable or notice.phone is None:
                continue
            render = renderers.get(notice.closes)
            if render is None:
                render = renderers[notice.closes] = _renderer(kind, notice.closes)
            body = render(notice.name, notice.token)
            messages.append(
                _message_row(
                    kind,
                    notice.member_id,
                    notice.household_id,
                    month,
                    notice.phone,
                    body,
                    now,
                )
            )
        _queue(messages)
        told.queued += len(messages)
        _add_tasks(month, unreachable, {n.member_id: n.household_id for n in todo}, now, told)

    def close(self, month: str, *, now: datetime) -> int:
        """Cancel the month's messages not sent yet."""
        return rows_changed(
            update(SmsMessage)
            .where(SmsMessage.month == month, SmsMessage.status == MessageStatus.QUEUED)
            .values(status=MessageStatus.CANCELLED, next_attempt_at=None, updated_at=now)
        )

    def status(self, month: str) -> dict[str, Any]:
        return {
            "messages": grouped(
                SmsMessage.kind, SmsMessage.status, where=SmsMessage.month == month
            ),
            # What the provider bills: segments of the messages handed over.
            "segments_sent": db.session.scalar(
                select(func.coalesce(func.sum(SmsMessage.segments), 0)).where(
                    SmsMessage.month == month,
                    SmsMessage.status.in_([MessageStatus.SENT, MessageStatus.DELIVERED]),
                )
            ),
        }

    def undelivered(self, area_path: str, months: Sequence[str]) -> list[Undelivered]:
        """Failed messages (refused or reported undelivered) of ``months`` in the area."""
        if not months:
            return []
        query = (
            select(
                SmsMessage.household_id,
                SmsMessage.member_id,
                SmsMessage.month,
                SmsMessage.status,
                SmsMessage.updated_at,
            )
            .join(Household, Household.id == SmsMessage.household_id)
            .join(Area, Area.id == Household.village_id)
            .where(
                SmsMessage.month.in_(list(months)),
                SmsMessage.status == MessageStatus.FAILED,
                Area.path.startswith(area_path, autoescape=True),
            )
        )
        return [
            Undelivered(household_id, member_id, month, status.value, at)
            for household_id, member_id, month, status, at in db.session.execute(query)
        ]

    def reached(self, month: str, stage: Reach) -> Select[int]:
        """Members with a message of ``month`` the provider accepted (``sent_at`` set,
        whatever happened after), or one it reported delivered."""
        condition = (
            SmsMessage.sent_at.is_not(None)
            if stage is Reach.SENT
            else SmsMessage.status == MessageStatus.DELIVERED
        )
        return select(SmsMessage.member_id).where(SmsMessage.month == month, condition)


class SmsHistory:
    """Past messages as rows of ``sms_messages`` (``server.monthly.notices.MessageHistory``):
    what the demo seeder writes for the months it invents, as the sender and the
    delivery webhooks would have left them (provider "outbox", a made-up sid)."""

    @property
    def table(self) -> Any:
        return SmsMessage.__table__

    def rows(self, messages: Sequence[PastMessage]) -> list[dict[str, Any]]:
        rows = []
        for past in messages:
            notice = past.notice
            if notice.phone is None:
                raise ValueError("a past message needs a phone")
            kind = KINDS[notice.kind]
            body = _text(kind, name=notice.name, token=notice.token, closes=notice.closes)
            row = _message_row(
                kind,
                notice.member_id,
                notice.household_id,
                notice.month,
                notice.phone,
                body,
                past.sent_at,
            )
            sid = hashlib.sha256(
                f"{notice.member_id}/{notice.month}/{kind.value}".encode()
            ).hexdigest()[:34]
            row.update(
                status=MessageStatus(past.status),
                provider="outbox",
                provider_sid="SM" + sid,
                error_code=past.error_code,
                attempts=1,
                next_attempt_at=None,
                sent_at=past.sent_at,
                delivered_at=past.delivered_at,
                updated_at=past.delivered_at or past.sent_at,
            )
            rows.append(row)
        return rows
