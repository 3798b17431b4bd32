"""SMS messages: one row per member, month and kind (exactly once by a unique
constraint); the phone and the text are encrypted (the text carries the member's link).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from server.clock import utcnow
from server.extensions import Model
from server.types import EncryptedText, UTCDateTime, enum_values


class MessageKind(enum.StrEnum):
    REMINDER = "reminder"  # the 20th: your link, 5 days
    FOLLOW_UP = "follow_up"  # the 23rd, to those still pending
    RESEND = "resend"  # staff re-sent the month's link (a corrected phone): once a month


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"  # stored, not yet handed to the provider
    UNCERTAIN = "uncertain"  # handed over, no answer: look it up before any resend
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"
    FAILED = "failed"  # will not be delivered; error_code says why
    CANCELLED = "cancelled"  # not sent: the member passed, or the window closed first


class SmsMessage(Model):
    __tablename__ = "sms_messages"
    __table_args__ = (
        UniqueConstraint("member_id", "month", "kind", name="uq_sms_messages_member_month_kind"),
        # The sender's claim walks the waiting rows only, not every message ever sent.
        Index(
            "ix_sms_messages_waiting",
            "id",
            postgresql_where=text("status IN ('queued', 'uncertain')"),
            sqlite_where=text("status IN ('queued', 'uncertain')"),
        ),
        # Failed messages: the console's undelivered reminders (Notifier.undelivered).
        Index(
            "ix_sms_messages_failed",
            "month",
            "household_id",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        # Failed messages by member: who among a batch of members had a number refused
        # (sms.campaign._refused_numbers, once per batch of the month's open).
        Index(
            "ix_sms_messages_failed_member",
            "member_id",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        # The progress home's funnel (members sent / delivered a message of a month):
        # read from the index alone.
        Index("ix_sms_messages_month_reach", "month", "status", "member_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # member_id and month: through the composite indexes that lead with them
    # (uq_sms_messages_member_month_kind, ix_sms_messages_month_reach).
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))
    kind: Mapped[MessageKind] = mapped_column(
        Enum(
            MessageKind,
            native_enum=False,
            create_constraint=True,
            length=12,
            values_callable=enum_values,
            name="sms_message_kind",
        )
    )
    status: Mapped[MessageStatus] = mapped_column(
        Enum(
            MessageStatus,
            native_enum=False,
            create_constraint=True,
            length=12,
            values_callable=enum_values,
            name="sms_message_status",
        ),
        default=MessageStatus.QUEUED,
        index=True,
    )
    to_phone: Mapped[str] = mapped_column(EncryptedText("sms_messages.to_phone"))
    body: Mapped[str] = mapped_column(EncryptedText("sms_messages.body"))
    segments: Mapped[int] = mapped_column(Integer, default=1)
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    error_code: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SmsOptOut(Model):
    """A number that sent STOP / 退订 (a keyed hash of it: the list shows no number)."""

    __tablename__ = "sms_opt_outs"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(20))
    opted_out_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
