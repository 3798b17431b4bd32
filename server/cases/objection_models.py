"""Objections (异议) raised by anyone during a case's public notice (docs/public.md,
"Objections during the public notice"; docs/office.md, "Objections").

What may name people is encrypted (the reason, the contact, the reviewer's note). The
objector's receipt code is random and shown once; only its SHA-256 is kept. The
objector's address is never stored: at most a keyed hash of it, for abuse review.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.auth.models import User
from server.cases.models import Household
from server.clock import utcnow
from server.extensions import Model
from server.types import EncryptedText, UTCDateTime, enum_values

MAX_REASON = 2000
MAX_CONTACT = 200


class ObjectionStatus(enum.StrEnum):
    OPEN = "open"
    UNFOUNDED = "unfounded"  # looked into, the case goes on
    RESURVEY = "resurvey"  # the case went back to the survey


class Objection(Model):
    __tablename__ = "objections"
    __table_args__ = (
        # The reviewers' worklist: open objections by deadline.
        Index("ix_objections_status_deadline", "status", "deadline"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(EncryptedText("objections.reason"), deferred=True)
    contact: Mapped[str | None] = mapped_column(EncryptedText("objections.contact"), deferred=True)
    # SHA-256 of the receipt code (a random token the objector keeps).
    receipt_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The signed form's one-time nonce: a solved challenge is good for one objection.
    form_nonce: Mapped[str] = mapped_column(String(32), unique=True)
    # HMAC-SHA-256 of the submitter's address under a key derived from SECRET_KEY:
    # lets an office see that many objections came from one address, never which.
    address_hash: Mapped[str | None] = mapped_column(String(64))
    deadline: Mapped[date] = mapped_column(Date)
    status: Mapped[ObjectionStatus] = mapped_column(
        Enum(
            ObjectionStatus,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=enum_values,
            name="objection_status",
        ),
        default=ObjectionStatus.OPEN,
    )
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(EncryptedText("objections.note"), deferred=True)

    household: Mapped[Household] = relationship()
    decided_by: Mapped[User | None] = relationship()
