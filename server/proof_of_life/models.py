"""Proof of life: each designated member's status per month, and every attempt.

A month row (``pol_months``) is the member's record for one monthly window: its status,
the link's generation (bumped to revoke a link) and the hash of the current link token
(for look-up; the token itself is never stored: it is re-derived when needed). An
attempt row (``pol_attempts``) is one session: the challenges asked, its nonce, who
started it (the recipient by link, or a caseworker's tablet), the measured values and
the outcome. Frames are kept in the blob store for a configured number of days
(``pol_frames``), then deleted; attempts and their results stay.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql import Select

from server.cases.models import CaseState, Household, Member
from server.clock import utcnow
from server.extensions import Model
from server.storage import blob_columns
from server.types import EncryptedText, UTCDateTime, enum_values

Blob = bytes  # ProofOfLifeFrame has a column named ``bytes``


class MonthStatus(enum.StrEnum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    REVIEW = "review"
    EXEMPT = "exempt"
    # Still pending when the window closed: the household's payment for the month is
    # suspended; a pass within the grace period restores it (back-pay).
    MISSED = "missed"

    @property
    def blocks_payment(self) -> bool:
        """A member's month in this status keeps the household's payment suspended."""
        return self in PAYMENT_BLOCKING

    @property
    def decisions(self) -> tuple[MonthStatus, ...]:
        """What a reviewer may set a month in this status to (in the form's order)."""
        return tuple(target for target, sources in DECISIONS.items() if self in sources)


# The households whose members prove they are alive each month: those paid the allowance.
IN_CARE = CaseState.APPROVED


def designated(member: Member) -> bool:
    """Whether the member does the monthly proof of life, household aside: living and
    designated (``proof_of_life_required``), still in the household."""
    return member.current and member.proof_of_life_required


def in_care(household: Household) -> bool:
    """Whether the household's designated members prove life each month."""
    return household.state is IN_CARE


def who_must_prove_life(*columns: Any) -> Select[Any]:
    """Who must do the monthly proof of life, as a query for ``columns`` over
    ``Member`` joined to its ``Household``: a living, designated member of a household
    in care (:func:`designated` and :func:`in_care` in SQL). The campaign opens the month
    for exactly these; ``proof_of_life.service.month_record`` refuses anyone else."""
    return (
        select(*columns)
        .select_from(Member)
        .join(Household, Household.id == Member.household_id)
        .where(
            Household.state == IN_CARE,
            Member.alive.is_(True),
            Member.left_on.is_(None),
            Member.proof_of_life_required.is_(True),
        )
    )


# The statuses that keep the household's payment for the month suspended (and that the
# public pages count as missed).
PAYMENT_BLOCKING: tuple[MonthStatus, ...] = (MonthStatus.MISSED, MonthStatus.FAILED)

# A reviewer's decisions: target status <- the statuses it may be set from. Exempt a
# member (in hospital, say), pass or fail a month under review, pass a missed one.
DECISIONS: dict[MonthStatus, tuple[MonthStatus, ...]] = {
    MonthStatus.PASSED: (MonthStatus.REVIEW, MonthStatus.FAILED, MonthStatus.MISSED),
    MonthStatus.FAILED: (MonthStatus.REVIEW,),
    MonthStatus.EXEMPT: (
        MonthStatus.PENDING,
        MonthStatus.REVIEW,
        MonthStatus.FAILED,
        MonthStatus.MISSED,
    ),
}


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    REVIEW = "review"
    # A guided attempt given up before its verdict: a step's time ran out, or the person
    # left the page. Never a failure; the step that stopped them is kept.
    INCOMPLETE = "incomplete"


class StartedBy(enum.StrEnum):
    RECIPIENT = "recipient"
    CASEWORKER = "caseworker"


class ProofOfLifeMonth(Model):
    __tablename__ = "pol_months"
    __table_args__ = (
        UniqueConstraint("member_id", "month", name="uq_pol_months_member_month"),
        # Months under review: the console's exceptions inbox and worklist.
        Index(
            "ix_pol_months_review",
            "household_id",
            postgresql_where=text("status = 'review'"),
            sqlite_where=text("status = 'review'"),
        ),
        # The console's counts of a month by status and household (read from the index).
        Index("ix_pol_months_month_status", "month", "status", "household_id"),
        # The progress home's funnel of one month, from the index alone (PostgreSQL;
        # SQLite has no INCLUDE and keeps a plain index on month).
        Index(
            "ix_pol_months_month_funnel",
            "month",
            postgresql_include=["household_id", "member_id", "status", "window_closes_at", "id"],
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # member_id and month are read through the composite indexes that lead with them
    # (uq_pol_months_member_month, ix_pol_months_month_status/_funnel): a single-column
    # index of either would only cost every insert (a million at each month's open).
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    status: Mapped[MonthStatus] = mapped_column(
        Enum(
            MonthStatus,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=enum_values,
            name="pol_month_status",
        ),
        default=MonthStatus.PENDING,
    )
    window_closes_at: Mapped[datetime] = mapped_column(UTCDateTime)
    link_generation: Mapped[int] = mapped_column(Integer, default=1)
    link_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    passed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # A reviewer's reason (may say "in hospital"): personal, so encrypted.
    decision_reason: Mapped[str | None] = mapped_column(EncryptedText("pol_months.reason"))
    # The recipient asked for a caseworker's help (cannot_move, cannot_see, other).
    assistance_need: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    attempts: Mapped[list[ProofOfLifeAttempt]] = relationship(
        back_populates="month_record", order_by="ProofOfLifeAttempt.id"
    )

    def __repr__(self) -> str:
        return f"<ProofOfLifeMonth member={self.member_id} {self.month} {self.status}>"


class ProofOfLifeAttempt(Model):
    __tablename__ = "pol_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(String(32), unique=True)
    month_id: Mapped[int] = mapped_column(ForeignKey("pol_months.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    nonce: Mapped[str] = mapped_column(String(32))
    challenges: Mapped[str] = mapped_column(String(60))  # comma-separated, in order
    started_by: Mapped[StartedBy] = mapped_column(
        Enum(
            StartedBy,
            native_enum=False,
            create_constraint=True,
            length=12,
            values_callable=enum_values,
            name="pol_started_by",
        )
    )
    assisted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    device_token_id: Mapped[int | None] = mapped_column(ForeignKey("device_tokens.id"))
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    gps_accuracy_m: Mapped[float | None] = mapped_column(Float)
    gps_distance_m: Mapped[float | None] = mapped_column(Float)
    flags: Mapped[str] = mapped_column(String(200), default="")  # comma-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[Outcome | None] = mapped_column(
        Enum(
            Outcome,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=enum_values,
            name="pol_outcome",
        )
    )
    reasons: Mapped[str] = mapped_column(String(300), default="")  # comma-separated codes
    distance: Mapped[float | None] = mapped_column(Float)
    model_name: Mapped[str | None] = mapped_column(String(60))
    model_version: Mapped[str | None] = mapped_column(String(120))
    # Thresholds and measured values as JSON (numbers and codes only, nothing personal).
    measurements: Mapped[str | None] = mapped_column(Text)
    # Perceptual hashes of this attempt's frames (JSON list): later replays are caught.
    frame_hashes: Mapped[str | None] = mapped_column(Text)
    frames_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    counts_against_limits: Mapped[bool] = mapped_column(Boolean, default=True)
    # Guided capture (docs/proof-of-life.md): the steps are "face" then the challenges;
    # ``step`` is the index of the step now expected, ``guide_state`` (JSON, numbers only)
    # what each confirmed step measured.
    guided: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int | None] = mapped_column(Integer)
    guide_state: Mapped[str | None] = mapped_column(Text)
    # What stopped a failed or incomplete attempt: a step name ("face", "turn_left", ...)
    # or "verdict" (judged at the end: the reasons say why); and for an incomplete one why
    # ("timeout", "left_page").
    stopped_step: Mapped[str | None] = mapped_column(String(20))
    stopped_why: Mapped[str | None] = mapped_column(String(20))

    month_record: Mapped[ProofOfLifeMonth] = relationship(back_populates="attempts")
    frames: Mapped[list[ProofOfLifeFrame]] = relationship(
        back_populates="attempt", order_by="ProofOfLifeFrame.position"
    )

    @property
    def challenge_list(self) -> list[str]:
        return [c for c in self.challenges.split(",") if c]

    @property
    def reason_list(self) -> list[str]:
        return [r for r in self.reasons.split(",") if r]

    def __repr__(self) -> str:
        return f"<ProofOfLifeAttempt {self.id} member={self.member_id} {self.outcome}>"


class ProofOfLifeFrame(Model):
    __tablename__ = "pol_frames"
    __table_args__ = (UniqueConstraint("attempt_id", "position", name="uq_pol_frames_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("pol_attempts.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    offset_ms: Mapped[int | None] = mapped_column(Integer)
    # Guided attempts: the step the frame was sent for, how many faces counted in it, and
    # the 68 landmarks of the one face (float32 x, y pairs), so that the verdict at the
    # end judges every frame without detecting again. Deleted with the frame.
    step: Mapped[int | None] = mapped_column(Integer)
    faces: Mapped[int | None] = mapped_column(Integer)
    landmarks: Mapped[Blob | None] = mapped_column(LargeBinary)

    attempt: Mapped[ProofOfLifeAttempt] = relationship(back_populates="frames")


blob_columns(ProofOfLifeFrame.sha256)


class ContactReason(enum.StrEnum):
    NO_PHONE = "no_phone"  # no mobile number on file
    OPTED_OUT = "opted_out"  # the number sent STOP / 退订
    WRONG_NUMBER = "wrong_number"  # the provider said the number cannot get SMS
    NOT_DELIVERED = "not_delivered"  # sent, then reported undeliverable


class ContactTask(Model):
    """A member the campaign could not reach by SMS this month: their caseworker helps
    them in person (the assisted proof of life) or corrects the number."""

    __tablename__ = "pol_contact_tasks"
    __table_args__ = (
        UniqueConstraint("member_id", "month", name="uq_pol_contact_tasks_member_month"),
        # Open tasks: the console's exceptions inbox and worklist.
        Index(
            "ix_pol_contact_tasks_open",
            "month",
            "household_id",
            postgresql_where=text("resolved_at IS NULL"),
            sqlite_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # member_id: through uq_pol_contact_tasks_member_month, which leads with it.
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    month: Mapped[str] = mapped_column(String(7), index=True)
    reason: Mapped[ContactReason] = mapped_column(
        Enum(
            ContactReason,
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=enum_values,
            name="pol_contact_reason",
        )
    )
    error_code: Mapped[int | None] = mapped_column(Integer)  # the provider's, if any
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<ContactTask member={self.member_id} {self.month} {self.reason}>"
