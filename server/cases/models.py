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
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from server.areas.models import Area
from server.auth.models import User
from server.clock import utcnow
from server.crypto import normalize_id_number, normalize_phone
from server.extensions import Model
from server.types import EncryptedText, Money, UTCDateTime, enum_values, field_cipher

# The look-up hashes of members.id_number and members.phone (registered for key
# rotation in server/keyring/registry.py): stored under the current key, matched under
# every key of the ring (``*_hashes``). Searching compares these, never decrypted values.
ID_NUMBER_CONTEXT = "members.id_number"
PHONE_HASH_CONTEXT = "members.phone"


def id_number_hash(id_number: str) -> str:
    """The keyed look-up hash of an ID number that a member row stores (current key)."""
    return field_cipher().lookup_hash(normalize_id_number(id_number), ID_NUMBER_CONTEXT)


def id_number_hashes(id_number: str) -> list[str]:
    """The ID number's hash under every key of the ring: what a look-up matches."""
    return field_cipher().lookup_hashes(normalize_id_number(id_number), ID_NUMBER_CONTEXT)


def phone_lookup_hash(phone: str | None) -> str | None:
    """The keyed look-up hash of a phone, or None for no phone (nothing but non-digits)."""
    normalized = normalize_phone(phone or "")
    if not normalized:
        return None
    return field_cipher().lookup_hash(normalized, PHONE_HASH_CONTEXT)


def phone_lookup_hashes(phone: str | None) -> list[str]:
    """The phone's hash under every key of the ring (none for no phone)."""
    normalized = normalize_phone(phone or "")
    if not normalized:
        return []
    return field_cipher().lookup_hashes(normalized, PHONE_HASH_CONTEXT)


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
    # The home above is a placeholder (the village's centre: an application taken at
    # the office without a location); the initial survey's GPS fix replaces it.
    home_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
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
        """The members the allowance counts: alive and still in the household (a
        member removed by an approved change keeps their row, with ``left_on``)."""
        return [m for m in self.members if m.current]

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
    # Keyed hash of the normalized phone (phone_lookup_hash): search by phone. Set by
    # the validator below whenever ``phone`` is set, on every path; bulk inserts that
    # bypass the ORM (server/seed.py) set it themselves.
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
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
    # Removed from the household by an approved change (server/cases/changes.py): the
    # row stays (proof-of-life months, messages and visits refer to it), uncounted.
    left_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    household: Mapped[Household] = relationship(back_populates="members")

    @validates("phone")
    def _keep_phone_hash(self, key: str, phone: str | None) -> str | None:
        self.phone_hash = phone_lookup_hash(phone)
        return phone

    @property
    def current(self) -> bool:
        """Alive and still a member of the household."""
        return self.alive and self.left_on is None

    def __repr__(self) -> str:
        # Never the name or ID number: reprs end up in logs.
        return f"<Member {self.id} of household {self.household_id} {self.relation.value}>"


class CaseEvent(Model):
    """One step in a case's history: who moved it, when, from where to where, and why."""

    __tablename__ = "case_events"
    __table_args__ = (
        # The half-yearly figures count approvals, suspensions and terminations in a
        # half year (server/public/figures.py) without reading every event.
        Index("ix_case_events_action_at", "action", "at"),
    )

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


class ChangeKind(enum.StrEnum):
    ADD_MEMBER = "add_member"
    REMOVE_MEMBER = "remove_member"
    CORRECT_PHONE = "correct_phone"
    CHANGE_INCOME = "change_income"


class ChangeStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class CaseChange(Model):
    """A change to a case proposed by one person (the maker) that takes effect only when
    a second one approves it (the checker): server/cases/changes.py."""

    __tablename__ = "case_changes"
    __table_args__ = (
        CheckConstraint("checker_id IS NULL OR checker_id <> maker_id", name="four_eyes"),
        # One pending change of a kind per subject (a member, a new member's ID number,
        # the household's incomes) at a time.
        Index(
            "uq_case_changes_one_pending",
            "household_id",
            "kind",
            "subject",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The checkers' worklist: pending changes, oldest first.
        Index("ix_case_changes_status_made_at", "status", "made_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    kind: Mapped[ChangeKind] = mapped_column(
        Enum(
            ChangeKind,
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=enum_values,
            name="case_change_kind",
        )
    )
    # "member:<id>" (remove, phone), "id:<keyed hash>" (add), "incomes" (income change).
    subject: Mapped[str] = mapped_column(String(80))
    # The proposed values and the values they replace, as JSON, encrypted (names, ID
    # numbers, phones): changes.py reads and writes it.
    payload: Mapped[str] = mapped_column(EncryptedText("case_changes.payload"))
    reason: Mapped[str] = mapped_column(Text)
    maker_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    made_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[ChangeStatus] = mapped_column(
        Enum(
            ChangeStatus,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=enum_values,
            name="case_change_status",
        ),
        default=ChangeStatus.PENDING,
    )
    checker_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checker_note: Mapped[str | None] = mapped_column(Text)
    # The allowance before and after: a preview at the proposal, computed again from the
    # case as it is at the approval (what was applied).
    allowance_before: Mapped[Decimal] = mapped_column(Money)
    allowance_after: Mapped[Decimal] = mapped_column(Money)
    eligible_after: Mapped[bool] = mapped_column(Boolean, default=True)
    # The first payroll month that pays the new allowance (set at the approval).
    effective_month: Mapped[str | None] = mapped_column(String(7))

    household: Mapped[Household] = relationship()
    maker: Mapped[User] = relationship(foreign_keys=[maker_id])
    checker: Mapped[User | None] = relationship(foreign_keys=[checker_id])

    def __repr__(self) -> str:
        return f"<CaseChange {self.id} {self.kind.value} {self.status.value}>"
