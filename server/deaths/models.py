"""Applied death-register imports, and the overpayments they found."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.clock import utcnow
from server.extensions import Model
from server.storage import blob_columns
from server.types import Money, UTCDateTime, enum_values


class DeathImport(Model):
    """One applied register file: its content hash, its counts (JSON), who and when.
    A dry run writes nothing; an apply that finds nothing to do writes no row."""

    __tablename__ = "death_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    profile: Mapped[str] = mapped_column(String(60))
    rows: Mapped[int] = mapped_column(Integer)
    applied: Mapped[int] = mapped_column(Integer)
    counts: Mapped[str] = mapped_column(Text)  # JSON: rows per class
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<DeathImport {self.id} {self.file_sha256[:12]} applied={self.applied}>"


# The uploaded register is kept in the photo store (the page's check and apply read it
# by its digest): `dibao store gc` and backups must see it.
blob_columns(DeathImport.file_sha256)


class OverpaymentStatus(enum.StrEnum):
    OPEN = "open"
    RECOVERED = "recovered"


class Overpayment(Model):
    """A month paid after a member's death, to recover: the part of the month's payment
    the household would not have had without the deceased."""

    __tablename__ = "overpayments"
    __table_args__ = (
        UniqueConstraint("household_id", "month", name="uq_overpayments_household_month"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))
    amount: Mapped[Decimal] = mapped_column(Money)
    import_id: Mapped[int] = mapped_column(ForeignKey("death_imports.id"), index=True)
    status: Mapped[OverpaymentStatus] = mapped_column(
        Enum(
            OverpaymentStatus,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=enum_values,
            name="overpayment_status",
        ),
        default=OverpaymentStatus.OPEN,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Overpayment household={self.household_id} {self.month} {self.amount}>"
