"""One row per household and month once the month's proof-of-life window has closed:
the amount due, and whether it is paid, suspended (a designated member missed the
month) or restored (the member passed later, within the grace period: back-pay, 补发).
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.clock import utcnow
from server.extensions import Model
from server.types import Money, UTCDateTime, enum_values


class PaymentStatus(enum.StrEnum):
    PAYABLE = "payable"
    SUSPENDED = "suspended"
    RESTORED = "restored"  # suspended, then restored: paid as back-pay in back_pay_month


class PaymentMonth(Model):
    __tablename__ = "payment_months"
    __table_args__ = (
        UniqueConstraint("household_id", "month", name="uq_payment_months_household_month"),
        CheckConstraint("amount >= 0", name="amount_non_negative"),
        # The console's counts of a month by status and household (read from the index).
        Index("ix_payment_months_month_status", "month", "status", "household_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # household_id and month: through the composite indexes that lead with them
    # (uq_payment_months_household_month, ix_payment_months_month_status).
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"))
    month: Mapped[str] = mapped_column(String(7))
    amount: Mapped[Decimal] = mapped_column(Money)
    status: Mapped[PaymentStatus] = mapped_column(
        Enum(
            PaymentStatus,
            native_enum=False,
            create_constraint=True,
            length=10,
            values_callable=enum_values,
            name="payment_status",
        ),
        default=PaymentStatus.PAYABLE,
    )
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The payroll month that carries the back-pay (the first whose cut is after restoring).
    back_pay_month: Mapped[str | None] = mapped_column(String(7), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<PaymentMonth household={self.household_id} {self.month} {self.status}>"
