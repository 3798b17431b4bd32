from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.areas.models import Area
from server.auth.models import User
from server.clock import utcnow
from server.extensions import Model
from server.types import EncryptedText, Money, UTCDateTime, enum_values


class CaseState(enum.StrEnum):
    APPLIED = "applied"
    ACCEPTED = "accepted"
    SURVEYED = "surveyed"
    TOWNSHIP_REVIEWED = "township_reviewed"
    IN_PUBLIC_NOTICE = "in_public_notice"
    APPROVED = "approved"  # active: the allowance is paid
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    REJECTED = "rejected"

    @property
    def closed(self) -> bool:
        """Terminated or rejected: no allowance is paid and no deadline runs."""
        return self in (CaseState.TERMINATED, CaseState.REJECTED)


class Relation(enum.StrEnum):
    HEAD = "head"
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    GRANDCHILD = "grandchild"
    GRANDPARENT = "grandparent"
    SIBLING = "sibling"
    OTHER = "other"


class HouseholdClass(Model):
    """One row of the region's class table (A/B/C...): its code, names and review
    interval, kept in step with the region file. Its amounts have a history
    (``ClassStandard``): ``monthly_standard`` and ``fixed_monthly`` here hold the region
    file's values as seeded and are read by nothing that computes money; every amount
    goes through ``server.cases.standards.standard_for(class, month)``.
    """

    __tablename__ = "household_classes"
    __table_args__ = (
        CheckConstraint("review_interval_months > 0", name="interval_positive"),
        CheckConstraint("monthly_standard >= 0", name="standard_non_negative"),
        CheckConstraint("fixed_monthly >= 0", name="fixed_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(8), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    review_interval_months: Mapped[int] = mapped_column(Integer)
    monthly_standard: Mapped[Decimal] = mapped_column(Money)
    fixed_monthly: Mapped[Decimal] = mapped_column(Money)

    def __repr__(self) -> str:
        return f"<HouseholdClass {self.code} every {self.review_interval_months} months>"


class ClassStandard(Model):
    """One version of a class's amounts, in effect from ``effective_month`` (the first
    day of a month) until the next version's. Rows are only added, never changed: the
    table is the history (the office's class-table changes, the public disclosure of
    every raise). The region file's table is the first version, written at seeding.
    """

    __tablename__ = "class_standards"
    __table_args__ = (
        UniqueConstraint("class_id", "effective_month", name="uq_class_standards_class_month"),
        CheckConstraint("monthly_standard >= 0", name="standard_non_negative"),
        CheckConstraint("fixed_monthly >= 0", name="fixed_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("household_classes.id"), index=True)
    effective_month: Mapped[date] = mapped_column(Date)
    monthly_standard: Mapped[Decimal] = mapped_column(Money)
    fixed_monthly: Mapped[Decimal] = mapped_column(Money)
    set_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(Text)

    household_class: Mapped[HouseholdClass] = relationship(lazy="joined")
    set_by: Mapped[User | None] = relationship(lazy="joined")

    def __repr__(self) -> str:
        return f"<ClassStandard class={self.class_id} from {self.effective_month}>"


class Household(Model):
    """A case: one household applying for or receiving the allowance."""

    __tablename__ = "households"
    __table_args__ = (
        CheckConstraint("home_lat BETWEEN -90 AND 90", name="home_lat_range"),
        CheckConstraint("home_lon BETWEEN -180 AND 180", name="home_lon_range"),
        CheckConstraint("monthly_allowance >= 0", name="allowance_non_negative"),
        Index("ix_households_state_village", "state", "village_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Public, random, stable; never derived from personal data (see cases.codes).
    case_code: Mapped[str] = mapped_column(String(16), unique=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), index=True)
    home_lat: Mapped[float] = mapped_column(Float)
    home_lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(EncryptedText("households.address"), deferred=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("household_classes.id"), index=True)
    monthly_allowance: Mapped[Decimal | None] = mapped_column(Money)
    conflict_of_interest: Mapped[bool] = mapped_column(Boolean, default=False)
    conflict_note: Mapped[str | None] = mapped_column(Text)
    state: Mapped[CaseState] = mapped_column(
        Enum(
            CaseState,
            native_enum=False,
            create_constraint=True,
            length=20,
            values_callable=enum_values,
        ),
        default=CaseState.APPLIED,
    )
    special_case: Mapped[bool] = mapped_column(Boolean, default=False)
    applied_on: Mapped[date] = mapped_column(Date)
    review_due_on: Mapped[date] = mapped_column(Date)
    notice_ends_on: Mapped[date | None] = mapped_column(Date)
    decision_due_on: Mapped[date | None] = mapped_column(Date)
    approved_on: Mapped[date | None] = mapped_column(Date)
    payment_starts_on: Mapped[date | None] = mapped_column(Date)
    last_reviewed_on: Mapped[date | None] = mapped_column(Date)
    next_review_on: Mapped[date | None] = mapped_column(Date, index=True)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    village: Mapped[Area] = relationship()
    household_class: Mapped[HouseholdClass] = relationship(lazy="joined")
    members: Mapped[list[Member]] = relationship(
        back_populates="household", order_by="Member.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[CaseEvent]] = relationship(
        back_populates="household", order_by="CaseEvent.id"
    )

    @property
    def living_members(self) -> list[Member]:
        return [m for m in self.members if m.alive]

    def __repr__(self) -> str:
        return f"<Household {self.case_code} {self.state.value}>"


class Member(Model):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("monthly_income >= 0", name="income_non_negative"),
        # One head per household.
        Index(
            "uq_members_one_head",
            "household_id",
            unique=True,
            postgresql_where=text("relation = 'head'"),
            sqlite_where=text("relation = 'head'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    name: Mapped[str] = mapped_column(EncryptedText("members.name"))
    id_number: Mapped[str] = mapped_column(EncryptedText("members.id_number"))
    # Keyed hash of the normalized ID number: look-ups and duplicate detection.
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    phone: Mapped[str | None] = mapped_column(EncryptedText("members.phone"))
    birth_date: Mapped[date] = mapped_column(Date)
    relation: Mapped[Relation] = mapped_column(
        Enum(
            Relation,
            native_enum=False,
            create_constraint=True,
            length=12,
            values_callable=enum_values,
        )
    )
    able_to_work: Mapped[bool] = mapped_column(Boolean, default=False)
    monthly_income: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    alive: Mapped[bool] = mapped_column(Boolean, default=True)
    died_on: Mapped[date | None] = mapped_column(Date)
    proof_of_life_required: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    household: Mapped[Household] = relationship(back_populates="members")

    def __repr__(self) -> str:
        # Never the name or ID number: reprs end up in logs.
        return f"<Member {self.id} of household {self.household_id} {self.relation.value}>"


class CaseEvent(Model):
    """One step in a case's history: who moved it, when, from where to where, and why."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)

    household: Mapped[Household] = relationship(back_populates="events")
    actor: Mapped[User | None] = relationship()

    def __repr__(self) -> str:
        return f"<CaseEvent {self.action} {self.from_state}->{self.to_state}>"
